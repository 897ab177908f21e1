//! `timestamp_convert`: rewrites a timestamp from one representation to another.
//!
//! Params: `field` (any path), `from` and `to` (`rfc3339`, `epoch_s`, `epoch_ms` or `pattern`),
//! `from_pattern` / `to_pattern` (strftime patterns, required with `pattern` and refused
//! otherwise), `timezone` (an IANA name, default `UTC`), `target` (where to write, default
//! `field`; needed when `field` is read-only, e.g. `received_at`).
//!
//! Reading: `rfc3339` takes a string with an offset; `epoch_s`/`epoch_ms` take a number or a
//! decimal string (fractions kept to the microsecond); `pattern` takes a string, and when the
//! pattern holds no offset the time is local to `timezone` (the earlier one when a clock change
//! makes it ambiguous; an error when it falls in a gap); a pattern without a time of day means
//! midnight. Writing: `rfc3339` in `timezone` with as many fraction digits as needed (0, 3, 6 or
//! 9; `Z` for UTC); `epoch_s`/`epoch_ms` as integers (truncated toward the past); `pattern` in
//! `timezone`. A missing field or a `null` is left alone; a value that does not parse fails.

use std::fmt::Write as _;

use chrono::format::{Fixed, Item, Numeric, Parsed, StrftimeItems};
use chrono::{DateTime, LocalResult, SecondsFormat, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Deserialize;
use serde_json::Value;

use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::{kind, FieldPath, ValueRef};
use crate::pipeline::Context;

operation!(
    "timestamp_convert",
    "Convert a timestamp between rfc3339, epoch seconds/milliseconds and strftime patterns, with time zones.",
    r#"{"op": "timestamp_convert", "params": {"field": "payload.created", "from": "pattern", "from_pattern": "%d/%m/%Y %H:%M", "to": "rfc3339", "timezone": "Europe/Paris"}}"#,
    struct Params {
    field: String => ["path", required, "The timestamp to read; any path."],
    from: Kind => ["enum: rfc3339|epoch_s|epoch_ms|pattern", required, "How the timestamp is written now."],
    #[serde(default)]
    from_pattern: Option<String> => ["string", optional, "strftime pattern to parse, with from = pattern (e.g. `%d/%m/%Y %H:%M`)."],
    to: Kind => ["enum: rfc3339|epoch_s|epoch_ms|pattern", required, "How to write it."],
    #[serde(default)]
    to_pattern: Option<String> => ["string", optional, "strftime pattern to write, with to = pattern."],
    #[serde(default)]
    timezone: Option<String> => ["string", optional("\"UTC\""), "IANA zone (e.g. `Europe/Paris`) for parsing patterns without an offset and for writing rfc3339 and patterns."],
    #[serde(default)]
    target: Option<String> => ["path", optional, "Where to write the result; `field` when absent."],
    }
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Rfc3339,
    EpochS,
    EpochMs,
    Pattern,
}

#[derive(Debug)]
enum Format {
    Rfc3339,
    EpochS,
    EpochMs,
    Pattern { text: String, items: Vec<Item<'static>>, has_time: bool },
}

#[derive(Debug)]
struct TimestampConvert {
    field: FieldPath,
    target: Option<FieldPath>,
    from: Format,
    to: Format,
    tz: Tz,
}

fn build(p: Params, problems: &mut Problems) -> Option<TimestampConvert> {
    let field = problems.path(&p.field, "field", Access::Read);
    let target = p.target.as_deref().and_then(|t| problems.path(t, "target", Access::Field));
    if p.target.is_none() {
        if let Some(f) = &field {
            if f.is_read_only() || f.is_root() {
                problems.push("field", format!("`{f}` cannot be rewritten in place; set `target`"));
            }
        }
    }
    let tz = match p.timezone.as_deref() {
        None => Some(Tz::UTC),
        Some(name) => name.parse::<Tz>().map_err(|_| problems.push("timezone", format!("unknown time zone `{name}`; use an IANA name such as `Europe/Paris`"))).ok(),
    };
    let from = format(p.from, p.from_pattern, "from", true, problems);
    let to = format(p.to, p.to_pattern, "to", false, problems);
    Some(TimestampConvert {
        field: field?,
        target,
        from: from?,
        to: to?,
        tz: tz?,
    })
}

fn format(kind: Kind, pattern: Option<String>, name: &str, parsing: bool, problems: &mut Problems) -> Option<Format> {
    let pattern_at = format!("{name}_pattern");
    match (kind, pattern) {
        (Kind::Pattern, None) => {
            problems.push(&pattern_at, format!("is required when `{name}` is `pattern`"));
            None
        }
        (Kind::Pattern, Some(text)) => {
            let Ok(items) = StrftimeItems::new(&text).parse_to_owned() else {
                problems.push(&pattern_at, format!("`{text}` is not a valid strftime pattern"));
                return None;
            };
            if items.is_empty() {
                problems.push(&pattern_at, "must not be empty");
                return None;
            }
            let has_time = items.iter().any(|i| {
                matches!(
                    i,
                    Item::Numeric(Numeric::Hour | Numeric::Hour12 | Numeric::Timestamp, _)
                        | Item::Fixed(Fixed::RFC3339 | Fixed::RFC2822)
                )
            });
            let format = Format::Pattern { text, items, has_time };
            if parsing {
                // A pattern must read back what it writes, or it cannot hold a full date.
                let sample = Utc.with_ymd_and_hms(2001, 2, 3, 4, 5, 6).unwrap().with_timezone(&Tz::UTC);
                let written = render(&format, sample, Tz::UTC).ok();
                if written.and_then(|w| read(&format, &Value::String(w), Tz::UTC).ok()).is_none() {
                    problems.push(&pattern_at, "cannot be parsed back into a date; it needs at least a year, month and day");
                    return None;
                }
            }
            Some(format)
        }
        (_, Some(_)) => {
            problems.push(&pattern_at, format!("applies only when `{name}` is `pattern`"));
            None
        }
        (Kind::Rfc3339, None) => Some(Format::Rfc3339),
        (Kind::EpochS, None) => Some(Format::EpochS),
        (Kind::EpochMs, None) => Some(Format::EpochMs),
    }
}

impl Operation for TimestampConvert {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let out = match self.field.get(event) {
            None => return Ok(Effect::Continue),
            Some(v) if v.is_null() => return Ok(Effect::Continue),
            Some(ValueRef::Str(s)) => self.convert(&Value::String(s.to_owned())),
            Some(ValueRef::Json(v)) => self.convert(v),
            Some(ValueRef::Object(_)) => Err("cannot read a timestamp from an object".to_owned()),
        }
        .map_err(|e| format!("`{}`: {e}", self.field))?;
        self.target.as_ref().unwrap_or(&self.field).set(event, out).map_err(|e| e.0)?;
        Ok(Effect::Continue)
    }
}

impl TimestampConvert {
    fn convert(&self, v: &Value) -> Result<Value, String> {
        let t = read(&self.from, v, self.tz)?;
        Ok(match &self.to {
            Format::EpochS => Value::from(t.timestamp()),
            Format::EpochMs => Value::from(t.timestamp_millis()),
            other => Value::String(render(other, t.with_timezone(&self.tz), self.tz)?),
        })
    }
}

fn read(format: &Format, v: &Value, tz: Tz) -> Result<DateTime<Utc>, String> {
    let bad = || match v {
        Value::String(s) if s.chars().count() <= 64 => format!("cannot read {v} as {}", name(format)),
        other => format!("cannot read {} as {}", kind(other), name(format)),
    };
    match format {
        Format::Rfc3339 => {
            let s = v.as_str().ok_or_else(bad)?;
            DateTime::parse_from_rfc3339(s).map(|t| t.with_timezone(&Utc)).map_err(|_| bad())
        }
        Format::EpochS | Format::EpochMs => {
            let scale: i128 = if matches!(format, Format::EpochS) { 1_000_000_000 } else { 1_000_000 };
            let nanos: i128 = match v {
                Value::Number(n) if n.is_i64() || n.is_u64() => {
                    let i = n.as_i64().map(i128::from).or(n.as_u64().map(i128::from)).expect("an integer");
                    i * scale
                }
                Value::Number(n) => float_nanos(n.as_f64().expect("a float"), scale).ok_or_else(bad)?,
                Value::String(s) => {
                    let s = s.trim();
                    match s.parse::<i64>() {
                        Ok(i) => i128::from(i) * scale,
                        Err(_) => s.parse::<f64>().ok().and_then(|f| float_nanos(f, scale)).ok_or_else(bad)?,
                    }
                }
                _ => return Err(bad()),
            };
            let out_of_range = || format!("{v} is out of range");
            let secs = i64::try_from(nanos.div_euclid(1_000_000_000)).map_err(|_| out_of_range())?;
            let sub = u32::try_from(nanos.rem_euclid(1_000_000_000)).expect("below 1e9");
            DateTime::from_timestamp(secs, sub).ok_or_else(out_of_range)
        }
        Format::Pattern { items, has_time, .. } => {
            let s = v.as_str().ok_or_else(bad)?;
            let mut parsed = Parsed::new();
            chrono::format::parse(&mut parsed, s, items.iter()).map_err(|e| format!("{}: {e}", bad()))?;
            if parsed.offset().is_some() || parsed.timestamp().is_some() {
                return parsed.to_datetime().map(|t| t.with_timezone(&Utc)).map_err(|e| format!("{}: {e}", bad()));
            }
            let naive = if *has_time {
                parsed.to_naive_datetime_with_offset(0)
            } else {
                parsed.to_naive_date().map(|d| d.and_time(chrono::NaiveTime::MIN))
            }
            .map_err(|e| format!("{}: {e}", bad()))?;
            match tz.from_local_datetime(&naive) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Ok(t.with_timezone(&Utc)),
                LocalResult::None => Err(format!("{} does not exist in {tz} (a clock change skips it)", v)),
            }
        }
    }
}

/// Nanoseconds from a float count of seconds (`scale` 1e9) or milliseconds (`scale` 1e6),
/// rounded to the microsecond: a float near today's epoch seconds holds no more.
fn float_nanos(f: f64, scale: i128) -> Option<i128> {
    if !f.is_finite() || f.abs() >= 1e20 {
        return None;
    }
    let whole = f.floor();
    let micros_per_unit = scale / 1000;
    let micros = ((f - whole) * micros_per_unit as f64).round() as i128;
    Some(whole as i128 * scale + micros * 1000)
}

fn render(format: &Format, t: DateTime<Tz>, tz: Tz) -> Result<String, String> {
    match format {
        Format::Rfc3339 => Ok(t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
        Format::EpochS => Ok(t.timestamp().to_string()),
        Format::EpochMs => Ok(t.timestamp_millis().to_string()),
        Format::Pattern { items, text, .. } => {
            let mut out = String::new();
            write!(out, "{}", t.with_timezone(&tz).format_with_items(items.iter()))
                .map_err(|_| format!("cannot write the time with pattern `{text}`"))?;
            Ok(out)
        }
    }
}

fn name(format: &Format) -> String {
    match format {
        Format::Rfc3339 => "rfc3339".into(),
        Format::EpochS => "epoch_s".into(),
        Format::EpochMs => "epoch_ms".into(),
        Format::Pattern { text, .. } => format!("pattern `{text}`"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    fn conv(from: &str, to: &str, extra: Value) -> Value {
        let mut p = json!({"field": "payload.t", "from": from, "to": to});
        p.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        p
    }

    #[test]
    fn table() {
        let none = json!({});
        let cases: &[(Value, Value, Result<Value, &str>)] = &[
            (conv("rfc3339", "epoch_ms", none.clone()), json!("2024-07-20T12:34:56.789Z"), Ok(json!(1_721_478_896_789_i64))),
            (conv("rfc3339", "epoch_s", none.clone()), json!("2024-07-20T14:34:56.789+02:00"), Ok(json!(1_721_478_896))),
            (conv("rfc3339", "rfc3339", none.clone()), json!("2024-07-20T14:34:56+02:00"), Ok(json!("2024-07-20T12:34:56Z"))),
            (conv("rfc3339", "rfc3339", json!({"timezone": "Asia/Kolkata"})), json!("2024-07-20T12:34:56.5Z"), Ok(json!("2024-07-20T18:04:56.500+05:30"))),
            (conv("rfc3339", "epoch_ms", none.clone()), json!("2024-07-20"), Err("cannot read \"2024-07-20\" as rfc3339")),
            (conv("rfc3339", "epoch_ms", none.clone()), json!(5), Err("cannot read a number as rfc3339")),
            (conv("epoch_ms", "rfc3339", none.clone()), json!(1_721_478_896_789_i64), Ok(json!("2024-07-20T12:34:56.789Z"))),
            (conv("epoch_ms", "rfc3339", none.clone()), json!("1721478896789"), Ok(json!("2024-07-20T12:34:56.789Z"))),
            (conv("epoch_ms", "rfc3339", none.clone()), json!(-1), Ok(json!("1969-12-31T23:59:59.999Z"))),
            (conv("epoch_s", "rfc3339", none.clone()), json!(1_721_478_896.25), Ok(json!("2024-07-20T12:34:56.250Z"))),
            (conv("epoch_s", "epoch_ms", none.clone()), json!(0), Ok(json!(0))),
            (conv("epoch_s", "rfc3339", none.clone()), json!(u64::MAX), Err("out of range")),
            (conv("epoch_s", "rfc3339", none.clone()), json!(i64::MAX), Err("out of range")),
            (conv("epoch_s", "rfc3339", none.clone()), json!(1e300), Err("cannot read")),
            (conv("epoch_s", "rfc3339", none.clone()), json!("soon"), Err("cannot read \"soon\" as epoch_s")),
            (conv("epoch_ms", "epoch_s", none.clone()), json!(-1), Ok(json!(-1))),
            (
                conv("pattern", "rfc3339", json!({"from_pattern": "%d/%m/%Y %H:%M", "timezone": "Europe/Paris"})),
                json!("20/07/2024 14:34"),
                Ok(json!("2024-07-20T14:34:00+02:00")),
            ),
            (
                conv("pattern", "epoch_s", json!({"from_pattern": "%d/%m/%Y %H:%M", "timezone": "Europe/Paris"})),
                json!("20/07/2024 14:34"),
                Ok(json!(1_721_478_840)),
            ),
            (conv("pattern", "rfc3339", json!({"from_pattern": "%Y-%m-%d"})), json!("2024-07-20"), Ok(json!("2024-07-20T00:00:00Z"))),
            (
                conv("pattern", "epoch_s", json!({"from_pattern": "%Y-%m-%d %H:%M:%S %z", "timezone": "Europe/Paris"})),
                json!("2024-07-20 12:34:56 +0000"),
                Ok(json!(1_721_478_896)),
            ),
            (
                conv("pattern", "rfc3339", json!({"from_pattern": "%Y-%m-%d %H:%M", "timezone": "Europe/Paris"})),
                json!("2024-03-31 02:30"),
                Err("does not exist in Europe/Paris"),
            ),
            (
                conv("pattern", "rfc3339", json!({"from_pattern": "%Y-%m-%d %H:%M", "timezone": "Europe/Paris"})),
                json!("2024-10-27 02:30"),
                Ok(json!("2024-10-27T02:30:00+02:00")),
            ),
            (conv("pattern", "rfc3339", json!({"from_pattern": "%d/%m/%Y"})), json!("31/02/2024"), Err("cannot read")),
            (conv("pattern", "rfc3339", json!({"from_pattern": "%d/%m/%Y"})), json!("٢٠/07/2024"), Err("cannot read")),
            (
                conv("epoch_ms", "pattern", json!({"to_pattern": "%A %e %B %Y, %H:%M %Z", "timezone": "America/New_York"})),
                json!(1_721_478_896_789_i64),
                Ok(json!("Saturday 20 July 2024, 08:34 EDT")),
            ),
            (conv("epoch_ms", "pattern", json!({"to_pattern": "%Y年%m月%d日"})), json!(0), Ok(json!("1970年01月01日"))),
            (conv("epoch_ms", "rfc3339", none.clone()), json!(null), Ok(json!(null))),
            (conv("epoch_ms", "rfc3339", none.clone()), json!([1]), Err("cannot read an array as epoch_ms")),
        ];
        let rows: Vec<_> = cases
            .iter()
            .map(|(p, v, want)| (p.clone(), json!({"t": v}), want.clone().map(|w| json!({"t": w}))))
            .collect();
        check_payloads(&compile, &rows);
    }

    #[test]
    fn missing_fields_and_targets() {
        check_payloads(
            &compile,
            &[
                (conv("epoch_ms", "rfc3339", json!({})), json!({"x": 1}), Ok(json!({"x": 1}))),
                (
                    conv("epoch_ms", "rfc3339", json!({"target": "payload.iso"})),
                    json!({"t": 0}),
                    Ok(json!({"t": 0, "iso": "1970-01-01T00:00:00Z"})),
                ),
            ],
        );
        let mut e = event(json!({}));
        e.received_at = Some("2024-07-20T12:34:56.789Z".into());
        let params = json!({"field": "received_at", "from": "rfc3339", "to": "epoch_ms", "target": "metadata.received_ms"});
        let e = run(&compile, &params, e).unwrap();
        assert_eq!(e.metadata["received_ms"], json!(1_721_478_896_789_i64));
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"field": "received_at", "from": "rfc3339", "to": "epoch_ms"}), &[("field", "set `target`")]),
                (json!({"field": "payload.t", "from": "pattern", "to": "epoch_ms"}), &[("from_pattern", "is required")]),
                (json!({"field": "payload.t", "from": "rfc3339", "from_pattern": "%Y", "to": "pattern"}), &[("from_pattern", "applies only"), ("to_pattern", "is required")]),
                (json!({"field": "payload.t", "from": "pattern", "from_pattern": "%H:%M", "to": "epoch_ms"}), &[("from_pattern", "cannot be parsed back")]),
                (json!({"field": "payload.t", "from": "pattern", "from_pattern": "%Q", "to": "epoch_ms"}), &[("from_pattern", "not a valid strftime")]),
                (json!({"field": "payload.t", "from": "epoch_s", "to": "pattern", "to_pattern": ""}), &[("to_pattern", "must not be empty")]),
                (json!({"field": "x", "from": "epoch_s", "to": "epoch_ms", "timezone": "Mars/Olympus", "target": "id"}), &[("field", "must start with"), ("target", "read-only"), ("timezone", "unknown time zone")]),
                (json!({"field": "payload.t", "from": "iso", "to": "epoch_ms"}), &[("from", "unknown variant `iso`")]),
            ],
        );
    }
}

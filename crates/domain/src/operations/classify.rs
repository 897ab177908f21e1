//! `classify`: tags the event when field names or values look like a kind of data, e.g. `PII`
//! when a field is called `email` or a value looks like a social security number, so that a
//! downstream system enforcing access control learns at once what an asset holds.
//!
//! Params: `rules` (each `{tag, field_names: [regex…], values: [regex…]}`, at least one regex;
//! at most 64 rules), `scope` (what to look through, default `payload`; any path), `target`
//! (where the tags go, default `metadata.tags`).
//!
//! The scope is walked recursively, through objects and arrays. A rule matches when any field
//! name matches one of its `field_names` or any string or number (as written in JSON) matches
//! one of its `values`. Regexes search (unanchored; use `^…$` for whole names) and are
//! case-sensitive unless they start with `(?i)`. The target is an array of strings: existing
//! tags are kept, and each matching rule's tag is appended once, in rule order, when not already
//! there (insertion order, no duplicates). When no rule matches, the target is not touched. A
//! target holding something other than an array (or `null`) fails the event.
//!
//! Cost: all names are searched as one text, and so are all values (see [`Patterns`]); values
//! are only looked at for rules the names did not already match. Which rules the field names
//! match is remembered per thread for the last few sets of names seen (events of one source
//! mostly share their fields), so a known shape costs one comparison. Value patterns cost about
//! what the regex crate takes to scan the event's text once per pattern.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use regex::{Regex, RegexSet, RegexSetBuilder};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{parse_params, Access, Effect, Operation, OperationKind, ParamError, Problems};
use crate::event::Event;
use crate::path::{kind, FieldPath, ValueRef};
use crate::pipeline::Context;

pub(super) const KIND: OperationKind = OperationKind {
    name: "classify",
    summary: "Add tags (e.g. PII, GDPR) when field names or values anywhere in the payload match configured regexes.",
    params: Params::DOCS,
    example: r#"{"op": "classify", "params": {"rules": [
        {"tag": "PII", "field_names": ["(?i)e-?mail", "(?i)^(ssn|social_security_number)$", "(?i)phone"],
         "values": ["[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}", "\\b\\d{3}-\\d{2}-\\d{4}\\b"]},
        {"tag": "GDPR", "field_names": ["(?i)^(first_?name|last_?name|birth_?date|home_?address)$"]}
    ]}}"#,
    compile,
};

const MAX_RULES: usize = 64;

params! {
    struct Params {
        rules: Vec<RuleParams> => ["list<{tag: string, field_names: list<regex>, values: list<regex>}>", required, "A rule adds its tag when any field name matches one of field_names or any string/number value matches one of values."],
        #[serde(default = "default_scope")]
        scope: String => ["path", optional("\"payload\""), "The part of the event to look through, recursively."],
        #[serde(default = "default_target")]
        target: String => ["path", optional("\"metadata.tags\""), "The array of tags; existing tags are kept, new ones appended once in rule order."],
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleParams {
    tag: String,
    #[serde(default)]
    field_names: Vec<String>,
    #[serde(default)]
    values: Vec<String>,
}

fn default_scope() -> String {
    "payload".into()
}

fn default_target() -> String {
    "metadata.tags".into()
}

#[derive(Debug)]
struct Rule {
    tag: String,
    names: Option<Patterns>,
    values: Option<Patterns>,
}

/// One rule's `field_names` or `values`, ready for the two ways of searching.
///
/// Searching every name or value one by one costs a regex call each (~50 ns, dozens per
/// event). Instead the walk writes all names (and all values) into one text, one per line, and
/// each pattern searches that text once with `^`/`$` meaning start/end of line. A pattern that
/// matches a name alone also matches its line, so no match in the text means no match at all.
/// A match in the text is confirmed on its line with the patterns as written; when it cannot be
/// (it spans lines, or the confirmation fails), every line is checked one by one, so the result
/// is always that of checking each name alone.
#[derive(Debug)]
struct Patterns {
    /// The patterns as written, for one name or value.
    exact: RegexSet,
    /// Each pattern in multi-line mode, for the text of all names or values.
    lines: Vec<Regex>,
    /// False when a pattern anchors at the very start or end of the text (`\A`, `\z`,
    /// `(?-m)^`), where the text of all lines would differ from one line alone.
    joinable: bool,
}

impl Patterns {
    fn new(patterns: &[String], problems: &mut Problems) -> Option<Patterns> {
        if patterns.is_empty() {
            return None;
        }
        let wrapped: Vec<String> = patterns.iter().map(|p| format!("(?m:{p})")).collect();
        let joinable = wrapped.iter().all(|p| {
            regex_syntax::parse(p).is_ok_and(|hir| !hir.properties().look_set().contains_anchor_haystack())
        });
        let exact = set(patterns, problems)?;
        let lines = wrapped.iter().filter_map(|p| problems.regex(p, "rules")).collect();
        Some(Patterns { exact, lines, joinable })
    }

    /// Whether a line of `text` (names or values joined with `\n`) matches, exactly as if each
    /// line were checked alone.
    fn matches(&self, text: &str) -> bool {
        if self.joinable {
            for re in &self.lines {
                let Some(m) = re.find(text) else { continue };
                if !text[m.range()].contains('\n') {
                    let start = text[..m.start()].rfind('\n').map_or(0, |i| i + 1);
                    let end = text[m.end()..].find('\n').map_or(text.len(), |i| m.end() + i);
                    if self.exact.is_match(&text[start..end]) {
                        return true;
                    }
                }
                return text.split('\n').any(|line| self.exact.is_match(line));
            }
            false
        } else {
            text.split('\n').any(|line| self.exact.is_match(line))
        }
    }
}

#[derive(Debug)]
struct Classify {
    rules: Vec<Rule>,
    /// Every rule's `field_names` in multi-line mode together: most events name no field any
    /// rule looks for, and one search says so. `None` when some rule is not joinable.
    any_name: Option<RegexSet>,
    /// Bits of the rules with `field_names` (`values`).
    name_rules: u64,
    value_rules: u64,
    /// This operation's key in the name cache.
    id: u64,
    scope: FieldPath,
    target: FieldPath,
}

/// The patterns as one set. Each pattern compiled alone already, so only the set's total size
/// can fail.
fn set<S: AsRef<str>>(patterns: &[S], problems: &mut Problems) -> Option<RegexSet> {
    RegexSetBuilder::new(patterns)
        .size_limit(8 << 20)
        .build()
        .map_err(|e| problems.push("rules", format!("the regexes together are too big: {e}")))
        .ok()
}

fn compile(params: &Value) -> Result<Box<dyn Operation>, Vec<ParamError>> {
    let p: Params = parse_params(params)?;
    let mut problems = Problems::default();
    let scope = problems.path(&p.scope, "scope", Access::Read);
    let target = problems.path(&p.target, "target", Access::Field);
    if p.rules.is_empty() {
        problems.push("rules", "must list at least one rule");
    }
    if p.rules.len() > MAX_RULES {
        problems.push("rules", format!("at most {MAX_RULES} rules"));
    }
    for (i, rule) in p.rules.iter().enumerate() {
        if rule.tag.is_empty() {
            problems.push(format!("rules[{i}].tag"), "must not be empty");
        }
        if rule.field_names.is_empty() && rule.values.is_empty() {
            problems.push(format!("rules[{i}]"), "needs at least one regex in `field_names` or `values`");
        }
        for (list, patterns) in [("field_names", &rule.field_names), ("values", &rule.values)] {
            for (j, pattern) in patterns.iter().enumerate() {
                problems.regex(pattern, &format!("rules[{i}].{list}[{j}]"));
            }
        }
    }
    problems.done()?;
    let mut problems = Problems::default();
    let rules: Vec<Rule> = p
        .rules
        .iter()
        .map(|r| Rule {
            tag: r.tag.clone(),
            names: Patterns::new(&r.field_names, &mut problems),
            values: Patterns::new(&r.values, &mut problems),
        })
        .collect();
    let all_joinable = rules.iter().all(|r| r.names.as_ref().is_none_or(|n| n.joinable));
    let wrapped: Vec<String> = p.rules.iter().flat_map(|r| r.field_names.iter().map(|n| format!("(?m:{n})"))).collect();
    let any_name = if all_joinable && !wrapped.is_empty() { set(&wrapped, &mut problems) } else { None };
    problems.done()?;
    let bits = |pick: fn(&Rule) -> bool| rules.iter().enumerate().filter(|(_, r)| pick(r)).fold(0u64, |acc, (i, _)| acc | 1 << i);
    let name_rules = bits(|r| r.names.is_some());
    let value_rules = bits(|r| r.values.is_some());
    Ok(Box::new(Classify {
        rules,
        any_name,
        name_rules,
        value_rules,
        id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        scope: scope.expect("checked"),
        target: target.expect("checked"),
    }))
}

/// What a walk collects: every field name, or every string and number (as JSON text), one
/// per line; names and values holding a line break are kept apart and checked alone.
#[derive(Default)]
struct Collected<'e> {
    /// Collect names (else values).
    names: bool,
    text: String,
    /// Lines in `text` (a text of one empty line is not an empty text).
    count: usize,
    odd: Vec<&'e str>,
}

impl<'e> Collected<'e> {
    fn new(names: bool) -> Self {
        Collected { names, text: String::with_capacity(if names { 256 } else { 1024 }), ..Default::default() }
    }

    fn root(&mut self, scope: Option<ValueRef<'e>>) {
        match scope {
            None => {}
            Some(ValueRef::Object(m)) => self.object(m),
            Some(ValueRef::Json(v)) => self.value(v),
            Some(ValueRef::Str(s)) if !self.names => self.line(s),
            Some(ValueRef::Str(_)) => {}
        }
        // Each line ends with a line break, so the last line would be an empty one that is not
        // there (and `^$` would match it): drop the last break.
        self.text.pop();
    }

    fn object(&mut self, map: &'e Map<String, Value>) {
        for (k, v) in map {
            if self.names {
                self.line(k);
            }
            self.value(v);
        }
    }

    fn value(&mut self, v: &'e Value) {
        match v {
            Value::Object(m) => self.object(m),
            Value::Array(items) => items.iter().for_each(|item| self.value(item)),
            Value::String(s) if !self.names => self.line(s),
            Value::Number(n) if !self.names => {
                use std::fmt::Write as _;
                let _ = writeln!(self.text, "{n}");
                self.count += 1;
            }
            _ => {}
        }
    }

    fn line(&mut self, s: &'e str) {
        if s.contains('\n') {
            self.odd.push(s);
        } else {
            self.text.push_str(s);
            self.text.push('\n');
            self.count += 1;
        }
    }

    /// Whether a line or an odd one matches, as if each were checked alone.
    fn matches(&self, p: &Patterns) -> bool {
        (self.count > 0 && p.matches(&self.text)) || self.odd.iter().any(|s| p.exact.is_match(s))
    }
}

/// Gives every compiled `classify` its own key in the name cache.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// How many (operation, names) results each thread keeps, and the longest names text kept.
const CACHE_ENTRIES: usize = 16;
const CACHE_MAX_TEXT: usize = 8 << 10;

thread_local! {
    /// The rules matched by the field names of recent events, most recent first. Events of one
    /// source mostly share their field names, so this spares searching them again.
    static NAME_CACHE: RefCell<Vec<(u64, String, u64)>> = const { RefCell::new(Vec::new()) };
}

impl Classify {
    /// The bits of the rules whose `field_names` match a line of `names`.
    fn name_bits(&self, names: &str) -> u64 {
        if !self.any_name.as_ref().is_none_or(|s| s.is_match(names)) {
            return 0;
        }
        let mut found = 0u64;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.names.as_ref().is_some_and(|p| p.matches(names)) {
                found |= 1 << i;
            }
        }
        found
    }

    /// [`Classify::name_bits`], remembered per thread for recently seen names.
    fn cached_name_bits(&self, names: &str) -> u64 {
        if names.len() > CACHE_MAX_TEXT {
            return self.name_bits(names);
        }
        let hit = NAME_CACHE.with_borrow_mut(|cache| {
            let at = cache.iter().position(|(id, text, _)| *id == self.id && text == names)?;
            let entry = cache.remove(at);
            let bits = entry.2;
            cache.insert(0, entry);
            Some(bits)
        });
        if let Some(bits) = hit {
            return bits;
        }
        let bits = self.name_bits(names);
        NAME_CACHE.with_borrow_mut(|cache| {
            cache.truncate(CACHE_ENTRIES - 1);
            cache.insert(0, (self.id, names.to_owned(), bits));
        });
        bits
    }

    /// The bits of the rules that match the event's scope.
    fn matching(&self, scope: Option<ValueRef<'_>>) -> u64 {
        let mut found = 0u64;
        if self.name_rules != 0 {
            let mut names = Collected::new(true);
            names.root(scope);
            if names.count > 0 {
                found |= self.cached_name_bits(&names.text);
            }
            if !names.odd.is_empty() {
                for (i, rule) in self.rules.iter().enumerate() {
                    let odd_match = |p: &Patterns| names.odd.iter().any(|s| p.exact.is_match(s));
                    if rule.names.as_ref().is_some_and(odd_match) {
                        found |= 1 << i;
                    }
                }
            }
        }
        if self.value_rules & !found != 0 {
            let mut values = Collected::new(false);
            values.root(scope);
            for (i, rule) in self.rules.iter().enumerate() {
                if found & (1 << i) == 0 && rule.values.as_ref().is_some_and(|p| values.matches(p)) {
                    found |= 1 << i;
                }
            }
        }
        found
    }
}

impl Operation for Classify {
    fn apply(&self, event: &mut Event, _ctx: &Context<'_>) -> Result<Effect, String> {
        let found = self.matching(self.scope.get(event));
        if found == 0 {
            return Ok(Effect::Continue);
        }
        let mut tags = match self.target.remove(event).map_err(|e| e.0)? {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(tags)) => tags,
            Some(other) => return Err(format!("`{}` must be an array to hold tags, not {}", self.target, kind(&other))),
        };
        for (i, rule) in self.rules.iter().enumerate() {
            if found & (1 << i) != 0 && !tags.iter().any(|t| t.as_str() == Some(&rule.tag)) {
                tags.push(Value::String(rule.tag.clone()));
            }
        }
        self.target.set(event, Value::Array(tags)).map_err(|e| e.0)?;
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    fn rules() -> Value {
        json!([
            {"tag": "PII", "field_names": ["(?i)e-?mail", "(?i)^ssn$"], "values": ["[a-z0-9.]+@[a-z0-9.-]+\\.[a-z]{2,}", "^\\d{3}-\\d{2}-\\d{4}$"]},
            {"tag": "GDPR", "field_names": ["(?i)^(first|last)_?name$"]},
            {"tag": "CARD", "values": ["^4\\d{15}$"]},
        ])
    }

    #[test]
    fn table() {
        // (payload, metadata before, params beyond the rules, expected metadata or error)
        let cases: &[(Value, Value, Value, Result<Value, &str>)] = &[
            (json!({"title": "x"}), json!({}), json!({}), Ok(json!({}))),
            (json!({"Email": "x"}), json!({}), json!({}), Ok(json!({"tags": ["PII"]}))),
            (json!({"owner": {"contact": "me@example.org"}}), json!({}), json!({}), Ok(json!({"tags": ["PII"]}))),
            (json!({"list": [{"a": ["zz", "123-45-6789"]}]}), json!({}), json!({}), Ok(json!({"tags": ["PII"]}))),
            (json!({"ssn_hint": "x"}), json!({}), json!({}), Ok(json!({}))),
            (json!({"LastName": "Müller", "e-mail": null}), json!({}), json!({}), Ok(json!({"tags": ["PII", "GDPR"]}))),
            (json!({"first_name": "Zoë"}), json!({"tags": ["internal", "GDPR"]}), json!({}), Ok(json!({"tags": ["internal", "GDPR"]}))),
            (json!({"first_name": "Zoë"}), json!({"tags": ["internal"]}), json!({}), Ok(json!({"tags": ["internal", "GDPR"]}))),
            (json!({"first_name": "Zoë"}), json!({"tags": null}), json!({}), Ok(json!({"tags": ["GDPR"]}))),
            (json!({"card": 4_111_111_111_111_111_u64}), json!({}), json!({}), Ok(json!({"tags": ["CARD"]}))),
            (json!({"n": u64::MAX, "f": 1.5}), json!({}), json!({}), Ok(json!({}))),
            (json!({"first_name": "x"}), json!({"tags": "GDPR"}), json!({}), Err("`metadata.tags` must be an array to hold tags, not a string")),
            (json!({"first_name": "x"}), json!({}), json!({"target": "metadata.c.tags"}), Ok(json!({"c": {"tags": ["GDPR"]}}))),
            (json!({"first_name": "x", "o": {"email": 1}}), json!({}), json!({"scope": "payload.o"}), Ok(json!({"tags": ["PII"]}))),
            (json!({"o": "me@example.org"}), json!({}), json!({"scope": "payload.o"}), Ok(json!({"tags": ["PII"]}))),
            (json!({}), json!({"email": 1}), json!({"scope": "metadata"}), Ok(json!({"email": 1, "tags": ["PII"]}))),
            (json!({"a": 1}), json!({}), json!({"scope": "payload.missing"}), Ok(json!({}))),
            (json!({"a\nemail": 1}), json!({}), json!({}), Ok(json!({"tags": ["PII"]}))),
            (json!({"note": "line one\nmail me@example.org"}), json!({}), json!({}), Ok(json!({"tags": ["PII"]}))),
            (json!({"x": "me@example\n.org"}), json!({}), json!({}), Ok(json!({}))),
        ];
        for (payload, metadata, extra, expected) in cases {
            let mut params = json!({"rules": rules()});
            params.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            check_outcome(payload, run(&compile, &params, event_with(payload.clone(), metadata.clone())), expected, |e, want| {
                assert_eq!(&Value::Object(e.metadata), want, "{payload} {extra}");
            });
        }
    }

    #[test]
    fn the_example_tags_pii() {
        let spec: crate::source::OperationSpec = serde_json::from_str(KIND.example).unwrap();
        let payload = json!({"reporter": {"name": "x", "contact": "zoë@example.com"}, "body": "my ssn is 123-45-6789", "first_name": "Zoë"});
        let e = run(&compile, &spec.params, event_with(payload, json!({}))).unwrap();
        assert_eq!(e.metadata["tags"], json!(["PII", "GDPR"]));
    }

    /// Patterns that behave differently on the text of all lines than on one line still give the
    /// answer of checking each name alone.
    #[test]
    fn joined_search_is_exact() {
        let cases: &[(&str, Value, bool)] = &[
            ("^$", json!({"": 1}), true),
            ("^$", json!({"a": 1}), false),
            ("^$", json!({}), false),
            ("\\Aemail\\z", json!({"a": 1, "email": 2, "z": 3}), true),
            ("\\Aemail\\z", json!({"xemail": 2}), false),
            ("(?-m)^name$", json!({"a": 1, "name": 2, "z": 3}), true),
            ("(?s)a.*b", json!({"a": 1, "b": 2}), false),
            ("(?s)a.*b", json!({"a": 1, "xab": 2}), true),
            ("a\\sb", json!({"a": 1, "b": 2}), false),
            ("[^x]+", json!({"x": 1}), false),
            ("[^x]+", json!({"x": 1, "xy": 2}), true),
            ("\\bname\\b", json!({"name": 1}), true),
            ("\\bname\\b", json!({"names": 1}), false),
            ("(?i)^ÉMAIL$", json!({"a": {"é": [{"émail": 1}]}}), true),
            ("(?i)^ÉMAIL$", json!({"a": {"é": [{"email": 1}]}}), false),
        ];
        for (pattern, payload, tagged) in cases {
            let params = json!({"rules": [{"tag": "T", "field_names": [pattern]}, {"tag": "V", "values": [pattern]}]});
            let e = run(&compile, &params, event_with(payload.clone(), json!({}))).unwrap();
            let tags = e.metadata.get("tags").cloned().unwrap_or(json!([]));
            assert_eq!(tags.as_array().unwrap().contains(&json!("T")), *tagged, "{pattern} on {payload}: {tags}");
            // The same strings as values.
            let keys: Vec<Value> = payload.as_object().unwrap().keys().map(|k| json!(k)).collect();
            let e = run(&compile, &params, event_with(json!({"l": keys}), json!({}))).unwrap();
            let tags = e.metadata.get("tags").cloned().unwrap_or(json!([]));
            if payload.as_object().unwrap().values().all(|v| !v.is_object()) {
                assert_eq!(tags.as_array().unwrap().contains(&json!("V")), *tagged, "values: {pattern} on {keys:?}: {tags}");
            }
        }
    }

    /// The per-thread cache of name results never mixes up events or operations.
    #[test]
    fn remembered_names_give_the_same_answers() {
        let pii = compile(&json!({"rules": rules()})).unwrap();
        let other = compile(&json!({"rules": [{"tag": "X", "field_names": ["^x$"]}]})).unwrap();
        let tags = |op: &dyn Operation, payload: Value| {
            let mut e = event_with(payload, json!({}));
            op.apply(&mut e, &crate::operations::testing::context()).unwrap();
            e.metadata.get("tags").cloned().unwrap_or(json!([]))
        };
        for round in 0..3 {
            assert_eq!(tags(&*pii, json!({"email": 1})), json!(["PII"]), "round {round}");
            assert_eq!(tags(&*other, json!({"email": 1})), json!([]), "round {round}");
            assert_eq!(tags(&*pii, json!({"x": 1})), json!([]), "round {round}");
            assert_eq!(tags(&*other, json!({"x": 1})), json!(["X"]), "round {round}");
            assert_eq!(tags(&*pii, json!({"x": "me@example.org"})), json!(["PII"]), "round {round}");
            for i in 0..CACHE_ENTRIES + 2 {
                assert_eq!(tags(&*pii, json!({format!("k{i}"): 1, "first_name": 1})), json!(["GDPR"]), "round {round}");
            }
        }
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"rules": []}), &[("rules", "at least one rule")]),
                (
                    json!({"rules": [{"tag": "", "field_names": ["ok", "("]}, {"tag": "T"}, {"tag": "U", "values": ["[z-a]"]}], "scope": "x", "target": "payload"}),
                    &[
                        ("scope", "must start with"),
                        ("target", "below its root"),
                        ("rules[0].tag", "must not be empty"),
                        ("rules[0].field_names[1]", "invalid regex"),
                        ("rules[1]", "at least one regex"),
                        ("rules[2].values[0]", "invalid regex"),
                    ],
                ),
                (json!({"rules": [{"tag": "T", "names": ["x"]}]}), &[("rules[0].names", "unknown field `names`")]),
            ],
        );
    }
}

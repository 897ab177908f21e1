//! `route`: decides the downstream Kafka topic from a template.
//!
//! Params: `topic`, a template of literal text and placeholders: `{source}`, `{id}`, `{stage}`
//! (`pre` or `post`), `{date}` or `{date:<strftime>}` (the processing time in UTC, default
//! pattern `%Y-%m-%d`), `{field:<path>}` (a string or number at a path; missing = error). E.g.
//! `metadata.{source}.{date:%Y%m}`. The rendered name must be a valid Kafka topic name (1 to 249
//! of `A-Z a-z 0-9 . _ -`, not `.` or `..`), else the event fails. Without `route` the stage
//! keeps its default topic.

use std::fmt::Write as _;

use chrono::format::{Item, StrftimeItems};
use serde_json::Value;

use super::{Access, Effect, Operation, Problems};
use crate::event::Event;
use crate::path::{FieldPath, ValueRef};
use crate::pipeline::Context;

operation!(
    "route",
    "Set the downstream Kafka topic from a template ({source}, {id}, {stage}, {date:%Y-%m-%d}, {field:payload.x}).",
    r#"{"op": "route", "params": {"topic": "metadata.{source}.{date:%Y-%m}"}, "when": {"exists": "payload.project"}}"#,
    struct Params {
    topic: String => ["template", required, "Literal text and placeholders {source}, {id}, {stage}, {date} / {date:<strftime>} (UTC), {field:<path>}; the result must be a valid Kafka topic name."],
    }
);

/// Longest Kafka topic name.
const MAX_TOPIC_LEN: usize = 249;

#[derive(Debug)]
enum Part {
    Literal(String),
    Source,
    Id,
    Stage,
    Date(Vec<Item<'static>>),
    Field(FieldPath),
}

#[derive(Debug)]
struct Route {
    parts: Vec<Part>,
}

fn valid_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn build(p: Params, problems: &mut Problems) -> Option<Route> {
    let mut parts = Vec::new();
    let mut rest = p.topic.as_str();
    if rest.is_empty() {
        problems.push("topic", "must not be empty");
    }
    while !rest.is_empty() {
        let (literal, after) = match rest.find('{') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if !literal.is_empty() {
            if let Some(bad) = literal.chars().find(|c| !valid_topic_char(*c)) {
                problems.push("topic", format!("`{bad}` cannot appear in a Kafka topic name (allowed: A-Z a-z 0-9 . _ -)"));
            }
            parts.push(Part::Literal(literal.to_owned()));
        }
        if after.is_empty() {
            break;
        }
        let Some(end) = after.find('}') else {
            problems.push("topic", format!("unclosed `{{` in `{}`", p.topic));
            break;
        };
        let placeholder = &after[1..end];
        rest = &after[end + 1..];
        let (name, arg) = match placeholder.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (placeholder, None),
        };
        match (name, arg) {
            ("source", None) => parts.push(Part::Source),
            ("id", None) => parts.push(Part::Id),
            ("stage", None) => parts.push(Part::Stage),
            ("date", pattern) => match StrftimeItems::new(pattern.unwrap_or("%Y-%m-%d")).parse_to_owned() {
                Ok(items) if !items.is_empty() => parts.push(Part::Date(items)),
                _ => problems.push("topic", format!("`{{{placeholder}}}` has an invalid strftime pattern")),
            },
            ("field", Some(path)) => {
                if let Some(path) = problems.path(path, "topic", Access::Read) {
                    parts.push(Part::Field(path));
                }
            }
            _ => problems.push(
                "topic",
                format!("unknown placeholder `{{{placeholder}}}`; known: {{source}}, {{id}}, {{stage}}, {{date}}, {{date:<strftime>}}, {{field:<path>}}"),
            ),
        }
    }
    Some(Route { parts })
}

impl Operation for Route {
    fn apply(&self, event: &mut Event, ctx: &Context<'_>) -> Result<Effect, String> {
        let mut topic = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => topic.push_str(s),
                Part::Source => topic.push_str(event.source.as_str()),
                Part::Id => topic.push_str(event.id.as_str()),
                Part::Stage => topic.push_str(ctx.stage.as_str()),
                Part::Date(items) => {
                    write!(topic, "{}", ctx.now.format_with_items(items.iter()))
                        .map_err(|_| "cannot format the date".to_owned())?;
                }
                Part::Field(path) => match path.get(event) {
                    Some(v @ (ValueRef::Str(_) | ValueRef::Json(Value::String(_) | Value::Number(_)))) => v.write_text(&mut topic),
                    Some(_) => return Err(format!("`{path}` must be a string or a number to name a topic")),
                    None => return Err(format!("`{path}` is missing")),
                },
            }
        }
        if topic.is_empty() || topic.len() > MAX_TOPIC_LEN || topic == "." || topic == ".." || !topic.chars().all(valid_topic_char) {
            let shown: String = topic.chars().take(80).collect();
            return Err(format!(
                "`{shown}` is not a valid Kafka topic name (1 to {MAX_TOPIC_LEN} of A-Z a-z 0-9 . _ -, not `.` or `..`)"
            ));
        }
        event.routing.topic = Some(topic);
        Ok(Effect::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operations::testing::*;

    #[test]
    fn table() {
        let cases: &[(&str, Value, Result<&str, &str>)] = &[
            ("out", json!({}), Ok("out")),
            ("metadata.{source}.{stage}", json!({}), Ok("metadata.s.post")),
            ("m-{date}", json!({}), Ok("m-2024-07-20")),
            ("m_{date:%Y%m}_{id}", json!({}), Ok("m_202407_1")),
            ("t.{field:payload.project}", json!({"project": "PROJ-1"}), Ok("t.PROJ-1")),
            ("t.{field:payload.n}", json!({"n": u64::MAX}), Ok("t.18446744073709551615")),
            ("{field:payload.project}", json!({"project": "."}), Err("`.` is not a valid Kafka topic name")),
            ("t.{field:payload.project}", json!({"project": "ünï"}), Err("`t.ünï` is not a valid Kafka topic name")),
            ("t.{field:payload.project}", json!({"project": "a b"}), Err("not a valid Kafka topic name")),
            ("{field:payload.project}", json!({"project": ""}), Err("`` is not a valid")),
            ("{field:payload.project}", json!({"project": "x".repeat(250)}), Err("not a valid Kafka topic name")),
            ("{field:payload.project}", json!({"project": "x".repeat(249)}), Ok(&*"x".repeat(249).leak())),
            ("t.{field:payload.project}", json!({}), Err("`payload.project` is missing")),
            ("t.{field:payload.project}", json!({"project": null}), Err("must be a string or a number")),
            ("t.{field:payload.project}", json!({"project": ["a"]}), Err("must be a string or a number")),
        ];
        for (template, payload, expected) in cases {
            let params = json!({"topic": template});
            check_outcome(template, run(&compile, &params, event(payload.clone())), expected, |e, want| {
                assert_eq!(e.routing.topic.as_deref(), Some(*want), "{template}");
            });
        }
    }

    #[test]
    fn bad_params_are_located() {
        check_errors(
            &compile,
            &[
                (json!({"topic": ""}), &[("topic", "must not be empty")]),
                (
                    json!({"topic": "a b/{nope}.{date:%Q}.{field:title}.{source"}),
                    &[
                        ("topic", "` ` cannot appear"),
                        ("topic", "unknown placeholder `{nope}`"),
                        ("topic", "invalid strftime pattern"),
                        ("topic", "must start with"),
                        ("topic", "unclosed `{`"),
                    ],
                ),
                (json!({"topic": "{source:x}"}), &[("topic", "unknown placeholder `{source:x}`")]),
            ],
        );
    }
}

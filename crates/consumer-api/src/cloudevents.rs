//! CloudEvents 1.0, structured JSON mode (`application/cloudevents+json`): how `/consume` shows
//! an event when the caller asks for `format=cloudevents`.
//!
//! | attribute | from |
//! |---|---|
//! | `specversion` | `1.0` |
//! | `id` | `<topic>-<partition>-<offset>`: unique per published update, the same when redelivered |
//! | `source` | `/metastream/sources/<source>` |
//! | `type` | `io.metastream.metadata.processed` |
//! | `subject` | the event's `id` (the entity within its source) |
//! | `time` | the event's `received_at` (when the gateway accepted it), when present |
//! | `datacontenttype` | `application/json` |
//! | `data` | the event (filtered and projected as asked) |

use serde::Deserialize;
use serde_json::{json, Value};

/// How `/consume` shows each event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Format {
    /// The event as the pipeline published it.
    #[default]
    Metastream,
    /// A CloudEvents 1.0 structured-mode JSON object around it.
    Cloudevents,
}

/// The CloudEvent for the event `data` published at `topic`/`partition`/`offset`; `source`,
/// `subject` and `time` come from the event as published (`full`), not the projection.
pub(crate) fn wrap(topic: &str, partition: i32, offset: i64, full: &Value, data: Value) -> Value {
    let mut event = json!({
        "specversion": "1.0",
        "id": format!("{topic}-{partition}-{offset}"),
        "source": format!("/metastream/sources/{}", full["source"].as_str().unwrap_or("unknown")),
        "type": "io.metastream.metadata.processed",
        "subject": full["id"],
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(time) = full["received_at"].as_str() {
        event["time"] = json!(time);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_the_record_to_the_required_and_optional_attributes() {
        let full = json!({"id": "PR-7", "source": "github", "payload": {"state": "merged"}, "received_at": "2024-07-20T12:34:56Z"});
        let e = wrap("out", 2, 41, &full, json!({"id": "PR-7", "source": "github"}));
        assert_eq!(e["specversion"], "1.0");
        assert_eq!(e["id"], "out-2-41");
        assert_eq!(e["source"], "/metastream/sources/github");
        assert_eq!(e["type"], "io.metastream.metadata.processed");
        assert_eq!(e["subject"], "PR-7");
        assert_eq!(e["time"], "2024-07-20T12:34:56Z");
        assert_eq!(e["data"], json!({"id": "PR-7", "source": "github"}));
        assert!(wrap("out", 0, 0, &json!({"id": "x", "source": "s"}), json!({})).get("time").is_none());
    }
}

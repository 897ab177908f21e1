//! Boundary events mixed into a scenario's load: events at and just past the gateway's size and
//! depth limits. Each is either refused at the gateway (4xx) or, once accepted, must reach the
//! output topic or the dead-letter topic — and none may stop a stage.

use serde_json::{json, Value};

use crate::stack::{SOURCE, TOKEN};

/// One boundary event and what the gateway must answer.
pub struct Boundary {
    pub id: String,
    pub body: Value,
    /// `None`: must be accepted (202); `Some(status)`: must be refused with it.
    pub refused_with: Option<u16>,
}

/// The length of `received_at` as the gateway writes it (`2024-07-20T12:34:56.789Z`).
const RECEIVED_AT_LEN: usize = 24;

/// The bytes the gateway writes to Kafka for `body` (see `domain::ClientEvent::to_wire`).
fn wire_len(body: &Value) -> usize {
    let metadata = body.get("metadata").map_or(2, |m| m.to_string().len());
    format!(r#"{{"id":{},"source":{},"payload":{},"metadata":,"received_at":""}}"#, body["id"], body["source"], body["payload"]).len()
        + metadata
        + RECEIVED_AT_LEN
}

/// An event of `id` whose wire form is exactly `size` bytes, its payload padded with `pad`
/// (a one-character string, possibly multi-byte) and carrying `n` (what the scenario's `cast`
/// reads: a string makes it poison).
fn sized(id: &str, size: usize, pad: &str, n: Value) -> Value {
    let mut body = json!({"id": id, "source": SOURCE, "payload": {"n": n, "s": ""}});
    let room = size.saturating_sub(wire_len(&body));
    let mut s = pad.repeat(room / pad.len());
    s.push_str(&"x".repeat(room % pad.len()));
    body["payload"]["s"] = json!(s);
    debug_assert_eq!(wire_len(&body), size);
    body
}

/// An event nesting `depth` levels (the event object is level 1).
fn nested(id: &str, depth: usize) -> Value {
    // event (1) > payload (2) > "d" arrays (3..=depth).
    let arrays = depth - 2;
    let text = format!(r#"{{"id":"{id}","source":"{SOURCE}","payload":{{"n":1,"d":{}1{}}}}}"#, "[".repeat(arrays), "]".repeat(arrays));
    serde_json::from_str(&text).unwrap_or_else(|_| json!(text))
}

/// Asks the gateway for its event size limit: the `limit` of a 413 for an event surely too
/// large.
pub async fn max_event_bytes(http: &reqwest::Client, gateway: &str) -> anyhow::Result<usize> {
    let body = sized("boundary-probe", 1_040_000, "x", json!(1));
    let r = http.post(format!("{gateway}/ingest")).bearer_auth(TOKEN).json(&body).send().await?;
    let status = r.status().as_u16();
    let answer: Value = r.json().await?;
    anyhow::ensure!(status == 413 && answer["error"] == "event_too_large", "expected 413 event_too_large for a 1,040,000-byte event, got {status} {answer}");
    answer["limit"].as_u64().map(|l| l as usize).ok_or_else(|| anyhow::anyhow!("413 without a limit: {answer}"))
}

/// `rounds` copies of the boundary set, ids made unique by round.
pub fn events(limit: usize, max_depth: usize, rounds: usize) -> Vec<Boundary> {
    let mut out = Vec::new();
    for r in 0..rounds {
        let id = |name: &str| format!("boundary-{name}-{r}");
        let accept = |id: String, body: Value| Boundary { id, body, refused_with: None };
        let refuse = |id: String, body: Value, status: u16| Boundary { id, body, refused_with: Some(status) };
        out.push(accept(id("max"), sized(&id("max"), limit, "x", json!(1))));
        out.push(accept(id("max-unicode"), sized(&id("max-unicode"), limit, "€", json!(1))));
        out.push(accept(id("max-poison"), sized(&id("max-poison"), limit, "x", json!("poison"))));
        out.push(refuse(id("over"), sized(&id("over"), limit + 1, "x", json!(1)), 413));
        out.push(accept(id("deep"), nested(&id("deep"), max_depth)));
        out.push(refuse(id("too-deep"), nested(&id("too-deep"), max_depth + 1), 400));
    }
    out
}

//! `GET /stream?group=G`: the group's events pushed as Server-Sent Events (`text/event-stream`),
//! one SSE event per processed record, `id:` a cursor; `: keepalive` comments while there is
//! nothing to send, so proxies keep the connection.
//!
//! Resuming: a client that reconnects — to any replica — with `Last-Event-ID` goes on right
//! after the last event it received, with no gap and no duplicate. The cursor carries the
//! group's position after that event on every partition and the id of the connection it came
//! from; resuming sets the group there and forgets what that connection was handed. (One stream
//! per group: two streams of one group share its events, and a resume moves the group for both.)
//!
//! Each batch the stream sends is a lease of the connection, acknowledged when the stream asks
//! for the next batch; a connection that ends and never resumes has its last batch handed out
//! again after `consumer_api.ack_timeout_ms`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use adapters::auth::KeyHasher;
use adapters::http::RequestError;
use adapters::kafka::message::Message as _;
use serde_json::json;

use crate::groups::{ApiGroup, Slot, Start};
use crate::State;

/// How long one wait for events lasts (the group's lock is held meanwhile, so a resume
/// elsewhere waits at most this long).
const POLL: Duration = Duration::from_secs(1);
/// How long the stream stays silent before sending a keepalive comment.
const HEARTBEAT: Duration = Duration::from_secs(10);
/// Most events per batch the stream asks for.
const BATCH: usize = 100;

/// `<connection>.<partition:offset,…>.<signature>`: where the group goes on after an event.
pub(crate) fn sign(signer: &KeyHasher, group: &str, connection: &str, positions: &BTreeMap<i32, i64>) -> String {
    let vector: Vec<String> = positions.iter().map(|(p, o)| format!("{p}:{o}")).collect();
    let body = format!("{connection}.{}", vector.join(","));
    format!("{body}.{}", &signer.hash(&format!("{group}/{body}"))[..32])
}

/// The connection and positions a `Last-Event-ID` names, if it was signed for `group`.
pub(crate) fn verify(signer: &KeyHasher, group: &str, cursor: &str) -> Result<(String, HashMap<i32, i64>), RequestError> {
    let invalid = || RequestError::BadRequest(format!("`Last-Event-ID` is not an event id of group `{group}`'s stream"));
    let (body, signature) = cursor.rsplit_once('.').ok_or_else(invalid)?;
    let expected = &signer.hash(&format!("{group}/{body}"))[..32];
    let same = expected.len() == signature.len() && expected.bytes().zip(signature.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if !same {
        return Err(invalid());
    }
    let (connection, vector) = body.split_once('.').ok_or_else(invalid)?;
    let mut positions = HashMap::new();
    for item in vector.split(',').filter(|s| !s.is_empty()) {
        let (p, o) = item.split_once(':').ok_or_else(invalid)?;
        positions.insert(p.parse().map_err(|_| invalid())?, o.parse().map_err(|_| invalid())?);
    }
    Ok((connection.to_owned(), positions))
}

/// Turns a consumed message into what the stream sends (`None`: passed over).
/// One event's item as JSON bytes; `None` when it is not for this stream.
pub(crate) type Render = Box<dyn for<'m> Fn(&adapters::kafka::message::BorrowedMessage<'m>) -> Option<Vec<u8>>>;

/// What one stream holds while it runs.
pub(crate) struct Stream {
    pub state: actix_web::web::Data<State>,
    pub group: Arc<ApiGroup>,
    pub name: String,
    pub connection: String,
    pub signer: KeyHasher,
    pub start: Start,
    pub render: Render,
    pub _slot: Slot,
    /// The group's position on each partition after the last event sent.
    pub positions: BTreeMap<i32, i64>,
    /// When the stream last sent anything.
    pub last_sent: tokio::time::Instant,
    /// An error was sent: the stream ends there (the client reconnects after `retry`), never
    /// repeats it in a loop.
    pub ended: bool,
}

/// How long a client waits before it reconnects after an `error` event (SSE `retry`, ms).
const RETRY_AFTER_ERROR_MS: u64 = 3000;

impl Stream {
    /// The next chunk of the response: a batch of events, a keepalive, or the error that ends it.
    pub async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.ended {
            return None;
        }
        loop {
            if let Some(chunk) = self.poll().await {
                self.last_sent = tokio::time::Instant::now();
                return chunk;
            }
            if self.last_sent.elapsed() >= HEARTBEAT {
                self.last_sent = tokio::time::Instant::now();
                return Some(Bytes::from_static(b": keepalive\n\n"));
            }
        }
    }

    /// One wait for events: `Some(chunk)` to send (`Some(None)` ends the stream), `None` when
    /// nothing came.
    async fn poll(&mut self) -> Option<Option<Bytes>> {
        let limits = &self.state.limits;
        let answer = self
            .group
            .next(&self.state.positions, &self.connection, None, self.start, BATCH, POLL, Duration::from_millis(limits.ack_timeout_ms))
            .await;
        let answer = match answer {
            Ok(a) => a,
            // Superseded by a resume: end quietly.
            Err(RequestError::Gone(_)) => return Some(None),
            Err(err) => {
                let data = json!({"error": adapters::http::Problem::code(&err), "message": err.to_string()});
                self.ended = true;
                return Some(Some(Bytes::from(format!("event: error\nretry: {RETRY_AFTER_ERROR_MS}\ndata: {data}\n\n"))));
            }
        };
        for (p, pos) in &answer.from {
            self.positions.entry(*p).or_insert(*pos);
        }
        let messages = answer.messages;
        if messages.is_empty() {
            return None;
        }
        let mut out = String::new();
        for m in &messages {
            self.positions.insert(m.partition(), m.offset() + 1);
            let Some(event) = (self.render)(m) else { continue };
            let id = sign(&self.signer, &self.name, &self.connection, &self.positions);
            // JSON holds no raw newline: the item is one `data:` line.
            out.push_str(&format!("id: {id}\nevent: metadata\ndata: {}\n\n", String::from_utf8_lossy(&event)));
        }
        self.state.metrics.events_delivered.add(messages.len() as u64, &[opentelemetry::KeyValue::new("group", self.name.clone())]);
        (!out.is_empty()).then(|| Some(Bytes::from(out)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_are_bound_to_their_group() {
        let signer = KeyHasher::new(&adapters::Secret::new("s".repeat(32)));
        let positions: BTreeMap<i32, i64> = [(0, 12), (1, 7), (2, 0)].into();
        let id = sign(&signer, "g", "abc", &positions);
        let (connection, back) = verify(&signer, "g", &id).unwrap();
        assert_eq!(connection, "abc");
        assert_eq!(back, positions.into_iter().collect());
        assert!(verify(&signer, "other", &id).is_err());
        assert!(verify(&signer, "g", &id.replace("0:12", "0:99")).is_err());
        assert!(verify(&signer, "g", "nonsense").is_err());
    }
}

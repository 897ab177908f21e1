//! `Idempotency-Key` on `/ingest`: a client retry carrying the same key within
//! `gateway.idempotency_window_s` gets the original answer, and no second event is produced.
//!
//! The Redis record (`adapters::store::idempotency`, key `<prefix>idempotency:<key>`) holds `{"state":"pending"|"done","fp":…,"status":…,
//! "body":…}`. It is claimed with `SET NX` and a short expiry while the produce is in flight
//! (so a crashed gateway does not block the key for the whole window), then overwritten with the
//! answer and the full window. `fp` fingerprints the body: the same key with another body is
//! refused (422), as a reused key is a client bug.

use std::time::Duration;

use adapters::http::RequestError;
use serde_json::{json, Value};

use crate::routes::IngestError;
use crate::State;

/// Longest accepted key.
const MAX_KEY_LEN: usize = 255;

pub(crate) enum Claim {
    /// First time: go ahead, then [`complete`] or [`release`].
    New(String),
    /// Answered before: here is the answer.
    Replay(u16, Value),
}

/// Stable across processes (unlike `DefaultHasher`): FNV-1a, 64 bits.
fn fingerprint(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

fn redis_error(state: &State, err: impl std::fmt::Display) -> IngestError {
    IngestError::Request(RequestError::Unavailable {
        what: format!("cannot check the Idempotency-Key (redis: {err})"),
        retry_after_s: state.retry_after_s,
    })
}

/// The client's `Idempotency-Key`, checked.
///
/// # Errors
/// 400 when it is empty, too long or holds control characters.
pub(crate) fn check_key(key: &str) -> Result<&str, IngestError> {
    if key.is_empty() || key.len() > MAX_KEY_LEN || key.chars().any(char::is_control) {
        return Err(IngestError::bad_request(format!("Idempotency-Key must be 1 to {MAX_KEY_LEN} printable characters")));
    }
    Ok(key)
}

/// Claims `key` (the client's key, scoped by its API key's id) for this request, or finds its
/// earlier answer.
///
/// # Errors
/// 409 while the first request is in flight, 422 for another body under the same key, 503 when
/// Redis does not answer.
pub(crate) async fn claim(state: &State, key: &str, body: &[u8]) -> Result<Claim, IngestError> {
    let redis_key = state.claims.key(key);
    let fp = fingerprint(body);
    let pending = json!({"state": "pending", "fp": fp}).to_string();
    // Short, so that a crashed gateway's claim lapses soon.
    let hold = state.produce_timeout + Duration::from_secs(5);
    let existing = state.claims.claim(&redis_key, &pending, hold).await.map_err(|e| redis_error(state, e))?;
    let Some(existing) = existing else { return Ok(Claim::New(redis_key)) };
    let record: Value = serde_json::from_str(&existing).unwrap_or(Value::Null);
    if record["fp"] != json!(fp) {
        return Err(IngestError::IdempotencyMismatch(format!(
            "Idempotency-Key `{key}` was used for a different request body"
        )));
    }
    match record["state"].as_str() {
        Some("done") => Ok(Claim::Replay(record["status"].as_u64().unwrap_or(202) as u16, record["body"].clone())),
        _ => Err(IngestError::Conflict(format!("a request with Idempotency-Key `{key}` is still in flight; retry later"))),
    }
}

/// Records the answer for the window.
pub(crate) async fn complete(state: &State, redis_key: &str, body: &[u8], status: u16, answer: &Value) {
    let record = json!({"state": "done", "fp": fingerprint(body), "status": status, "body": answer}).to_string();
    if let Err(err) = state.claims.complete(redis_key, record, state.idempotency_window).await {
        // The event is in Kafka; a retry after the claim expires would produce it again.
        tracing::warn!(error = %err, "could not record the idempotent answer");
    }
}

/// Frees the key after a failure, so the client's retry can go ahead.
pub(crate) async fn release(state: &State, redis_key: &str) {
    let _ = state.claims.release(redis_key).await;
}

#[cfg(test)]
mod tests {
    use super::fingerprint;

    #[test]
    fn fingerprints_are_stable_and_tell_bodies_apart() {
        assert_eq!(fingerprint(b""), "cbf29ce484222325");
        assert_eq!(fingerprint(b"a"), "af63dc4c8601ec8c");
        assert_ne!(fingerprint(b"{\"id\":\"1\"}"), fingerprint(b"{\"id\":\"2\"}"));
    }
}

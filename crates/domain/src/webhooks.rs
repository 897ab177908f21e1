//! Webhook subscriptions: what a subscription is, how a delivery is signed (Standard Webhooks
//! 1.0), and when a failed delivery is tried again.
//!
//! A delivery is a `POST` of the event with three headers: `webhook-id` (the same on every
//! retry: the receiver's idempotency key), `webhook-timestamp` (Unix seconds of the attempt) and
//! `webhook-signature` (`v1,<base64 HMAC-SHA-256 of "{id}.{timestamp}.{body}">`, several
//! space-separated while a rotated secret's predecessor is still honoured).

use std::time::Duration;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;

/// A webhook secret: `whsec_` + base64 of the signing key (32 bytes when metastream made it).
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookSecret(Vec<u8>);

impl std::fmt::Debug for WebhookSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSecret(…)")
    }
}

impl WebhookSecret {
    pub const PREFIX: &'static str = "whsec_";

    /// Parses `whsec_<base64>`; the key must be 24 to 64 bytes (the specification's bounds).
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text.strip_prefix(Self::PREFIX).ok_or("a webhook secret starts with `whsec_`")?;
        let key = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|e| format!("a webhook secret is base64 after `whsec_`: {e}"))?;
        if !(24..=64).contains(&key.len()) {
            return Err(format!("a webhook secret's key is 24 to 64 bytes, not {}", key.len()));
        }
        Ok(WebhookSecret(key))
    }

    /// The secret of a subscription's `generation`, derived from the server secret: nothing
    /// usable is stored (a dump of Redis holds no webhook secret), every replica derives the
    /// same one, and rotating is counting up.
    pub fn derive(server_secret: &[u8], subscription: &str, generation: u32) -> Self {
        let mut mac = Hmac::<Sha256>::new_from_slice(server_secret).expect("HMAC takes keys of any length");
        mac.update(format!("metastream webhook secret v1\0{subscription}\0{generation}").as_bytes());
        WebhookSecret(mac.finalize().into_bytes().to_vec())
    }

    /// The `whsec_…` text a receiver configures.
    pub fn expose(&self) -> String {
        format!("{}{}", Self::PREFIX, base64::engine::general_purpose::STANDARD.encode(&self.0))
    }

    /// `v1,<base64 signature>` of `{id}.{timestamp}.{body}`.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// Whether `header` (a `webhook-signature` value) holds this secret's signature, compared in
    /// constant time. A receiver's check; metastream's tests use it.
    pub fn verify(&self, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
        let expected = self.sign(id, timestamp, body);
        header.split(' ').any(|candidate| {
            candidate.len() == expected.len() && candidate.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
        })
    }
}

/// How a subscription's deliveries look: `metastream` (`{"type", "timestamp", "data"}`,
/// `application/json`) or `cloudevents` (CloudEvents 1.0 structured JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// `{"type": "metadata.processed", "timestamp", "data": <event>}` (Standard Webhooks'
    /// payload structure), `application/json`.
    #[default]
    Metastream,
    /// A CloudEvents 1.0 structured-mode object, `application/cloudevents+json`.
    Cloudevents,
}

/// Whether a subscription delivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SubscriptionState {
    #[default]
    Active,
    /// Not delivering; its position stays where it stopped (`disabled_reason` says why).
    Disabled,
}

/// A subscription as stored (Redis hash `subscriptions`, id → this as JSON). Its schema is the
/// API's view of it (`Subscription`, with what the gateway adds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Subscription {
    /// `sub_` + 32 hex digits.
    pub id: String,
    /// Where deliveries are POSTed (http or https).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A condition in the operations' `when` language: events it rejects are not sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub filter: Option<Value>,
    /// `fields` projection (`payload.title,metadata.tags`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<String>,
    // Defaults for records stored before the member existed; always written.
    #[serde(default)]
    #[schema(required = true)]
    pub format: WebhookFormat,
    #[serde(default)]
    #[schema(inline, required = true)]
    pub state: SubscriptionState,
    /// Why it is disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_reason: Option<String>,
    /// Which derived secret signs: counts up with each rotation.
    pub secret_generation: u32,
    /// Until when the previous generation signs too (after a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_until: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

impl Subscription {
    /// Whether `id` has the form of a subscription id (checked before any lookup).
    pub fn is_id(id: &str) -> bool {
        id.len() == 36 && id.starts_with("sub_") && id[4..].bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    }

    /// The secrets that sign a delivery at `now`: the current one, and the previous one while
    /// a rotation's overlap lasts.
    pub fn signing_secrets(&self, server_secret: &[u8], now: DateTime<Utc>) -> Vec<WebhookSecret> {
        let mut secrets = vec![WebhookSecret::derive(server_secret, &self.id, self.secret_generation)];
        if self.secret_generation > 0 && self.previous_secret_until.is_some_and(|until| now < until) {
            secrets.push(WebhookSecret::derive(server_secret, &self.id, self.secret_generation - 1));
        }
        secrets
    }
}

/// The `webhook-signature` header: one `v1,…` per secret, space-separated.
pub fn signature_header(secrets: &[WebhookSecret], id: &str, timestamp: i64, body: &[u8]) -> String {
    secrets.iter().map(|s| s.sign(id, timestamp, body)).collect::<Vec<_>>().join(" ")
}

/// What a receiver's answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: delivered.
    Delivered,
    /// 410 Gone: the endpoint is gone; the subscription is disabled.
    Gone,
    /// Anything else (3xx included): tried again later.
    Retry,
}

impl Verdict {
    pub fn of(status: u16) -> Self {
        match status {
            200..=299 => Verdict::Delivered,
            410 => Verdict::Gone,
            _ => Verdict::Retry,
        }
    }
}

/// When failed deliveries are tried again: capped exponential backoff with jitter, a receiver's
/// `Retry-After` honoured, and a budget of attempts after which the event is dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial: Duration,
    pub max: Duration,
}

impl RetryPolicy {
    /// The longest `Retry-After` honoured: a receiver asking for more is asked again then.
    pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

    /// How long to wait after failed attempt `attempt` (1-based): `initial · 2^(attempt-1)`,
    /// capped at `max`, scaled by `jitter` in [0, 1) to between half and all of it ("equal
    /// jitter"); a `Retry-After` the receiver sent replaces it (up to [`Self::MAX_RETRY_AFTER`]).
    /// `None` when the budget is spent.
    pub fn delay(&self, attempt: u32, retry_after: Option<Duration>, jitter: f64) -> Option<Duration> {
        if attempt >= self.max_attempts {
            return None;
        }
        if let Some(wait) = retry_after {
            return Some(wait.min(Self::MAX_RETRY_AFTER));
        }
        let exp = self.initial.saturating_mul(1u32 << (attempt - 1).min(20)).min(self.max);
        Some(exp.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0)))
    }
}

/// A `Retry-After` value: delay-seconds or an HTTP date, relative to `now`.
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Standard Webhooks reference libraries' test vector.
    #[test]
    fn signs_the_specification_test_vector() {
        let secret = WebhookSecret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        let signature = secret.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body);
        assert_eq!(signature, "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=");
        assert!(secret.verify("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body, &format!("v1,bm90IGl0 {signature}")));
        assert!(!secret.verify("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367554, body, &signature), "the timestamp is signed");
    }

    #[test]
    fn derived_secrets_round_trip_and_differ_per_subscription_and_generation() {
        let a = WebhookSecret::derive(b"server secret of thirty-two bytes", "sub_1", 0);
        assert_eq!(WebhookSecret::parse(&a.expose()).unwrap(), a);
        assert!(a.expose().starts_with("whsec_"));
        assert_ne!(a, WebhookSecret::derive(b"server secret of thirty-two bytes", "sub_2", 0));
        assert_ne!(a, WebhookSecret::derive(b"server secret of thirty-two bytes", "sub_1", 1));
        assert_ne!(a, WebhookSecret::derive(b"another server secret entirely!!", "sub_1", 0));
    }

    #[test]
    fn malformed_secrets_are_refused() {
        assert!(WebhookSecret::parse("C2FVsBQIhrscChlQIMV+b5sSYspob7oD").is_err());
        assert!(WebhookSecret::parse("whsec_!!!").is_err());
        assert!(WebhookSecret::parse("whsec_c2hvcnQ=").is_err(), "too short a key");
    }

    #[test]
    fn a_rotated_secret_signs_beside_its_predecessor_until_the_overlap_ends() {
        let now = Utc::now();
        let mut sub = Subscription {
            id: "sub_0123456789abcdef0123456789abcdef".into(),
            url: "http://127.0.0.1:1/hook".into(),
            description: None,
            filter: None,
            fields: None,
            format: WebhookFormat::Metastream,
            state: SubscriptionState::Active,
            disabled_reason: None,
            secret_generation: 1,
            previous_secret_until: Some(now + chrono::Duration::hours(1)),
            created_at: now,
            created_by: "admin".into(),
        };
        assert!(Subscription::is_id(&sub.id));
        let secrets = sub.signing_secrets(b"k", now);
        assert_eq!(secrets.len(), 2);
        let header = signature_header(&secrets, "m", 1, b"{}");
        assert!(WebhookSecret::derive(b"k", &sub.id, 0).verify("m", 1, b"{}", &header));
        assert!(WebhookSecret::derive(b"k", &sub.id, 1).verify("m", 1, b"{}", &header));
        sub.previous_secret_until = Some(now - chrono::Duration::seconds(1));
        assert_eq!(sub.signing_secrets(b"k", now).len(), 1);
    }

    #[test]
    fn only_2xx_is_success_and_410_disables() {
        assert_eq!(Verdict::of(200), Verdict::Delivered);
        assert_eq!(Verdict::of(204), Verdict::Delivered);
        assert_eq!(Verdict::of(301), Verdict::Retry);
        assert_eq!(Verdict::of(410), Verdict::Gone);
        assert_eq!(Verdict::of(429), Verdict::Retry);
        assert_eq!(Verdict::of(500), Verdict::Retry);
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_with_jitter_and_honours_retry_after() {
        let policy = RetryPolicy { max_attempts: 6, initial: Duration::from_secs(1), max: Duration::from_secs(10) };
        assert_eq!(policy.delay(1, None, 0.999_999).unwrap().as_millis(), 999);
        assert_eq!(policy.delay(1, None, 0.0), Some(Duration::from_millis(500)));
        assert_eq!(policy.delay(3, None, 0.0), Some(Duration::from_secs(2)));
        assert_eq!(policy.delay(5, None, 0.0), Some(Duration::from_secs(5)), "16 s capped at 10, halved by the jitter's floor");
        assert_eq!(policy.delay(2, Some(Duration::from_secs(7)), 0.3), Some(Duration::from_secs(7)));
        assert_eq!(policy.delay(2, Some(Duration::from_secs(1 << 20)), 0.3), Some(RetryPolicy::MAX_RETRY_AFTER));
        assert_eq!(policy.delay(6, None, 0.5), None, "the budget is six attempts");
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(Duration::from_secs(30)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

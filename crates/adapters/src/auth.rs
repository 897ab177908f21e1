//! Who is calling, and what they may do: API keys in Redis, the in-memory view every replica
//! authenticates from, and per-key rate limits shared by all replicas.
//!
//! - [`KeyStore`]: the Redis hash `<prefix>keys` (key id → [`KeyRecord`]). A record holds the
//!   key's HMAC-SHA-256 under `auth.key_secret`, never the key: a dump of Redis holds nothing
//!   that authenticates. Every change is announced on `<prefix>keys:changed`.
//! - [`Authenticator`]: every key by hash, in memory, reloaded on each announcement (and every
//!   `sources.refresh_ms` to heal a missed one), so a revocation or scope change reaches every
//!   replica within milliseconds. Authenticating does no I/O: the invariant "no route does I/O
//!   for a request before its scope is checked" holds because of it.
//! - [`RateLimiter`]: one GCRA decision per request (and per batch of events), one Lua script in
//!   Redis, so every gateway replica draws from the same allowance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::http::header;
use actix_web::HttpRequest;
use chrono::{DateTime, Utc};
use deadpool_redis::redis::AsyncCommands as _;
use crate::store::Pool;
use domain::auth::{Access, ApiKeyFormat, Forbidden, RateKind, RateLimit, Scopes};
use domain::KeySchema;
use hmac::{Hmac, Mac as _};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::http::RequestError;
pub use crate::http::{RateState, RateStates};
use crate::settings::{FailMode, Secret};
use crate::shutdown::CancellationToken;
use crate::store::{timed, StoreError};

/// A key as stored: everything but the key itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Scopes,
    pub created_at: DateTime<Utc>,
    #[serde(default)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub rate_limit: RateLimit,
    /// Who created it (a key id).
    #[serde(default)]
    pub created_by: String,
    /// HMAC-SHA-256 of the key under `auth.key_secret`, hex.
    pub hash: String,
}

/// The caller of a request, once authenticated.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    /// The key's id (`cfg-token-0` for `auth.tokens[0]`), as audit records name it.
    pub id: String,
    pub name: String,
    pub scopes: Scopes,
    pub rate_limit: RateLimit,
    pub expires_at: Option<DateTime<Utc>>,
}

impl Principal {
    /// # Errors
    /// [`RequestError::Forbidden`] naming the missing scope.
    pub fn require(&self, access: Access<'_>) -> Result<(), RequestError> {
        self.scopes.require(access).map_err(RequestError::Forbidden)
    }

    /// Whether the key may read `source`.
    pub fn may_read(&self, source: &str) -> bool {
        self.scopes.allows(Access::Read(source))
    }
}

/// HMAC-SHA-256 under the server secret.
#[derive(Clone)]
pub struct KeyHasher(Hmac<Sha256>);

impl KeyHasher {
    pub fn new(secret: &Secret) -> Self {
        KeyHasher(Hmac::new_from_slice(secret.expose().as_bytes()).expect("HMAC takes keys of any length"))
    }

    pub fn hash(&self, key: &str) -> String {
        let mut mac = self.0.clone();
        mac.update(key.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// Issues a new key: its text (shown once) and its hash.
pub fn issue(hasher: &KeyHasher) -> (String, String) {
    let random: [u8; 32] = rand::random();
    let key = ApiKeyFormat::encode(&random);
    let hash = hasher.hash(&key);
    (key, hash)
}

/// The keys in Redis.
#[derive(Clone)]
pub struct KeyStore {
    pool: Pool,
    keys: KeySchema,
    timeout: Duration,
}

impl KeyStore {
    pub fn new(pool: Pool, keys: KeySchema, timeout: Duration) -> Self {
        KeyStore { pool, keys, timeout }
    }

    /// Stores `record` (new or changed) and announces it.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn put(&self, record: &KeyRecord) -> Result<(), StoreError> {
        let json = serde_json::to_string(record).expect("a key record serializes");
        crate::store::put_announced(&self.pool, self.timeout, &self.keys.api_keys(), &record.id, json, &self.keys.api_keys_changed()).await
    }

    /// Deletes a key and announces it. Returns whether it existed.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn delete(&self, id: &str) -> Result<bool, StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let deleted: i64 = crate::store::announced(&mut conn, "HDEL", &self.keys.api_keys(), &[id], &self.keys.api_keys_changed(), id).await?;
            // Another key (another slot in a cluster): a second call.
            let () = conn.hdel(self.keys.api_keys_last_used(), id).await?;
            Ok::<_, StoreError>(deleted == 1)
        })
        .await
    }

    /// # Errors
    /// When Redis fails or the record is not one.
    pub async fn get(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        crate::store::json_hash_field(&self.pool, &self.keys.api_keys(), id, self.timeout, "key").await
    }

    /// Every key; a record that does not parse is logged and left out.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn all(&self) -> Result<Vec<KeyRecord>, StoreError> {
        // A record that does not parse authenticates nothing.
        crate::store::json_hash(&self.pool, &self.keys.api_keys(), self.timeout, "API key").await
    }

    /// When each key last authenticated a request.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn last_used(&self) -> Result<HashMap<String, String>, StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            Ok::<_, StoreError>(conn.hgetall(self.keys.api_keys_last_used()).await?)
        })
        .await
    }

    async fn record_last_used(&self, used: &[(String, String)]) -> Result<(), StoreError> {
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.hset_multiple(self.keys.api_keys_last_used(), used).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }

    pub fn changes_channel(&self) -> String {
        self.keys.api_keys_changed()
    }
}

/// Authenticates requests from memory: the configured tokens and every stored key.
pub struct Authenticator {
    /// `auth.tokens` and `auth.admin_tokens`, compared in constant time.
    tokens: Vec<(Secret, Arc<Principal>)>,
    hasher: Option<KeyHasher>,
    store: KeyStore,
    /// Stored keys by hash; None until loaded once.
    keys: RwLock<Option<HashMap<String, Arc<Principal>>>>,
    /// Key id → when it was last used, not yet written to Redis.
    used: Mutex<HashMap<String, DateTime<Utc>>>,
}

impl Authenticator {
    /// An authenticator for the configured tokens and the keys of `store` (loaded by
    /// [`Authenticator::refresh`]).
    pub fn new(auth: &crate::settings::AuthSettings, store: KeyStore) -> Self {
        let config = |prefix: &str, list: &[Secret], scopes: fn() -> Scopes| -> Vec<(Secret, Arc<Principal>)> {
            list.iter()
                .enumerate()
                .map(|(i, t)| {
                    let principal = Principal {
                        id: format!("{prefix}-{i}"),
                        name: format!("auth.{}[{i}]", prefix.trim_start_matches("cfg-").replace('-', "_") + "s"),
                        scopes: scopes(),
                        rate_limit: RateLimit::default(),
                        expires_at: None,
                    };
                    (t.clone(), Arc::new(principal))
                })
                .collect()
        };
        let mut tokens = config("cfg-token", &auth.tokens, Scopes::all_data);
        tokens.extend(config("cfg-admin-token", &auth.admin_tokens, Scopes::admin));
        Authenticator {
            tokens,
            hasher: auth.key_secret.as_ref().filter(|s| !s.expose().is_empty()).map(KeyHasher::new),
            store,
            keys: RwLock::new(None),
            used: Mutex::new(HashMap::new()),
        }
    }

    pub fn hasher(&self) -> Option<&KeyHasher> {
        self.hasher.as_ref()
    }

    pub fn store(&self) -> &KeyStore {
        &self.store
    }

    /// The caller of `req`, from `Authorization: Bearer <key>` (the scheme in any case).
    ///
    /// # Errors
    /// 401 when the header is missing, the key malformed, unknown or expired; 503 when it is a
    /// stored key and the keys have not been loaded yet (Redis unreachable since start).
    pub fn authenticate(&self, req: &HttpRequest) -> Result<Arc<Principal>, RequestError> {
        let presented = bearer(req).ok_or(RequestError::Unauthorized)?;
        if ApiKeyFormat::is_candidate(presented) {
            ApiKeyFormat::check(presented).map_err(|e| RequestError::InvalidKey(e.to_string()))?;
            let hasher = self.hasher.as_ref().ok_or(RequestError::Unauthorized)?;
            let hash = hasher.hash(presented);
            let keys = self.keys.read().expect("keys lock");
            let keys = keys.as_ref().ok_or_else(|| RequestError::Unavailable {
                what: "API keys are not loaded yet (redis unreachable)".into(),
                retry_after_s: 1,
            })?;
            let principal = keys.get(&hash).cloned().ok_or(RequestError::Unauthorized)?;
            if principal.expires_at.is_some_and(|at| at <= Utc::now()) {
                return Err(RequestError::InvalidKey("the API key has expired".into()));
            }
            self.used.lock().expect("used lock").insert(principal.id.clone(), Utc::now());
            return Ok(principal);
        }
        // Every configured token is compared, so the time taken says nothing about which matched.
        let mut found = None;
        for (token, principal) in &self.tokens {
            if constant_time_eq(token.expose().as_bytes(), presented.as_bytes()) {
                found = Some(principal.clone());
            }
        }
        found.ok_or(RequestError::Unauthorized)
    }

    /// Authenticates and checks `access` in one step.
    ///
    /// # Errors
    /// See [`Authenticator::authenticate`]; 403 when the key lacks the scope.
    pub fn authorize(&self, req: &HttpRequest, access: Access<'_>) -> Result<Arc<Principal>, RequestError> {
        let principal = self.authenticate(req)?;
        principal.require(access)?;
        Ok(principal)
    }

    /// Re-reads every key from Redis.
    ///
    /// # Errors
    /// When Redis fails; the keys in memory are kept.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let records = self.store.all().await?;
        let keys = records
            .into_iter()
            .map(|r| {
                let principal = Principal { id: r.id, name: r.name, scopes: r.scopes, rate_limit: r.rate_limit, expires_at: r.expires_at };
                (r.hash, Arc::new(principal))
            })
            .collect();
        *self.keys.write().expect("keys lock") = Some(keys);
        Ok(())
    }

    /// Loads the keys, keeps them current (pub/sub, and every `refresh`), and writes last-used
    /// times every few seconds, until `shutdown`.
    pub fn start(self: &Arc<Self>, redis_seeds: Vec<String>, refresh: Duration, shutdown: CancellationToken) {
        let me = self.clone();
        crate::store::spawn_reloader(redis_seeds, self.store.changes_channel(), refresh, shutdown.clone(), "API keys", move || {
            let me = me.clone();
            async move { me.refresh().await }
        });
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let used: Vec<(String, String)> = std::mem::take(&mut *me.used.lock().expect("used lock"))
                    .into_iter()
                    .map(|(id, at)| (id, at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
                    .collect();
                if !used.is_empty() {
                    if let Err(err) = me.store.record_last_used(&used).await {
                        tracing::debug!(error = %err, "recording keys' last use failed; dropped (informational only)");
                    }
                }
            }
        });
    }
}

/// The token of `Authorization: Bearer <token>`; the scheme is case-insensitive (RFC 9110).
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Per-key rate limits, shared by every replica through Redis.
#[derive(Clone)]
pub struct RateLimiter {
    pool: Pool,
    keys: KeySchema,
    timeout: Duration,
    on_error: FailMode,
    metrics: Arc<crate::metrics::Metrics>,
}

impl RateLimiter {
    pub fn new(pool: Pool, keys: KeySchema, timeout: Duration, on_error: FailMode, metrics: Arc<crate::metrics::Metrics>) -> Self {
        RateLimiter { pool, keys, timeout, on_error, metrics }
    }

    /// Takes each `(kind, cost)` from the key's allowances, all or none, in one decision.
    /// Dimensions the key does not limit cost no I/O; a key without limits none at all.
    ///
    /// # Errors
    /// 429 with when to retry; 413 when a cost exceeds its burst (it could never pass); 503 when
    /// Redis cannot answer and `auth.rate_limit_on_redis_error` is `closed`.
    pub async fn take(&self, principal: &Principal, costs: &[(RateKind, u64)]) -> Result<RateStates, RequestError> {
        let limited: Vec<(RateKind, u64, domain::auth::Gcra)> =
            costs.iter().filter_map(|&(kind, cost)| principal.rate_limit.dimension(kind).map(|g| (kind, cost, g))).collect();
        if limited.is_empty() {
            return Ok(RateStates::default());
        }
        if let Some((kind, cost, gcra)) = limited.iter().find(|(_, cost, g)| *cost > u64::from(g.burst)) {
            return Err(RequestError::OverBurst { cost: *cost, burst: gcra.burst, kind: kind.as_str() });
        }
        let decision: Result<Vec<i64>, StoreError> = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let mut invocation = GCRA_SCRIPT.prepare_invoke();
            for (kind, cost, gcra) in &limited {
                invocation
                    .key(self.keys.rate_limit(&principal.id, kind.as_str()))
                    .arg(gcra.interval_us)
                    .arg(u64::from(gcra.burst) * gcra.interval_us)
                    .arg(*cost);
            }
            Ok::<_, StoreError>(invocation.invoke_async(&mut conn).await?)
        })
        .await;
        let secs = |us: i64| (us.max(0) as u64).div_ceil(1_000_000);
        match decision {
            Ok(reply) if reply.first() == Some(&1) => Ok(RateStates(
                limited
                    .iter()
                    .zip(reply[1..].chunks(2))
                    .map(|((kind, _, gcra), r)| RateState {
                        kind: *kind,
                        policy: gcra.policy(*kind),
                        remaining: r[0].max(0) as u64,
                        reset_s: secs(r[1]),
                    })
                    .collect(),
            )),
            Ok(reply) => {
                let (index, retry_us, reset_us) = (reply[1].max(1) as usize - 1, reply[2], reply[3]);
                let (kind, _, gcra) = limited[index.min(limited.len() - 1)];
                self.metrics.rate_limited.add(1, &[opentelemetry::KeyValue::new("kind", kind.as_str())]);
                Err(RequestError::RateLimited {
                    retry_after_s: secs(retry_us).max(1),
                    state: RateState { kind, policy: gcra.policy(kind), remaining: 0, reset_s: secs(reset_us) },
                })
            }
            Err(err) => {
                self.metrics.rate_limit_errors.add(1, &[]);
                match self.on_error {
                    FailMode::Open => {
                        tracing::warn!(error = %err, key_id = %principal.id, "rate limit undecided (redis); letting the request through (auth.rate_limit_on_redis_error: open)");
                        Ok(RateStates::default())
                    }
                    FailMode::Closed => Err(RequestError::Unavailable { what: format!("rate limit undecided: {err}"), retry_after_s: 1 }),
                }
            }
        }
    }
}

/// GCRA over one or more dimensions, all or none. KEYS[i] holds dimension i's theoretical
/// arrival time (µs, Redis clock); ARGV holds per dimension its emission interval (µs), burst
/// tolerance (µs: burst × interval) and cost. Returns {1, remaining_1, reset_us_1, …} when
/// allowed, {0, i, retry_after_us, reset_us} naming the first dimension that refused.
static GCRA_SCRIPT: std::sync::LazyLock<deadpool_redis::redis::Script> = std::sync::LazyLock::new(|| {
    deadpool_redis::redis::Script::new(
        r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local out = {1}
local next_tat = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[3 * i - 2])
  local tolerance = tonumber(ARGV[3 * i - 1])
  local cost = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', KEYS[i])) or now
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - tolerance
  if allow_at > now then
    return {0, i, allow_at - now, tat - now}
  end
  next_tat[i] = new_tat
  out[#out + 1] = math.floor((tolerance - (new_tat - now)) / interval)
  out[#out + 1] = new_tat - now
end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.0f', next_tat[i]), 'PX', math.ceil((next_tat[i] - now) / 1000) + 1)
end
return out
",
    )
});

/// Forbidden as a request error.
impl From<Forbidden> for RequestError {
    fn from(f: Forbidden) -> Self {
        RequestError::Forbidden(f)
    }
}

/// A new key id: `key_` and 16 hex digits. Ids name keys in the admin API, audit records and
/// logs; they authenticate nothing.
pub fn new_key_id() -> String {
    format!("key_{:016x}", rand::random::<u64>())
}

/// Whether `id` has the form of a key id.
pub fn is_key_id(id: &str) -> bool {
    id.strip_prefix("key_").is_some_and(|hex| hex.len() == 16 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::{AuthSettings, RedisSettings};

    /// A pool for a loopback port nothing listens on: every Redis call fails, fast.
    fn unreachable_pool() -> Pool {
        let settings: RedisSettings = serde_json::from_value(serde_json::json!({
            "url": "redis://127.0.0.1:1", "key_prefix": "", "pool_size": 1, "timeout_ms": 200
        }))
        .unwrap();
        crate::store::pool(&settings).unwrap()
    }

    fn authenticator(secret: &str) -> Authenticator {
        let auth = AuthSettings {
            tokens: vec![Secret::new("data-token")],
            admin_tokens: vec![Secret::new("admin-token")],
            key_secret: Some(Secret::new(secret)),
            default_rate_limit: RateLimit::default(),
            rate_limit_on_redis_error: FailMode::Open,
        };
        Authenticator::new(&auth, KeyStore::new(unreachable_pool(), KeySchema::new(""), Duration::from_millis(200)))
    }

    fn request(authorization: &str) -> HttpRequest {
        actix_web::test::TestRequest::default().insert_header((header::AUTHORIZATION, authorization)).to_http_request()
    }

    #[actix_web::test]
    async fn configured_tokens_carry_their_scopes_and_the_scheme_is_case_insensitive() {
        let auth = authenticator(&"s".repeat(32));
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            let p = auth.authenticate(&request(&format!("{scheme} data-token"))).unwrap();
            assert_eq!(p.id, "cfg-token-0");
            assert!(p.scopes.allows(Access::Ingest("anything")) && !p.scopes.allows(Access::Admin));
        }
        let admin = auth.authenticate(&request("Bearer admin-token")).unwrap();
        assert_eq!((admin.id.as_str(), admin.name.as_str()), ("cfg-admin-token-0", "auth.admin_tokens[0]"));
        assert!(matches!(auth.authenticate(&request("Bearer nope")), Err(RequestError::Unauthorized)));
        assert!(matches!(auth.authenticate(&request("Basic data-token")), Err(RequestError::Unauthorized)));
        assert!(matches!(auth.authorize(&request("Bearer data-token"), Access::Admin), Err(RequestError::Forbidden(_))));
    }

    #[actix_web::test]
    async fn a_malformed_key_is_refused_without_a_lookup_and_an_unloaded_store_is_unavailable() {
        let auth = authenticator(&"s".repeat(32));
        let hasher = auth.hasher().unwrap().clone();
        let (key, hash) = issue(&hasher);
        assert_eq!(hasher.hash(&key), hash);
        assert_ne!(KeyHasher::new(&Secret::new("t".repeat(32))).hash(&key), hash, "the hash depends on the server secret");
        let mut typo = key.clone();
        typo.replace_range(10..11, if &key[10..11] == "a" { "b" } else { "a" });
        assert!(matches!(auth.authenticate(&request(&format!("Bearer {typo}"))), Err(RequestError::InvalidKey(_))));
        // Well-formed, but the keys were never loaded (Redis unreachable): 503, not 401.
        assert!(matches!(auth.authenticate(&request(&format!("Bearer {key}"))), Err(RequestError::Unavailable { .. })));
    }

    #[actix_web::test]
    async fn a_rate_limit_redis_cannot_decide_fails_open_or_closed_as_configured() {
        let metrics = crate::metrics::Metrics::new("test", "");
        let principal = Principal {
            id: "key_0000000000000000".into(),
            name: "limited".into(),
            scopes: Scopes::all_data(),
            rate_limit: RateLimit { requests_per_s: Some(1.0), events_per_s: None, burst: None },
            expires_at: None,
        };
        let limiter = |mode| RateLimiter::new(unreachable_pool(), KeySchema::new(""), Duration::from_millis(200), mode, metrics.clone());
        assert_eq!(limiter(FailMode::Open).take(&principal, &[(RateKind::Requests, 1)]).await.unwrap(), RateStates::default());
        let closed = limiter(FailMode::Closed).take(&principal, &[(RateKind::Requests, 1)]).await;
        assert!(matches!(closed, Err(RequestError::Unavailable { .. })), "{closed:?}");
        // A cost above the burst could never pass: refused without asking Redis.
        let over = limiter(FailMode::Open).take(&principal, &[(RateKind::Requests, 5)]).await;
        assert!(matches!(over, Err(RequestError::OverBurst { cost: 5, burst: 1, .. })), "{over:?}");
        // Unlimited dimensions cost nothing.
        assert_eq!(limiter(FailMode::Closed).take(&principal, &[(RateKind::Events, 100)]).await.unwrap(), RateStates::default());
    }
}

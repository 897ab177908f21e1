//! The trust model, without I/O: API key format, scopes, and what a request needs.
//!
//! - A key is `msk_` + 32 base62 characters of randomness + 6 base62 characters of the CRC32
//!   of those 32 ([`ApiKeyFormat`]), as GitHub's `ghp_…` tokens: a mistyped or truncated key is
//!   refused before any lookup, and secret scanners can recognise a leaked one by its prefix.
//! - A [`Scope`] grants one kind of access to names matching a glob: `ingest:<source-glob>`,
//!   `consume:<group-glob>`, `read:<source-glob>`, or `admin`.
//! - Every route names the [`Access`] it needs; [`Scopes::require`] says which scope is missing.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The prefix of every API key metastream issues.
pub const KEY_PREFIX: &str = "msk_";
const RANDOM_LEN: usize = 32;
const CHECKSUM_LEN: usize = 6;
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Builds and checks the textual form of API keys.
pub struct ApiKeyFormat;

impl ApiKeyFormat {
    /// The key made of `random` (any bytes; 32 of them give 190 bits once mapped to base62).
    pub fn encode(random: &[u8; RANDOM_LEN]) -> String {
        let body: String = random.iter().map(|b| BASE62[usize::from(*b) % 62] as char).collect();
        let checksum = base62_fixed(crc32(body.as_bytes()), CHECKSUM_LEN);
        format!("{KEY_PREFIX}{body}{checksum}")
    }

    /// Whether `token` looks like one of our keys at all (so it is checked as one).
    pub fn is_candidate(token: &str) -> bool {
        token.starts_with(KEY_PREFIX)
    }

    /// Checks length, alphabet and checksum.
    ///
    /// # Errors
    /// What is wrong, without echoing the key.
    pub fn check(token: &str) -> Result<(), KeyFormatError> {
        let rest = token.strip_prefix(KEY_PREFIX).ok_or(KeyFormatError::Prefix)?;
        if rest.len() != RANDOM_LEN + CHECKSUM_LEN {
            return Err(KeyFormatError::Length);
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyFormatError::Alphabet);
        }
        let (body, checksum) = rest.split_at(RANDOM_LEN);
        if base62_fixed(crc32(body.as_bytes()), CHECKSUM_LEN) != checksum {
            return Err(KeyFormatError::Checksum);
        }
        Ok(())
    }
}

/// Why a presented `msk_` key is not well-formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyFormatError {
    #[error("an API key starts with `msk_`")]
    Prefix,
    #[error("the API key has the wrong length (truncated or mistyped?)")]
    Length,
    #[error("the API key holds characters other than letters and digits")]
    Alphabet,
    #[error("the API key's checksum does not match (mistyped?)")]
    Checksum,
}

fn base62_fixed(mut n: u32, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    String::from_utf8(out).expect("base62 is ASCII")
}

/// CRC-32 (IEEE), bitwise: keys are short and checked once per request.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xEDB8_8320 } else { crc >> 1 };
        }
    }
    !crc
}

/// A name pattern: letters, digits, `_`, `.`, `-`, and `*` (any run of characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Glob(String);

impl Glob {
    /// # Errors
    /// When the pattern is empty, longer than 64 characters, or holds other characters.
    pub fn parse(text: &str) -> Result<Glob, String> {
        if text.is_empty() || text.len() > 64 {
            return Err(format!("pattern `{text}` must be 1 to 64 characters"));
        }
        if !text.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-' | b'*')) {
            return Err(format!("pattern `{text}` may hold only letters, digits, `_`, `.`, `-` and `*`"));
        }
        Ok(Glob(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob_match(self.0.as_bytes(), name.as_bytes())
    }
}

/// Iterative wildcard match with one backtrack point: linear in practice, never exponential.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((sp, sn)) = star {
            p = sp + 1;
            n = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&b| b == b'*')
}

/// One grant of a key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Write events whose `source` matches.
    Ingest(Glob),
    /// Use API consumer groups whose name matches.
    Consume(Glob),
    /// Read records (`/metadata`) and receive events (`/consume`) of matching sources.
    Read(Glob),
    /// See matching sources without their payloads: records and events with the payload left
    /// out, dead letters without the message, counts, reasons and configurations — for those
    /// who operate the pipeline but should not read what flows through it.
    Meta(Glob),
    /// The admin API: keys, source configs, dead letters, audit.
    Admin,
}

impl Scope {
    /// # Errors
    /// When `text` is not `ingest:<glob>`, `consume:<glob>`, `read:<glob>`, `meta:<glob>` or
    /// `admin`.
    pub fn parse(text: &str) -> Result<Scope, String> {
        if text == "admin" {
            return Ok(Scope::Admin);
        }
        let (kind, pattern) = text
            .split_once(':')
            .ok_or_else(|| format!("scope `{text}` must be `ingest:<source>`, `consume:<group>`, `read:<source>`, `meta:<source>` or `admin`"))?;
        let glob = Glob::parse(pattern).map_err(|e| format!("scope `{text}`: {e}"))?;
        match kind {
            "ingest" => Ok(Scope::Ingest(glob)),
            "consume" => Ok(Scope::Consume(glob)),
            "read" => Ok(Scope::Read(glob)),
            "meta" => Ok(Scope::Meta(glob)),
            _ => Err(format!("scope `{text}`: unknown kind `{kind}` (ingest, consume, read, meta, admin)")),
        }
    }

    fn grants(&self, access: &Access<'_>) -> bool {
        match (self, access) {
            (Scope::Admin, Access::Admin | Access::View(_) | Access::AnyView) => true,
            (Scope::Read(g) | Scope::Meta(g), Access::View(s) | Access::Glimpse(s)) => g.matches(s),
            (Scope::Read(_) | Scope::Meta(_), Access::AnyView | Access::AnyGlimpse) => true,
            (Scope::Ingest(g), Access::Ingest(s)) | (Scope::Read(g), Access::Read(s)) | (Scope::Consume(g), Access::Consume(s)) => {
                g.matches(s)
            }
            (Scope::Ingest(_), Access::AnyIngest) | (Scope::Read(_), Access::AnyRead) | (Scope::Consume(_), Access::AnyConsume) => true,
            _ => false,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Ingest(g) => write!(f, "ingest:{}", g.as_str()),
            Scope::Consume(g) => write!(f, "consume:{}", g.as_str()),
            Scope::Read(g) => write!(f, "read:{}", g.as_str()),
            Scope::Meta(g) => write!(f, "meta:{}", g.as_str()),
            Scope::Admin => f.write_str("admin"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Scope::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// The API contract's schema of a scope: its text, as [`Scope::parse`] takes it.
impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .description(Some(
                "A scope: `ingest:<glob>`, `consume:<glob>`, `read:<glob>`, `meta:<glob>` (glob: letters,\ndigits, `_`, `.`, `-`, `*`), or `admin`.",
            ))
            .pattern(Some(r"^(admin|(ingest|consume|read|meta):[A-Za-z0-9_.*-]{1,64})$"))
            .into()
    }
}

impl utoipa::ToSchema for Scope {}

/// What a request is about to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access<'a> {
    /// Write an event of this source.
    Ingest(&'a str),
    /// Write events of some source (checked before the body says which).
    AnyIngest,
    /// Use this consumer group.
    Consume(&'a str),
    /// Use some consumer group.
    AnyConsume,
    /// Read this source's records or events.
    Read(&'a str),
    /// Read some source.
    AnyRead,
    /// See this source in the admin API (its config, its dead letters, a preview): `admin`, or
    /// a `read:` scope covering it. Changing anything there needs [`Access::Admin`].
    View(&'a str),
    /// See some source in the admin API (a list, filtered to what [`Access::View`] allows).
    AnyView,
    /// See this source's records and events without their payloads: a `read:` or a `meta:`
    /// scope covering it. (With `read:`, the payload too: [`Access::Read`].)
    Glimpse(&'a str),
    /// Glimpse some source.
    AnyGlimpse,
    Admin,
}

impl fmt::Display for Access<'_> {
    /// The scope that would grant it (`ingest:github`, `read:*`…).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Access::Ingest(s) => write!(f, "ingest:{s}"),
            Access::AnyIngest => f.write_str("ingest:<source>"),
            Access::Consume(g) => write!(f, "consume:{g}"),
            Access::AnyConsume => f.write_str("consume:<group>"),
            Access::Read(s) => write!(f, "read:{s}"),
            Access::AnyRead | Access::AnyView => f.write_str("read:<source>"),
            Access::View(s) => write!(f, "read:{s}"),
            // `read:` grants it too, and is what most callers want.
            Access::Glimpse(s) => write!(f, "read:{s}"),
            Access::AnyGlimpse => f.write_str("read:<source>"),
            Access::Admin => f.write_str("admin"),
        }
    }
}

/// The scopes of one key.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scopes(Vec<Scope>);

impl Scopes {
    pub fn new(scopes: Vec<Scope>) -> Self {
        Scopes(scopes)
    }

    /// Every ingest, consume and read scope (what `auth.tokens` grant).
    pub fn all_data() -> Self {
        let any = || Glob("*".into());
        Scopes(vec![Scope::Ingest(any()), Scope::Consume(any()), Scope::Read(any())])
    }

    pub fn admin() -> Self {
        Scopes(vec![Scope::Admin])
    }

    pub fn allows(&self, access: Access<'_>) -> bool {
        self.0.iter().any(|s| s.grants(&access))
    }

    /// How much of `source`'s events and records these scopes are shown.
    pub fn sight(&self, source: &str) -> Sight {
        if self.allows(Access::Read(source)) {
            Sight::Full
        } else if self.allows(Access::Glimpse(source)) {
            Sight::WithoutPayload
        } else {
            Sight::Nothing
        }
    }

    /// Whether these scopes read every source (`read:*`): a reader need not look at which
    /// source an event is of.
    pub fn reads_every_source(&self) -> bool {
        self.0.iter().any(|s| matches!(s, Scope::Read(g) if g.0.bytes().all(|b| b == b'*')))
    }

    /// # Errors
    /// [`Forbidden`] naming the scope `access` needs.
    pub fn require(&self, access: Access<'_>) -> Result<(), Forbidden> {
        if self.allows(access) {
            Ok(())
        } else {
            Err(Forbidden { required: access.to_string() })
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// How much of a source's events and records a key is shown (see [`Scopes::sight`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// Everything (`read:`).
    Full,
    /// All but the payload (`meta:`).
    WithoutPayload,
    /// Nothing.
    Nothing,
}

/// A request needs a scope its key lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("this key lacks the scope `{required}`")]
pub struct Forbidden {
    /// The scope that would grant the request.
    pub required: String,
}

/// A key's rate limits: each dimension refills at its rate and holds at most `burst`; a
/// dimension left out is not limited.
// The schema's bounds are `validate`'s; `deny_unknown_fields` says what the hand-written
// `Deserialize` below does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub requests_per_s: Option<f64>,
    /// Events a second (a batch of n events costs n).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(exclusive_minimum = 0.0, maximum = 1000000.0)]
    pub events_per_s: Option<f64>,
    /// Most a key may spend at once (default: one second's worth, at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 4294967295_u64)]
    pub burst: Option<u32>,
}

/// Only from a JSON object (serde's derive would also take an array of the members in order).
impl<'de> Deserialize<'de> for RateLimit {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Members {
            #[serde(default)]
            requests_per_s: Option<f64>,
            #[serde(default)]
            events_per_s: Option<f64>,
            #[serde(default)]
            burst: Option<u32>,
        }
        let map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let m: Members = serde_json::from_value(serde_json::Value::Object(map)).map_err(serde::de::Error::custom)?;
        Ok(RateLimit { requests_per_s: m.requests_per_s, events_per_s: m.events_per_s, burst: m.burst })
    }
}

impl RateLimit {
    /// # Errors
    /// When a rate is not a positive finite number or the burst is 0.
    pub fn validate(&self) -> Result<(), String> {
        for (name, rate) in [("requests_per_s", self.requests_per_s), ("events_per_s", self.events_per_s)] {
            if rate.is_some_and(|r| !(r.is_finite() && r > 0.0 && r <= 1e6)) {
                return Err(format!("rate_limit.{name} must be a number above 0 and at most 1000000"));
            }
        }
        if self.burst == Some(0) {
            return Err("rate_limit.burst must be at least 1".into());
        }
        Ok(())
    }

    /// The GCRA parameters of one dimension: the emission interval and the burst, or None when
    /// the dimension is unlimited.
    pub fn dimension(&self, kind: RateKind) -> Option<Gcra> {
        let rate = match kind {
            RateKind::Requests => self.requests_per_s?,
            RateKind::Events => self.events_per_s?,
        };
        let burst = self.burst.unwrap_or_else(|| (rate.ceil() as u32).max(1));
        Some(Gcra { interval_us: (1e6 / rate).round().max(1.0) as u64, burst, rate })
    }
}

/// One limited dimension of a key's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    Requests,
    Events,
}

impl RateKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RateKind::Requests => "requests",
            RateKind::Events => "events",
        }
    }
}

/// Generic cell rate algorithm parameters (one request of cost `c` moves the theoretical
/// arrival time by `c * interval`; it is refused while that would pass `now + burst * interval`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gcra {
    pub interval_us: u64,
    pub burst: u32,
    pub rate: f64,
}

impl Gcra {
    /// The `RateLimit-Policy` item: `"requests";q=100;w=1` (quota per window of `w` seconds).
    pub fn policy(&self, kind: RateKind) -> String {
        let window = (f64::from(self.burst) / self.rate).ceil().max(1.0) as u64;
        format!("\"{}\";q={};w={window}", kind.as_str(), self.burst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> String {
        let mut random = [0u8; 32];
        for (i, b) in random.iter_mut().enumerate() {
            *b = seed.wrapping_mul(31).wrapping_add(i as u8 * 7);
        }
        ApiKeyFormat::encode(&random)
    }

    #[test]
    fn issued_keys_pass_their_own_check_and_a_single_typo_fails_it() {
        for seed in 0..50 {
            let k = key(seed);
            assert_eq!(k.len(), 4 + 32 + 6);
            assert_eq!(ApiKeyFormat::check(&k), Ok(()), "{k}");
            // Change each character of the body in turn: the checksum catches it.
            for i in 4..k.len() {
                let mut typo = k.clone().into_bytes();
                typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
                let typo = String::from_utf8(typo).unwrap();
                assert_eq!(ApiKeyFormat::check(&typo), Err(KeyFormatError::Checksum), "{typo}");
            }
        }
        assert_eq!(ApiKeyFormat::check(&key(1)[..30]), Err(KeyFormatError::Length));
        assert_eq!(ApiKeyFormat::check("msk_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!"), Err(KeyFormatError::Alphabet));
        assert_eq!(ApiKeyFormat::check("your-secret-key"), Err(KeyFormatError::Prefix));
    }

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn globs_match_whole_names() {
        let g = |p: &str| Glob::parse(p).unwrap();
        assert!(g("jira").matches("jira"));
        assert!(!g("jira").matches("jira2"));
        assert!(g("team-a-*").matches("team-a-x"));
        assert!(g("team-a-*").matches("team-a-"));
        assert!(!g("team-a-*").matches("team-b-x"));
        assert!(g("*").matches("anything"));
        assert!(g("a*b*c").matches("aXXbYYc"));
        assert!(!g("a*b*c").matches("aXXbYY"));
        assert!(g("*-prod").matches("jira-prod"));
        assert!(Glob::parse("a b").is_err());
        assert!(Glob::parse("").is_err());
        // Pathological patterns stay fast.
        let long = "a".repeat(5000);
        assert!(!g("*a*a*a*a*a*a*a*b").matches(&long));
    }

    #[test]
    fn scopes_parse_print_and_grant() {
        let scopes: Scopes = serde_json::from_str(r#"["ingest:jira","consume:team-a-*","read:jira"]"#).unwrap();
        assert_eq!(serde_json::to_string(&scopes).unwrap(), r#"["ingest:jira","consume:team-a-*","read:jira"]"#);
        assert!(scopes.allows(Access::Ingest("jira")));
        assert_eq!(scopes.require(Access::Ingest("github")).unwrap_err().required, "ingest:github");
        assert!(scopes.allows(Access::Consume("team-a-1")));
        assert_eq!(scopes.require(Access::Consume("team-b")).unwrap_err().to_string(), "this key lacks the scope `consume:team-b`");
        assert_eq!(scopes.require(Access::Read("github")).unwrap_err().required, "read:github");
        assert!(!scopes.allows(Access::Admin));
        assert!(scopes.allows(Access::AnyIngest));
        assert!(Scopes::admin().allows(Access::Admin));
        assert!(!Scopes::admin().allows(Access::AnyIngest));
        assert!(Scopes::all_data().allows(Access::Read("x")));
        assert!(Scopes::all_data().reads_every_source());
        assert!(!scopes.reads_every_source());
        assert!(!Scopes::admin().reads_every_source());
        let prefixed: Scopes = serde_json::from_str(r#"["read:j*"]"#).unwrap();
        assert!(!prefixed.reads_every_source());
        for bad in ["write:x", "ingest:", "ingest", "read:a/b", "ADMIN"] {
            assert!(Scope::parse(bad).is_err(), "{bad}");
        }
    }

    /// The admin API's views: `admin` sees every source, `read:<glob>` the sources it covers,
    /// and neither `ingest:` nor `consume:` sees any; a refusal names the `read:` scope.
    #[test]
    fn admin_views_are_seen_by_admin_and_by_covering_read_scopes() {
        let reader = Scopes::new(vec![Scope::parse("read:jira-*").unwrap()]);
        assert!(reader.allows(Access::AnyView) && reader.allows(Access::View("jira-cloud")));
        assert!(!reader.allows(Access::View("github")) && !reader.allows(Access::Admin));
        assert_eq!(reader.require(Access::View("github")).unwrap_err().required, "read:github");
        assert!(Scopes::admin().allows(Access::View("github")) && Scopes::admin().allows(Access::AnyView));
        let writer = Scopes::new(vec![Scope::parse("ingest:*").unwrap(), Scope::parse("consume:*").unwrap()]);
        assert!(!writer.allows(Access::AnyView) && !writer.allows(Access::View("jira")));
    }

    /// `meta:<glob>` sees what `read:` sees in the admin API and glimpses the sources it covers
    /// (records and events without payloads), and never reads them.
    #[test]
    fn a_meta_scope_sees_and_glimpses_and_never_reads() {
        let meta = Scopes::new(vec![Scope::parse("meta:jira").unwrap()]);
        assert_eq!(serde_json::to_string(&meta).unwrap(), r#"["meta:jira"]"#);
        assert!(meta.allows(Access::AnyView) && meta.allows(Access::View("jira")) && meta.allows(Access::Glimpse("jira")) && meta.allows(Access::AnyGlimpse));
        assert!(!meta.allows(Access::Read("jira")) && !meta.allows(Access::AnyRead) && !meta.allows(Access::Glimpse("github")));
        assert_eq!(meta.require(Access::Read("jira")).unwrap_err().required, "read:jira");
        assert_eq!(meta.require(Access::Glimpse("github")).unwrap_err().required, "read:github", "the scope most callers want");
        let reader = Scopes::new(vec![Scope::parse("read:*").unwrap()]);
        assert!(reader.allows(Access::Glimpse("jira")), "who may read may glimpse");
        assert!(!Scopes::admin().allows(Access::Glimpse("jira")), "admin is the admin API's, not the data's");
        let both = Scopes::new(vec![Scope::parse("read:jira").unwrap(), Scope::parse("meta:*").unwrap()]);
        assert_eq!((both.sight("jira"), both.sight("github")), (Sight::Full, Sight::WithoutPayload));
        assert_eq!(reader.sight("x"), Sight::Full);
        assert_eq!(Scopes::admin().sight("jira"), Sight::Nothing);
    }

    /// The API contract's pattern of a scope takes exactly what `Scope::parse` takes.
    #[test]
    fn the_scope_schema_is_the_parser() {
        let schema = serde_json::to_value(<Scope as utoipa::PartialSchema>::schema()).unwrap();
        let pattern = regex::Regex::new(schema["pattern"].as_str().unwrap()).unwrap();
        let long = format!("read:{}", "a".repeat(64));
        let too_long = format!("read:{}", "a".repeat(65));
        let samples = ["admin", "ingest:jira", "consume:team-a-*", "read:*", "read:a.b_c-D9", "meta:jira", "meta:", "write:x", "ingest:", "ingest", "read:a/b", "ADMIN", "admin:x", "read:é", &long, &too_long];
        for s in samples {
            assert_eq!(pattern.is_match(s), Scope::parse(s).is_ok(), "{s}");
        }
    }

    #[test]
    fn rate_limits_validate_and_derive_gcra() {
        let r = RateLimit { requests_per_s: Some(10.0), events_per_s: None, burst: None };
        assert_eq!(r.dimension(RateKind::Requests), Some(Gcra { interval_us: 100_000, burst: 10, rate: 10.0 }));
        assert_eq!(r.dimension(RateKind::Events), None);
        assert_eq!(r.dimension(RateKind::Requests).unwrap().policy(RateKind::Requests), "\"requests\";q=10;w=1");
        assert!(RateLimit { requests_per_s: Some(0.0), ..r }.validate().is_err());
        assert!(RateLimit { burst: Some(0), ..r }.validate().is_err());
        assert!(r.validate().is_ok());
        assert!(serde_json::from_str::<RateLimit>("[1, 2, 3]").is_err());
        assert!(serde_json::from_str::<RateLimit>(r#"{"requests_per_s": 1, "other": 2}"#).is_err());
        assert_eq!(serde_json::from_str::<RateLimit>(r#"{"burst": 3}"#).unwrap().burst, Some(3));
    }
}

//! Dead letters in the admin API:
//!
//! - `GET /v1/dead-letters?source=&reason=&limit=&cursor=`: a page of the dead-letter topic,
//!   oldest first, with the headers that say why; `next_cursor` continues.
//! - `POST /v1/dead-letters/replay` with `{"items": [{"partition", "offset"}…]}` or
//!   `{"source": "...", "reason"?: "..."}`: sends each selected message back to the topic it
//!   came from, unchanged (same key, same event id), e.g. after a config fix. A message is
//!   replayed once; `"force": true` replays it again. A reference (a dead letter standing for
//!   an original too large for the dead-letter topic, `"reference": true`) is not replayed: it
//!   names where the original is. A call replays at most 1,000 and reads for at most 5 s; when it
//!   did not read to the end, it answers `"complete": false` with a `next_cursor` to call again
//!   with (as `cursor`).
//!
//! Listing needs `admin` or a `read:<glob>` scope: a `read:` key sees the dead letters of the
//! sources it covers only (a `source` it does not cover is a 403). Replaying needs `admin`.
//!
//! Reading uses a consumer outside any group (assigned partitions), so it never moves anyone's
//! offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use adapters::http::{RequestError, read_body, require_json};
use domain::schema::headers;
use adapters::auth::Principal;
use domain::auth::Access;
use domain::DeadLetterReason;
use adapters::kafka::message::{Headers as _, Message as _, OwnedMessage};
use adapters::kafka::{Record, Scanned};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use crate::admin::AdminError;
use crate::State;

adapters::routes! { pub(crate) fn configure / ROUTES {
    GET "/v1/dead-letters" => list,
    POST "/v1/dead-letters/replay" => replay,
} }

/// The longest a page read may take.
const READ_DEADLINE: Duration = Duration::from_secs(5);
const MAX_PAGE: usize = 1000;

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Filter {
    source: Option<String>,
    reason: Option<DeadLetterReason>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    source: Option<String>,
    reason: Option<DeadLetterReason>,
    limit: Option<usize>,
    /// `partition:offset,...`: where the previous page stopped.
    cursor: Option<String>,
}

fn header<'a>(m: &'a OwnedMessage, name: &str) -> Option<&'a str> {
    adapters::stage::headers::header(m, name)
}

fn matches(m: &OwnedMessage, f: &Filter) -> bool {
    f.source.as_deref().is_none_or(|s| header(m, headers::SOURCE) == Some(s))
        && f.reason.is_none_or(|r| header(m, headers::DLQ_REASON) == Some(r.as_str()))
}

/// A page of the dead-letter topic.
#[derive(Serialize, ToSchema)]
struct DeadLetterPage<'a> {
    /// Oldest first.
    #[schema(inline)]
    dead_letters: Vec<DeadLetter<'a>>,
    count: usize,
    /// Pass as `cursor` for the next page.
    next_cursor: String,
}

/// One dead letter, with what its headers say about why and where from.
#[derive(Serialize, ToSchema)]
struct DeadLetter<'a> {
    /// Its position on the dead-letter topic (what `POST /v1/dead-letters/replay` names).
    partition: i32,
    offset: i64,
    #[schema(value_type = Option<String>)]
    key: Option<std::borrow::Cow<'a, str>>,
    source: Option<&'a str>,
    event_id: Option<&'a str>,
    /// The stage that dead-lettered it.
    stage: Option<&'a str>,
    /// Why (a `DeadLetterReason`).
    reason: Option<&'a str>,
    error: Option<&'a str>,
    /// The operation that failed, and its index in the source's list.
    operation: Option<&'a str>,
    operation_index: Option<usize>,
    /// Whether this stands for an original too large for the dead-letter topic (`payload` says
    /// where it is); a reference is not replayed.
    reference: bool,
    #[schema(inline)]
    original: Original<'a>,
    /// The message: its JSON, or its text when it is not JSON; `null` when `payload_shown` is
    /// `hidden`.
    #[schema(value_type = Value)]
    payload: Value,
    payload_shown: PayloadShown,
}

/// How much of a dead letter's message the key is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
enum PayloadShown {
    /// As it is (`admin`: to fix and replay it).
    AsIs,
    /// With the fields the source's `mask_field` operations hide and its `classify` rules
    /// recognise replaced by `****` (`read:<source>`: what the output would show it).
    Masked,
    /// Not at all (`meta:<source>` only).
    Hidden,
}

/// Where a dead letter's message was when it failed.
#[derive(Serialize, ToSchema)]
struct Original<'a> {
    topic: Option<&'a str>,
    partition: Option<i32>,
    offset: Option<i64>,
}

/// `m` as `principal` may see it: the message as it is to an admin, masked as its source's
/// operations say to a reader, left out for a key that may only see metadata.
fn describe<'m>(m: &'m OwnedMessage, principal: &Principal, state: &State) -> DeadLetter<'m> {
    let raw = m.payload().unwrap_or_default();
    let source = header(m, headers::SOURCE);
    let shown = if principal.scopes.allows(Access::Admin) {
        PayloadShown::AsIs
    } else if source.is_some_and(|s| principal.may_read(s)) {
        PayloadShown::Masked
    } else {
        PayloadShown::Hidden
    };
    let payload = match shown {
        PayloadShown::Hidden => Value::Null,
        _ => {
            let mut payload = serde_json::from_slice::<Value>(raw).unwrap_or_else(|_| json!(String::from_utf8_lossy(raw)));
            if shown == PayloadShown::Masked {
                if let Some(compiled) = source.and_then(|s| state.catalog.get(s)) {
                    domain::masking::ViewMask::of(compiled.config()).apply(&mut payload);
                }
            }
            payload
        }
    };
    DeadLetter {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(String::from_utf8_lossy),
        source: header(m, headers::SOURCE),
        event_id: header(m, headers::EVENT_ID),
        stage: header(m, headers::DLQ_STAGE),
        reason: header(m, headers::DLQ_REASON),
        error: header(m, headers::DLQ_ERROR),
        operation: header(m, headers::DLQ_OPERATION),
        operation_index: header(m, headers::DLQ_OPERATION_INDEX).and_then(|i| i.parse::<usize>().ok()),
        reference: header(m, headers::DLQ_REFERENCE).is_some(),
        original: Original {
            topic: header(m, headers::DLQ_TOPIC),
            partition: header(m, headers::DLQ_PARTITION).and_then(|p| p.parse::<i32>().ok()),
            offset: header(m, headers::DLQ_OFFSET).and_then(|o| o.parse::<i64>().ok()),
        },
        payload,
        payload_shown: shown,
    }
}

/// Reads `topic` from `start` (per partition), keeping messages `keep` accepts, until `limit`
/// are kept, every partition is read to its end, or [`READ_DEADLINE`] passes
/// ([`adapters::kafka::scan`]).
pub(crate) fn scan(
    state: &State,
    topic: &str,
    start: &BTreeMap<i32, i64>,
    limit: usize,
    keep: impl Fn(&OwnedMessage) -> bool,
) -> anyhow::Result<adapters::kafka::Scanned> {
    adapters::kafka::scan(&state.reader_config, topic, start, adapters::kafka::Bound::First(limit), READ_DEADLINE, keep)
}

pub(crate) fn parse_cursor(cursor: Option<&str>) -> Result<BTreeMap<i32, i64>, AdminError> {
    let mut out = BTreeMap::new();
    for part in cursor.unwrap_or("").split(',').filter(|s| !s.is_empty()) {
        let (p, o) = part.split_once(':').ok_or_else(|| AdminError::bad_request("cursor must be `partition:offset,...`"))?;
        let p = p.parse().map_err(|_| AdminError::bad_request("cursor partition must be a number"))?;
        let o = o.parse().map_err(|_| AdminError::bad_request("cursor offset must be a number"))?;
        out.insert(p, o);
    }
    Ok(out)
}

/// `partition:offset,...`, as [`parse_cursor`] reads it.
pub(crate) fn format_cursor(position: &BTreeMap<i32, i64>) -> String {
    position.iter().map(|(p, o)| format!("{p}:{o}")).collect::<Vec<_>>().join(",")
}

pub(crate) fn kafka_unavailable(state: &State, err: impl std::fmt::Display) -> AdminError {
    AdminError::Request(RequestError::Unavailable { what: format!("kafka: {err}"), retry_after_s: state.retry_after_s })
}

#[utoipa::path(get, path = "/v1/dead-letters", operation_id = "list_dead_letters", tag = "admin",
    params(
        ("source" = Option<String>, Query, description = "Only this source"),
        ("reason" = Option<DeadLetterReason>, Query, description = "Only this reason"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 1000, description = "Dead letters per page (100)"),
        ("cursor" = Option<String>, Query, pattern = r"^([0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18})*)?$", description = "`next_cursor` of the previous page")),
    description = "Scope: `admin` (every dead letter, its message as it is), `read:<glob>` (the dead letters of the sources it covers, their messages masked as the source's `mask_field` and `classify` operations say) or `meta:<glob>` (likewise, without the message). A `source` the key does not cover is a 403.",
    responses((status = 200, description = "Dead letters, oldest first, with why", body = DeadLetterPage), adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = ["admin", "read:<source>"])))]
async fn list(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let principal = crate::admin::authorize_view(&req, &state)?;
    let query: ListQuery = adapters::http::query(&req)?;
    if let Some(source) = &query.source {
        crate::admin::require_view(&principal, source)?;
    }
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AdminError::bad_request(format!("`limit` must be between 1 and {MAX_PAGE}")));
    }
    let start = parse_cursor(query.cursor.as_deref())?;
    let filter = Filter { source: query.source.clone(), reason: query.reason };
    let st = state.clone();
    // A dead letter without a source header is the admin's only.
    let who = principal.clone();
    let visible = move |m: &OwnedMessage| header(m, headers::SOURCE).map_or(who.require(domain::auth::Access::Admin).is_ok(), |s| crate::admin::may_view(&who, s));
    let Scanned { messages: kept, position, .. } = web::block(move || scan(&st, &st.dead_letter_topic, &start, limit, |m| matches(m, &filter) && visible(m)))
        .await
        .map_err(|e| AdminError::internal(anyhow::anyhow!("{e}")))?
        .map_err(|e| kafka_unavailable(&state, e))?;
    Ok(HttpResponse::Ok().json(DeadLetterPage { dead_letters: kept.iter().map(|m| describe(m, &principal, &state)).collect(), count: kept.len(), next_cursor: format_cursor(&position) }))
}

/// A dead letter, by its position on the dead-letter topic.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = ReplayItem)]
struct Item {
    partition: i32,
    offset: i64,
}

/// What to replay: `items`, or every dead letter of a `source` (optionally of one `reason`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
struct ReplayRequest {
    #[serde(default)]
    #[schema(max_items = 1000)]
    items: Vec<Item>,
    source: Option<String>,
    reason: Option<DeadLetterReason>,
    /// Replay also what was replayed before.
    #[serde(default)]
    force: bool,
    /// `next_cursor` of the previous answer, when it was not complete: go on from there.
    #[schema(pattern = r"^([0-9]{1,9}:[0-9]{1,18}(,[0-9]{1,9}:[0-9]{1,18})*)?$")]
    cursor: Option<String>,
}

/// What a replay did, dead letter by dead letter.
#[derive(Serialize, ToSchema)]
struct ReplayAnswer<'a> {
    #[schema(inline)]
    replayed: Vec<Replayed<'a>>,
    #[schema(inline)]
    skipped: Vec<Skipped>,
    /// Whether every selected dead letter was reached: the named `items` all found, or the
    /// topic read to its end. False when the call stopped at 1,000 or after 5 s of reading.
    complete: bool,
    /// Where to go on from when not `complete`: pass it as `cursor` with the same selection.
    #[serde(skip_serializing_if = "Option::is_none")]
    next_cursor: Option<String>,
}

/// A dead letter sent back to where it came from.
#[derive(Serialize, ToSchema)]
struct Replayed<'a> {
    partition: i32,
    offset: i64,
    #[schema(inline)]
    to: Sent<'a>,
}

/// Where a replayed message was written: where it is now.
#[derive(Serialize, ToSchema)]
struct Sent<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
}

/// A dead letter not replayed, and why.
#[derive(Serialize, ToSchema)]
struct Skipped {
    partition: i32,
    offset: i64,
    why: String,
}

#[utoipa::path(post, path = "/v1/dead-letters/replay", operation_id = "replay_dead_letters", tag = "admin",
    description = "Scope: `admin`. Replays at most 1000 dead letters per call and reads for at most 5 s: an answer with `complete: false` has a `next_cursor` to call again with, as `cursor`, with the same selection.",
    request_body(content = ReplayRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was replayed and what was skipped", body = ReplayAnswer),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn replay(req: HttpRequest, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let admin = crate::admin::authorize(&req, &state)?;
    require_json(&req)?;
    let body = read_body(&req, body, state.max_body_bytes, state.body_timeout).await?;
    let request: ReplayRequest =
        serde_json::from_slice(&body).map_err(|e| AdminError::bad_request(format!("invalid replay request: {e}")))?;
    if request.items.is_empty() && request.source.is_none() {
        return Err(AdminError::bad_request("name `items` to replay, or a `source` (optionally with a `reason`)"));
    }
    if request.items.len() > MAX_PAGE {
        return Err(AdminError::bad_request(format!("at most {MAX_PAGE} `items` per call")));
    }
    let start = parse_cursor(request.cursor.as_deref())?;
    let wanted: std::collections::HashSet<(i32, i64)> = request.items.iter().map(|i| (i.partition, i.offset)).collect();
    // The named items, or a page of those matching: memory stays bounded however many match.
    let named = wanted.len();
    let limit = if named == 0 { MAX_PAGE } else { named };
    let filter = Filter { source: request.source.clone(), reason: request.reason };
    let st = state.clone();
    let Scanned { messages: selected, position, complete: read_to_end } = web::block(move || {
        scan(&st, &st.dead_letter_topic, &start, limit, |m| {
            if wanted.is_empty() { matches(m, &filter) } else { wanted.contains(&(m.partition(), m.offset())) }
        })
    })
    .await
    .map_err(|e| AdminError::internal(anyhow::anyhow!("{e}")))?
    .map_err(|e| kafka_unavailable(&state, e))?;
    let complete = read_to_end || (named > 0 && selected.len() == named);

    let mut replayed = Vec::new();
    let mut skipped = Vec::new();
    for m in &selected {
        if header(m, headers::DLQ_REFERENCE).is_some() {
            // The original did not fit the dead-letter topic: it is still where it came from.
            let why = format!(
                "a reference: the original ({} bytes) did not fit the dead-letter topic; it is at {}/{}/{}",
                header(m, headers::DLQ_ORIGINAL_SIZE).unwrap_or("?"),
                header(m, headers::DLQ_TOPIC).unwrap_or("?"),
                header(m, headers::DLQ_PARTITION).unwrap_or("?"),
                header(m, headers::DLQ_OFFSET).unwrap_or("?"),
            );
            skipped.push(Skipped { partition: m.partition(), offset: m.offset(), why });
            continue;
        }
        let Some(topic) = header(m, headers::DLQ_TOPIC) else {
            skipped.push(Skipped { partition: m.partition(), offset: m.offset(), why: "no original topic header".into() });
            continue;
        };
        if !request.force {
            let first = state
                .replay_markers
                .mark(m.partition(), m.offset(), adapters::VERSION)
                .await
                .map_err(|e| AdminError::Request(RequestError::Unavailable { what: format!("redis: {e}"), retry_after_s: state.retry_after_s }))?;
            if !first {
                skipped.push(Skipped { partition: m.partition(), offset: m.offset(), why: "already replayed (use force)".into() });
                continue;
            }
        }
        // The original headers, without the dead-letter ones, plus where the replay came from.
        let mut h: Vec<(&str, &[u8])> = Vec::new();
        if let Some(orig) = m.headers() {
            for hd in orig.iter().filter(|hd| !hd.key.starts_with("metastream-dlq-")) {
                h.push((hd.key, hd.value.unwrap_or_default()));
            }
        }
        let from = format!("{}/{}/{}", state.dead_letter_topic, m.partition(), m.offset());
        h.push(("metastream-replayed-from", from.as_bytes()));
        let record = Record { topic, key: m.key(), payload: m.payload().unwrap_or_default(), headers: h };
        match adapters::kafka::send(&state.producer, record, Duration::from_secs(1), state.produce_timeout + Duration::from_secs(1)).await {
            Ok(d) => replayed.push(Replayed { partition: m.partition(), offset: m.offset(), to: Sent { topic, partition: d.partition, offset: d.offset } }),
            Err(err) => {
                // Free the marker so the replay can be retried.
                let _ = state.replay_markers.unmark(m.partition(), m.offset()).await;
                return Err(kafka_unavailable(&state, err));
            }
        }
    }
    tracing::info!(replayed = replayed.len(), skipped = skipped.len(), "dead letters replayed");
    let selection = json!({"items": request.items.len(), "source": request.source, "reason": request.reason, "force": request.force});
    crate::audit::record(&state, &admin, "dead_letters.replay", &state.dead_letter_topic, json!({"selection": selection, "replayed": replayed.len(), "skipped": skipped.len()})).await;
    let next_cursor = (!complete).then(|| format_cursor(&position));
    Ok(HttpResponse::Ok().json(ReplayAnswer { replayed, skipped, complete, next_cursor }))
}

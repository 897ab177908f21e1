//! `GET /consume` and `GET /metadata/{source}/{id}`.
//!
//! Each checks its key's scope first (`consume:<group>` and some `read:` scope; `read:<source>`),
//! then its rate limit, then its caps, and only then touches Kafka or Redis.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use adapters::http::RequestError;
use adapters::stage::headers;
use domain::auth::{Access, RateKind, Sight};
use domain::projection::Projection;
use domain::{Condition, Event, EventId, SourceName};
use actix_web::web::Bytes;
use adapters::kafka::message::{BorrowedMessage, Message};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use utoipa::ToSchema;

use crate::cloudevents::Format;
use crate::State;

adapters::routes! { pub(crate) fn configure / ROUTES {
    GET "/consume" => consume,
    POST "/consume/ack" => ack,
    POST "/consume/reset" => reset,
    GET "/stream" => stream,
    GET "/metadata/{source}/{id}" => metadata,
    GET "/metadata/{source}/{id}/history" => history,
} }

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct ConsumeQuery {
    /// The API consumer group (consumer_api.default_group); needs `consume:<group>`.
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    group: Option<String>,
    /// Most events in the answer (consumer_api.default_batch; at most consumer_api.max_batch,
    /// 1000 unless configured otherwise).
    #[param(minimum = 1, maximum = 1000)]
    max: Option<usize>,
    /// How long to wait for the first event, ms (consumer_api.default_wait_ms; at most
    /// consumer_api.max_wait_ms, 30000 unless configured otherwise).
    #[param(maximum = 30000)]
    wait_ms: Option<u64>,
    /// Only events this condition holds for (JSON, the operations' `when` language, e.g.
    /// `{"exists":"metadata.tags"}`); the others still count as consumed.
    filter: Option<String>,
    /// Only these paths of each event, comma-separated (`payload.title,metadata.tags`), besides
    /// `id` and `source`.
    fields: Option<String>,
    /// `metastream` (the event as published) or `cloudevents` (CloudEvents 1.0, structured JSON).
    #[serde(default)]
    format: crate::cloudevents::Format,
    /// The `cursor` of an earlier answer of this group: acknowledges it and continues (without
    /// one, the key's previous answer in the group is acknowledged).
    cursor: Option<String>,
    /// Where a group with no position yet starts: `earliest` (default), `latest`, or an RFC 3339
    /// time (the first event published at or after it).
    from: Option<String>,
    /// `true`: each item carries the Kafka message's `headers` too (`traceparent`, the source,
    /// the provenance headers), e.g. to follow an event's trace.
    #[serde(default)]
    headers: bool,
}

/// What one call asked of the events it is handed: [`deliver`] shapes each accordingly.
pub(crate) struct Shape {
    pub filter: Option<Condition>,
    pub projection: Option<Projection>,
    pub format: Format,
    /// Each item carries the message's headers.
    pub headers: bool,
}

impl Shape {
    fn parse(filter: Option<&str>, fields: Option<&str>, format: Format, headers: bool) -> Result<Shape, RequestError> {
        Ok(Shape {
            filter: filter.map(compile_filter).transpose()?,
            projection: fields.map(Projection::parse).transpose().map_err(RequestError::BadRequest)?,
            format,
            headers,
        })
    }
}

/// A group name: a source name's alphabet and length.
fn check_group(group: &str) -> Result<(), RequestError> {
    SourceName::parse(group)
        .map(|_| ())
        .map_err(|_| RequestError::BadRequest("`group` may hold only letters, digits, `_`, `.` and `-` (at most 64)".into()))
}

/// A small JSON request about one group (`POST /consume/ack`, `/consume/reset`), checked in the
/// order every route keeps: the key, its scope for the group, the group's name, its rate limit.
async fn group_request<T: serde::de::DeserializeOwned>(
    req: &HttpRequest,
    body: web::Payload,
    state: &State,
    group: impl Fn(&T) -> &str,
) -> Result<(std::sync::Arc<adapters::auth::Principal>, T), RequestError> {
    let principal = state.auth.authorize(req, Access::AnyConsume)?;
    adapters::http::require_json(req)?;
    let body = adapters::http::read_body(req, body, 4096, Duration::from_secs(10)).await?;
    let request: T = serde_json::from_slice(&body).map_err(|e| RequestError::BadRequest(format!("invalid request: {e}")))?;
    principal.require(Access::Consume(group(&request)))?;
    check_group(group(&request))?;
    state.limiter.take(&principal, &[(RateKind::Requests, 1)]).await?.attach(req);
    Ok((principal, request))
}

/// `earliest`, `latest` or an RFC 3339 time.
fn parse_start(text: &str) -> Result<crate::groups::Start, RequestError> {
    use crate::groups::Start;
    match text {
        "earliest" => Ok(Start::Earliest),
        "latest" => Ok(Start::Latest),
        time => chrono::DateTime::parse_from_rfc3339(time)
            .map(|t| Start::Time(t.timestamp_millis()))
            .map_err(|_| RequestError::BadRequest(format!("`{time}` is not `earliest`, `latest` or an RFC 3339 time"))),
    }
}

/// The signer of this deployment's cursors (its secret is made once, in Redis).
async fn cursors(state: &State) -> Result<&adapters::auth::KeyHasher, RequestError> {
    state
        .cursors
        .get_or_try_init(|| async {
            let secret = state.positions.cursor_secret().await?;
            Ok::<_, adapters::store::StoreError>(adapters::auth::KeyHasher::new(&adapters::Secret::new(secret)))
        })
        .await
        .map_err(|e| RequestError::Unavailable { what: format!("redis: {e}"), retry_after_s: state.retry_after_s })
}

/// `<lease>.<signature>`: opaque to clients, tamper-evident, bound to its group.
fn sign_cursor(signer: &adapters::auth::KeyHasher, group: &str, lease: &str) -> String {
    format!("{lease}.{}", &signer.hash(&format!("{group}/{lease}"))[..32])
}

/// The lease a cursor names, if it was signed for `group`.
fn verify_cursor(signer: &adapters::auth::KeyHasher, group: &str, cursor: &str) -> Result<String, RequestError> {
    let invalid = || RequestError::BadRequest(format!("`cursor` is not a cursor of group `{group}`"));
    let (lease, _) = cursor.split_once('.').ok_or_else(invalid)?;
    if lease.is_empty() || lease.len() > 64 || !lease.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let expected = sign_cursor(signer, group, lease);
    let same = expected.len() == cursor.len() && expected.bytes().zip(cursor.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same { Ok(lease.to_owned()) } else { Err(invalid()) }
}

/// The `filter` of a call, compiled.
fn compile_filter(text: &str) -> Result<Condition, RequestError> {
    let value: Value = serde_json::from_str(text).map_err(|e| RequestError::BadRequest(format!("`filter` is not JSON: {e}")))?;
    Condition::compile(&value).map_err(|errors| {
        let list: Vec<String> = errors
            .iter()
            .map(|e| if e.at.is_empty() { e.message.clone() } else { format!("{}: {}", e.at, e.message) })
            .collect();
        RequestError::BadRequest(format!("`filter`: {}", list.join("; ")))
    })
}

#[utoipa::path(get, path = "/consume", operation_id = "consume", tag = "consume",
    description = "The group's next events, of the sources the key may read (`read:<source>`), optionally filtered and projected; calling again acknowledges the previous answer (events filtered out included).",
    params(ConsumeQuery),
    responses((status = 200, description = "Events (possibly none after waiting)", body = ConsumeAnswer), adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn consume(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, RequestError> {
    let principal = state.auth.authenticate(&req)?;
    let query: ConsumeQuery = adapters::http::query(&req)?;
    let limits = &state.limits;
    let group = query.group.clone().unwrap_or_else(|| limits.default_group.clone());
    principal.require(Access::Consume(&group))?;
    // A key that may read (or glimpse) no source could never receive anything.
    principal.require(Access::AnyGlimpse)?;
    check_group(&group)?;
    let max = query.max.unwrap_or(limits.default_batch);
    if !(1..=limits.max_batch).contains(&max) {
        return Err(RequestError::BadRequest(format!("`max` must be between 1 and {}", limits.max_batch)));
    }
    let shape = Shape::parse(query.filter.as_deref(), query.fields.as_deref(), query.format, query.headers)?;
    let wait_ms = query.wait_ms.unwrap_or(limits.default_wait_ms);
    if wait_ms > limits.max_wait_ms {
        return Err(RequestError::BadRequest(format!("`wait_ms` must be at most {}", limits.max_wait_ms)));
    }
    state.limiter.take(&principal, &[(RateKind::Requests, 1)]).await?.attach(&req);
    let signer = cursors(&state).await?;
    let ack = query.cursor.as_deref().map(|c| verify_cursor(signer, &group, c)).transpose()?;
    let start = query.from.as_deref().map(parse_start).transpose()?.unwrap_or(crate::groups::Start::Earliest);
    let _slot = state.long_polls.acquire(&principal.id, limits.max_long_polls_per_key, limits.max_long_polls)?;
    let api_group = state.groups.get(&group, &principal.id)?;
    let answer = api_group
        .next(&state.positions, &principal.id, ack.as_deref(), start, max, Duration::from_millis(wait_ms), Duration::from_millis(limits.ack_timeout_ms))
        .await?;
    // Each event is written into the answer as fetched, straight from the Kafka client's
    // buffer; events of sources the key may not read are passed over: consumed for this group,
    // never shown to this key (a key that reads every source needs no look at the headers).
    let reads_all = principal.scopes.reads_every_source();
    let mut events = Vec::with_capacity(answer.messages.iter().map(|m| m.payload_len() + 96).sum::<usize>() + 2);
    let mut count = 0usize;
    for m in &answer.messages {
        let sight = if reads_all { Sight::Full } else { principal.scopes.sight(headers::source(m)) };
        if sight == Sight::Nothing {
            continue;
        }
        let at = events.len();
        if count > 0 {
            events.push(b',');
        }
        if deliver(m, &group, &shape, sight, &mut events) {
            count += 1;
        } else {
            events.truncate(at);
        }
    }
    let cursor = answer.lease.as_deref().map(|lease| sign_cursor(signer, &group, lease));
    state.metrics.events_delivered.add(count as u64, &[opentelemetry::KeyValue::new("group", group.clone())]);
    // The answer is written as bytes, in three pieces (the events are not copied again).
    let (head, tail) = ConsumeAnswer { group: &group, count, cursor, reset: answer.reset, events: Vec::new() }.around();
    let len = (head.len() + events.len() + tail.len()) as u64;
    let pieces = [Bytes::from(head), Bytes::from(events), Bytes::from_static(tail)].map(Ok::<_, std::convert::Infallible>);
    let body = actix_web::body::SizedStream::new(len, futures_util::stream::iter(pieces));
    Ok(HttpResponse::Ok().content_type("application/json").body(body))
}

/// `GET /consume`.
// Written in three pieces (see `around`): its items are the bytes `deliver` wrote, each a
// `Delivered`, never copied into a vector of them.
#[derive(Serialize, ToSchema)]
struct ConsumeAnswer<'a> {
    group: &'a str,
    count: usize,
    /// Acknowledges this answer (`cursor=` on the next call, or `POST /consume/ack`); `null` when
    /// the answer is empty.
    cursor: Option<String>,
    /// Present (`true`) when the group's position had been deleted by retention and moved to the
    /// earliest offset left.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    reset: bool,
    // Last, and empty when serialized: the items go between `around`'s two pieces.
    events: Vec<Delivered<'a>>,
}

impl ConsumeAnswer<'_> {
    /// The answer's bytes before its items and after them.
    fn around(&self) -> (Vec<u8>, &'static [u8]) {
        debug_assert!(self.events.is_empty(), "the items are written apart");
        let mut head = serde_json::to_vec(self).expect("an answer serializes");
        let tail: &'static [u8] = b"]}";
        debug_assert!(head.ends_with(b"[]}"));
        head.truncate(head.len() - tail.len());
        (head, tail)
    }
}

/// One delivered event and where it was on the output topic: an item of `/consume`, the `data`
/// of an event of `/stream`.
#[derive(Serialize, ToSchema)]
struct Delivered<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    #[schema(value_type = Option<String>)]
    key: Option<std::borrow::Cow<'a, str>>,
    /// The processed event (filtered, projected and formatted as asked); `null` when the record
    /// on the topic is not JSON.
    #[schema(value_type = Option<Object>, required = true)]
    event: Option<&'a RawValue>,
    /// The key may only see this source's metadata (`meta:<source>`): the event's `payload`
    /// is left empty. Absent otherwise.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    payload_hidden: bool,
    /// The Kafka message's headers, when asked for (`headers=true`).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>)]
    headers: Option<std::collections::BTreeMap<&'a str, std::borrow::Cow<'a, str>>>,
}

/// `POST /consume/reset`.
#[derive(Serialize, ToSchema)]
struct ResetAnswer {
    group: String,
    /// Partition → the offset the group goes on from.
    positions: std::collections::BTreeMap<String, i64>,
}

/// `POST /consume/ack`.
#[derive(Serialize, ToSchema)]
struct AckAnswer {
    group: String,
    acknowledged: bool,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ResetRequest {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    group: String,
    /// `earliest`, `latest`, or an RFC 3339 time.
    to: String,
}

#[utoipa::path(post, path = "/consume/reset", operation_id = "consume_reset", tag = "consume",
    description = "Replays or skips: moves the group to `to` on every partition and forgets its unacknowledged answers. Needs `consume:<group>`.",
    request_body(content = ResetRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The group's new positions, by partition", body = ResetAnswer),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn reset(req: HttpRequest, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, RequestError> {
    let (principal, request): (_, ResetRequest) = group_request(&req, body, &state, |r: &ResetRequest| r.group.as_str()).await?;
    let to = parse_start(&request.to)?;
    let api_group = state.groups.get(&request.group, &principal.id)?;
    let positions = api_group.reset(&state.positions, to).await?;
    tracing::info!(group = %request.group, to = %request.to, key_id = %principal.id, "api group reset");
    let positions: std::collections::BTreeMap<String, i64> = positions.into_iter().map(|(p, o)| (p.to_string(), o)).collect();
    Ok(HttpResponse::Ok().json(ResetAnswer { group: request.group, positions }))
}

/// A delivery span closing the event's trace (a child of the post stage's span it carries).
fn trace_delivery<M: Message>(m: &M, group: &str) {
    drop(adapters::telemetry::propagation::consumer_span("deliver", "receive", m, group));
}

/// Writes one event as `/consume` and `/stream` hand it out — an item
/// `{"topic","partition","offset","key","event"}` — filtered, projected and formatted as asked,
/// to `out`; `false` (and `out` in an unspecified state past what it held) when the filter passes
/// it over. Closes the event's trace with a delivery span (when spans are exported:
/// `adapters::telemetry::exporting`).
///
/// An event neither projected nor reformatted is copied as published, never parsed into a tree
/// (parsing and re-serializing events was most of a call's cost), once checked to be JSON: a
/// record that is not (written to the topic by anything but the post-transformer) is handed out
/// as `null`, so it cannot make a whole answer unreadable. (The check is a sixth of a call's
/// CPU; telling the post-transformer's records apart by a header costs as much, as librdkafka
/// parses a message's headers into allocations when first asked.)
///
/// A key that may only glimpse the event's source ([`Sight::WithoutPayload`]) is handed the
/// event with an empty `payload` (and `payload_hidden`); its filter and projection see that
/// event too, so no condition on the payload can tell it what the payload holds.
pub(crate) fn deliver<M: Message>(m: &M, group: &str, shape: &Shape, sight: Sight, out: &mut Vec<u8>) -> bool {
    deliver_item(m, group, shape, sight, out).is_some()
}

fn deliver_item<M: Message>(m: &M, group: &str, shape: &Shape, sight: Sight, out: &mut Vec<u8>) -> Option<()> {
    let (filter, projection, format) = (shape.filter.as_ref(), shape.projection.as_ref(), shape.format);
    let item = Item { hidden: sight == Sight::WithoutPayload, headers: shape.headers };
    if adapters::telemetry::exporting() {
        trace_delivery(m, group);
    }
    let stripped = if item.hidden { Some(without_payload(m.payload().unwrap_or_default())?) } else { None };
    let payload = stripped.as_deref().unwrap_or_else(|| m.payload().unwrap_or_default());
    // The event as published, read only when a filter or projection needs it; an event that does
    // not read back cannot match a filter: passed over.
    let record = if filter.is_some() || projection.is_some() { Some(published_event(m, payload, filter.is_some())?) } else { None };
    if let (Some(f), Some(r)) = (filter, &record) {
        if !f.eval(r) {
            return None;
        }
    }
    match (format, projection, &record) {
        (Format::Metastream, None, _) => write_item(m, serde_json::from_slice::<&RawValue>(payload).ok(), item, out),
        (Format::Metastream, Some(p), Some(r)) => write_item(m, Some(&serde_json::value::to_raw_value(&p.apply(r)).ok()?), item, out),
        (Format::Cloudevents, p, r) => {
            let published = serde_json::from_slice::<Value>(payload).unwrap_or(Value::Null);
            let data = match (p, r) {
                (Some(p), Some(r)) => p.apply(r),
                _ => published.clone(),
            };
            let event = crate::cloudevents::wrap(m.topic(), m.partition(), m.offset(), &published, data);
            write_item(m, Some(&serde_json::value::to_raw_value(&event).ok()?), item, out);
        }
        (Format::Metastream, Some(_), None) => unreachable!("a projection reads the record"),
    }
    Some(())
}

/// The event as published (`payload`: the message's, or what is left of it to show); `None` when
/// it does not read back. For a filter (`filtering`), with every Kafka header of the message as
/// its headers, so that a `header` condition tests them all (the pipeline's `metastream-*` ones,
/// `traceparent`, the routing headers operations set); a projection alone does not need them.
pub(crate) fn published_event<M: Message>(m: &M, payload: &[u8], filtering: bool) -> Option<Event> {
    let mut event = Event::from_wire_read(payload)?;
    if filtering {
        event.routing.headers = headers::message_headers(m);
    }
    Some(event)
}

/// The event with its `payload` emptied; `None` when it is not a JSON object.
fn without_payload(published: &[u8]) -> Option<Vec<u8>> {
    let mut event: serde_json::Map<String, Value> = serde_json::from_slice(published).ok()?;
    event.insert("payload".into(), Value::Object(serde_json::Map::new()));
    serde_json::to_vec(&event).ok()
}

/// What an item carries besides the event.
#[derive(Clone, Copy)]
struct Item {
    /// The payload was left out ([`Sight::WithoutPayload`]).
    hidden: bool,
    /// The message's headers go with it.
    headers: bool,
}

/// One item ([`Delivered`]) with `event` (JSON, `null` when `None`) copied in as its text.
fn write_item<M: Message>(m: &M, event: Option<&RawValue>, extra: Item, out: &mut Vec<u8>) {
    let headers = extra.headers.then(|| {
        use adapters::kafka::message::Headers as _;
        m.headers().map(|hs| hs.iter().map(|h| (h.key, h.value.map(String::from_utf8_lossy).unwrap_or_default())).collect()).unwrap_or_default()
    });
    let item = Delivered { topic: m.topic(), partition: m.partition(), offset: m.offset(), key: m.key().map(String::from_utf8_lossy), event, payload_hidden: extra.hidden, headers };
    serde_json::to_writer(out, &item).expect("an item serializes into memory");
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct StreamQuery {
    /// The API consumer group (consumer_api.default_group); needs `consume:<group>`.
    #[param(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    group: Option<String>,
    /// As `/consume`'s.
    filter: Option<String>,
    /// As `/consume`'s.
    fields: Option<String>,
    #[serde(default)]
    format: Format,
    /// Where a group with no position yet starts: `earliest` (default), `latest`, or an RFC 3339 time.
    from: Option<String>,
    /// The `id` of the last event received, for clients that cannot send `Last-Event-ID`.
    last_event_id: Option<String>,
    /// As `/consume`'s.
    #[serde(default)]
    headers: bool,
}

#[utoipa::path(get, path = "/stream", operation_id = "stream", tag = "consume",
    description = "The group's events as Server-Sent Events: one `metadata` event per record (`data`: as an item of `/consume`), `id` a cursor; `: keepalive` comments while idle. Reconnecting to any replica with `Last-Event-ID` resumes right after that event. Needs `consume:<group>` and a `read:` scope.",
    params(StreamQuery, ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event received: resume after it")),
    responses(
        (status = 200, description = "The stream", content_type = "text/event-stream", body = String),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn stream(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, RequestError> {
    let principal = state.auth.authenticate(&req)?;
    let query: StreamQuery = adapters::http::query(&req)?;
    let group = query.group.clone().unwrap_or_else(|| state.limits.default_group.clone());
    principal.require(Access::Consume(&group))?;
    principal.require(Access::AnyGlimpse)?;
    check_group(&group)?;
    let shape = Shape::parse(query.filter.as_deref(), query.fields.as_deref(), query.format, query.headers)?;
    let start = query.from.as_deref().map(parse_start).transpose()?.unwrap_or(crate::groups::Start::Earliest);
    let last_event_id = req.headers().get("last-event-id").and_then(|v| v.to_str().ok()).map(str::to_owned).or(query.last_event_id.clone());
    state.limiter.take(&principal, &[(RateKind::Requests, 1)]).await?.attach(&req);
    let signer = cursors(&state).await?.clone();
    let resume = last_event_id.as_deref().map(|id| crate::stream::verify(&signer, &group, id)).transpose()?;
    let slot = state.long_polls.acquire(&principal.id, state.limits.max_long_polls_per_key, state.limits.max_long_polls)?;
    let api_group = state.groups.get(&group, &principal.id)?;
    let mut positions = std::collections::BTreeMap::new();
    if let Some((previous, at)) = resume {
        api_group.resume(&state.positions, &previous, &at).await?;
        positions = at.into_iter().collect();
    }
    let (reader, name) = (principal.clone(), group.clone());
    let render = Box::new(move |m: &BorrowedMessage<'_>| {
        let sight = reader.scopes.sight(headers::source(m));
        if sight == Sight::Nothing {
            return None;
        }
        let mut item = Vec::with_capacity(m.payload().map_or(0, <[u8]>::len) + 96);
        deliver(m, &name, &shape, sight, &mut item).then_some(item)
    });
    let stream = crate::stream::Stream {
        state: state.clone(),
        group: api_group,
        name: group,
        connection: format!("sse:{}", uuid::Uuid::new_v4().simple()),
        signer,
        start,
        render,
        _slot: slot,
        positions,
        last_sent: tokio::time::Instant::now(),
        ended: false,
    };
    let body = futures_util::stream::unfold(stream, |mut s| async move {
        let chunk = s.next_chunk().await?;
        Some((Ok::<_, actix_web::Error>(chunk), s))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(body))
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AckRequest {
    #[schema(pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")]
    group: String,
    cursor: String,
}

#[utoipa::path(post, path = "/consume/ack", operation_id = "consume_ack", tag = "consume",
    description = "Acknowledges an answer of `GET /consume` by its cursor, without fetching more. Needs `consume:<group>`.",
    request_body(content = AckRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "`acknowledged`: false when it was already (or timed out and was handed out again)", body = AckAnswer),
        adapters::openapi::WriteErrors),
    security(("bearer" = [])))]
async fn ack(req: HttpRequest, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, RequestError> {
    let (_, request): (_, AckRequest) = group_request(&req, body, &state, |r: &AckRequest| r.group.as_str()).await?;
    let lease = verify_cursor(cursors(&state).await?, &request.group, &request.cursor)?;
    let acknowledged = state
        .positions
        .ack(&request.group, &lease)
        .await
        .map_err(|e| RequestError::Unavailable { what: format!("redis: {e}"), retry_after_s: state.retry_after_s })?;
    Ok(HttpResponse::Ok().json(AckAnswer { group: request.group, acknowledged }))
}

/// The caller of an entity's route, how much it sees of the source, and the entity: the key's
/// scope first, then the names.
fn entity(req: &HttpRequest, path: web::Path<(String, String)>, state: &State) -> Result<(std::sync::Arc<adapters::auth::Principal>, Sight, SourceName, EventId), RequestError> {
    let (source, id) = path.into_inner();
    let principal = state.auth.authorize(req, Access::Glimpse(&source))?;
    let sight = principal.scopes.sight(&source);
    let source = SourceName::parse(source).map_err(|e| RequestError::BadRequest(e.to_string()))?;
    let id = EventId::parse(id).map_err(|e| RequestError::BadRequest(e.to_string()))?;
    Ok((principal, sight, source, id))
}

#[utoipa::path(get, path = "/metadata/{source}/{id}", operation_id = "get_metadata", tag = "consume",
    description = "The stored processed record. Needs `read:<source>`.",
    params(
        ("source" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description = "Source name"),
        ("id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$", description = "Event id")),
    responses(
        (status = 200, description = "The processed record", body = Object),
        (status = 404, description = "No record", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn metadata(req: HttpRequest, path: web::Path<(String, String)>, state: web::Data<State>) -> Result<HttpResponse, RequestError> {
    let (principal, sight, source, id) = entity(&req, path, &state)?;
    state.limiter.take(&principal, &[(RateKind::Requests, 1)]).await?.attach(&req);
    let record = state.records.get(&source, &id).await;
    let record = record.map_err(|e| RequestError::Unavailable { what: format!("cannot read the record: {e}"), retry_after_s: state.retry_after_s })?;
    match record {
        Some(bytes) if sight == Sight::WithoutPayload => {
            let mut record: serde_json::Map<String, Value> = serde_json::from_slice(&bytes).map_err(|e| RequestError::Unavailable { what: format!("the stored record is not JSON: {e}"), retry_after_s: state.retry_after_s })?;
            record.insert("payload".into(), Value::Object(serde_json::Map::new()));
            record.insert("payload_hidden".into(), Value::Bool(true));
            Ok(HttpResponse::Ok().json(record))
        }
        Some(bytes) => Ok(HttpResponse::Ok().content_type("application/json").body(bytes)),
        None => Err(RequestError::NotFound(format!("no processed record for source `{source}` and id `{id}`"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use adapters::kafka::message::OwnedMessage;
    use adapters::kafka::message::Timestamp;
    use serde_json::json;

    fn message(payload: &[u8], key: Option<&str>) -> OwnedMessage {
        OwnedMessage::new(Some(payload.to_vec()), key.map(|k| k.as_bytes().to_vec()), "out\"put".into(), Timestamp::NotAvailable, 3, 41, None)
    }

    fn plain() -> Shape {
        Shape { filter: None, projection: None, format: Format::Metastream, headers: false }
    }

    #[test]
    fn an_item_carries_the_messages_headers_when_asked() {
        use adapters::kafka::message::{Header, OwnedHeaders};
        let headers = OwnedHeaders::new().insert(Header { key: "traceparent", value: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") }).insert(Header { key: "metastream-source", value: Some("jira") });
        let m = OwnedMessage::new(Some(br#"{"id":"1"}"#.to_vec()), None, "out".into(), Timestamp::NotAvailable, 0, 1, Some(headers));
        let mut out = Vec::new();
        assert!(deliver(&m, "g", &Shape { headers: true, ..plain() }, Sight::Full, &mut out));
        let item: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(item["headers"], json!({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "metastream-source": "jira"}));
        assert!(self::item(&m).get("headers").is_none(), "not unless asked");
    }

    #[test]
    fn a_header_condition_tests_every_kafka_header_of_the_message() {
        use adapters::kafka::message::{Header, OwnedHeaders};
        let headers = OwnedHeaders::new().insert(Header { key: "metastream-source", value: Some("jira") }).insert(Header { key: "x-tenant", value: Some("acme") });
        let m = OwnedMessage::new(Some(br#"{"id":"1","source":"jira","payload":{}}"#.to_vec()), None, "out".into(), Timestamp::NotAvailable, 0, 1, Some(headers));
        let passes = |filter: &str| deliver(&m, "g", &Shape::parse(Some(filter), None, Format::Metastream, false).unwrap(), Sight::Full, &mut Vec::new());
        assert!(passes(r#"{"header": {"name": "x-tenant", "equals": "acme"}}"#));
        assert!(passes(r#"{"header": {"name": "metastream-source", "matches": "^ji"}}"#));
        assert!(!passes(r#"{"header": {"name": "x-tenant", "equals": "other"}}"#));
        assert!(!passes(r#"{"header": {"name": "traceparent", "exists": true}}"#));
    }

    fn item(m: &OwnedMessage) -> Value {
        let mut out = Vec::new();
        assert!(deliver(m, "g", &plain(), Sight::Full, &mut out));
        serde_json::from_slice(&out).expect("an item is JSON")
    }

    #[test]
    fn a_key_that_may_only_glimpse_gets_the_event_without_its_payload_and_its_filter_sees_no_more() {
        let m = message(br#"{"id":"1","source":"jira","payload":{"ssn":"123"},"metadata":{"tags":["PII"]}}"#, Some("k"));
        let mut out = Vec::new();
        assert!(deliver(&m, "g", &plain(), Sight::WithoutPayload, &mut out));
        let item: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!((item["event"]["payload"].clone(), item["payload_hidden"].clone()), (json!({}), json!(true)));
        assert_eq!(item["event"]["metadata"]["tags"], json!(["PII"]));
        let probe = Shape::parse(Some(r#"{"equals": {"path": "payload.ssn", "value": "123"}}"#), None, Format::Metastream, false).unwrap();
        assert!(!deliver(&m, "g", &probe, Sight::WithoutPayload, &mut Vec::new()), "a filter cannot read the hidden payload");
        assert!(deliver(&m, "g", &probe, Sight::Full, &mut Vec::new()));
        assert!(item_of_full_sight_has_no_flag(&m));
    }

    fn item_of_full_sight_has_no_flag(m: &OwnedMessage) -> bool {
        item(m).get("payload_hidden").is_none()
    }

    #[test]
    fn an_item_carries_the_event_as_published_and_its_position() {
        let event = br#"{"id":"1","source":"jira","payload":{"t":"\"q\""}}"#;
        let key = "jira:\"1\"\n";
        let got = item(&message(event, Some(key)));
        let expected = json!({"topic": "out\"put", "partition": 3, "offset": 41, "key": key, "event": serde_json::from_slice::<Value>(event).unwrap()});
        assert_eq!(got, expected);
        assert_eq!(item(&message(b"{}", None))["key"], Value::Null);
    }

    #[test]
    fn an_answer_is_its_items_between_the_pieces_around_them() {
        let mut items = Vec::new();
        assert!(deliver(&message(br#"{"id":"1"}"#, Some("k")), "g", &plain(), Sight::Full, &mut items));
        for (reset, cursor) in [(false, None), (true, Some("c.s".to_owned()))] {
            let (head, tail) = ConsumeAnswer { group: "g", count: 1, cursor: cursor.clone(), reset, events: Vec::new() }.around();
            let answer: Value = serde_json::from_slice(&[head, items.clone(), tail.to_vec()].concat()).expect("an answer is JSON");
            let mut expected = json!({"group": "g", "count": 1, "cursor": cursor, "events": [item(&message(br#"{"id":"1"}"#, Some("k")))]});
            if reset {
                expected["reset"] = json!(true);
            }
            assert_eq!(answer, expected);
        }
    }

    #[test]
    fn a_record_that_is_not_json_is_handed_out_as_null() {
        assert_eq!(item(&message(b"not json {", Some("k")))["event"], Value::Null);
        assert_eq!(item(&message(b"", Some("k")))["event"], Value::Null);
        assert_eq!(item(&message(b"{\"a\":1} trailing", Some("k")))["event"], Value::Null);
    }
}

/// How many of the newest messages of each partition of the output topic an entity's history
/// looks through, and how long it may take.
const HISTORY_WINDOW: i64 = 5000;
const HISTORY_DEADLINE: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct HistoryQuery {
    /// The newest this many (20; at most 100).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
}

/// `GET /metadata/{source}/{id}/history`.
#[derive(Serialize, ToSchema)]
struct History<'a> {
    /// The entity's events on the output topic, newest first, as `/consume` hands them out
    /// (with their `headers`).
    #[schema(value_type = Vec<Object>)]
    events: Vec<&'a RawValue>,
    /// How far back it looked: the newest `window` messages of each partition.
    window: i64,
    /// Whether the whole window was read in time (false: older events may be missing).
    complete: bool,
}

#[utoipa::path(get, path = "/metadata/{source}/{id}/history", operation_id = "metadata_history", tag = "consume",
    description = "The entity's recent events on the output topic, newest first: every version the pipeline published, with its headers (trace context, provenance). Looks through the newest 5000 messages of each partition. Needs `read:<source>` (or `meta:<source>`: without payloads).",
    params(
        ("source" = String, Path, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description = "Source name"),
        ("id" = String, Path, min_length = 1, max_length = 256, pattern = r"^[^\x00-\x1f\x7f-\x9f]+$", description = "Event id"),
        HistoryQuery),
    responses(
        (status = 200, description = "The entity's events, newest first (none within the window: empty)", body = History),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn history(req: HttpRequest, path: web::Path<(String, String)>, state: web::Data<State>) -> Result<HttpResponse, RequestError> {
    let (principal, sight, source, id) = entity(&req, path, &state)?;
    let query: HistoryQuery = adapters::http::query(&req)?;
    let limit = query.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(RequestError::BadRequest("`limit` must be between 1 and 100".into()));
    }
    state.limiter.take(&principal, &[(RateKind::Requests, 1)]).await?.attach(&req);
    let (config, topic) = (state.reader_config.clone(), state.output_topic.clone());
    let (wanted_source, wanted_id) = (source.to_string(), id.to_string());
    let found = web::block(move || {
        let start = adapters::kafka::last_offsets(&config, &topic, HISTORY_WINDOW)?;
        // The newest `limit` of the entity's versions are among the newest `limit` of each
        // partition: only those are held, however many versions the window has.
        let bound = adapters::kafka::Bound::NewestPerPartition(limit);
        let scanned = adapters::kafka::scan(&config, &topic, &start, bound, HISTORY_DEADLINE, |m| {
            headers::source(m) == wanted_source && headers::header(m, domain::schema::headers::EVENT_ID) == Some(wanted_id.as_str())
        })?;
        anyhow::Ok((scanned.messages, scanned.complete))
    })
    .await
    .map_err(|e| RequestError::Unavailable { what: format!("reading the output topic: {e}"), retry_after_s: state.retry_after_s })?
    .map_err(|e| RequestError::Unavailable { what: format!("kafka: {e:#}"), retry_after_s: state.retry_after_s })?;
    let (mut kept, complete) = found;
    // Newest first: by the time each was published (offsets order only within a partition).
    kept.sort_by_key(|m| std::cmp::Reverse((m.timestamp().to_millis().unwrap_or(0), m.offset())));
    kept.truncate(limit);
    let shape = Shape { filter: None, projection: None, format: Format::Metastream, headers: true };
    let items: Vec<Vec<u8>> = kept
        .iter()
        .filter_map(|m| {
            let mut item = Vec::new();
            deliver(m, "history", &shape, sight, &mut item).then_some(item)
        })
        .collect();
    let events = items.iter().filter_map(|i| serde_json::from_slice::<&RawValue>(i).ok()).collect();
    Ok(HttpResponse::Ok().json(History { events, window: HISTORY_WINDOW, complete }))
}

//! `POST /ingest` and `POST /ingest/batch`.
//!
//! The order of checks is the authorization invariant: the key (from memory), then its
//! `ingest` scope for the event's source, then its rate limit (Redis), then anything else that
//! touches Redis or Kafka. A key scoped `ingest:jira` never writes as `github`.

use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use adapters::http::{read_body, require_json, Problem, RequestError};
use actix_web::http::StatusCode;
use domain::schema::headers;
use domain::event::now_rfc3339;
use domain::auth::{Access, RateKind};
use domain::ClientEvent;
use adapters::kafka::{Record, SendError};
use serde::Serialize;
use utoipa::ToSchema;

use tracing::Instrument as _;

use crate::{idempotency, State};

adapters::routes! { pub(crate) fn configure / ROUTES {
    POST "/ingest" => ingest,
    POST "/ingest/batch" => ingest_batch,
} }

/// `POST /ingest/batch`: a JSON array of events, or NDJSON (`application/x-ndjson`), up to
/// `gateway.max_batch_events` and `gateway.max_batch_bytes`. Every event is validated and
/// produced on its own; the answer lists one result per event, in order: `accepted` with its
/// partition and offset (only after Kafka's ack), or `rejected` with its error. One bad event
/// does not reject the others. 503 when no event could be accepted because Kafka is unavailable.
#[utoipa::path(post, path = "/ingest/batch", operation_id = "ingest_batch", tag = "ingest",
    description = "A JSON array of events, or NDJSON. Each event is validated, authorized (`ingest:<source>`) and produced on its own.",
    request_body(content(
        (Batch = "application/json"),
        (Batch = "application/x-ndjson")),
        description = "JSON: an array of events. NDJSON: one event per line (blank lines ignored)."),
    responses(
        (status = 200, description = "One result per event, in order; at least one event accepted (or none sent)", body = BatchAnswer),
        (status = 422, description = "No event accepted: every one named a source without configuration (`batch_refused`, with `results` per event, as BatchRefused)", body = adapters::http::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = adapters::http::ErrorBody),
        (status = 413, description = "Too many events or bytes, or more events than the key's burst; or no event accepted, every one too large (`batch_refused` with `results`, as BatchRefused)", body = adapters::http::ErrorBody),
        (status = 415, description = "Neither JSON nor NDJSON", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn ingest_batch(req: HttpRequest, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, IngestError> {
    let span = tracing::info_span!("ingest_batch", otel.name = "POST /ingest/batch", otel.kind = "server", http.route = "/ingest/batch");
    adapters::telemetry::propagation::set_parent(&span, adapters::telemetry::propagation::from_http(req.headers()));
    let result = batch(req, body, &state).instrument(span).await;
    if let Err(err) = &result {
        state.metrics.ingest_rejected.add(1, &[opentelemetry::KeyValue::new("reason", err.code())]);
    }
    result
}

async fn batch(req: HttpRequest, body: web::Payload, state: &State) -> Result<HttpResponse, IngestError> {
    let principal = state.auth.authorize(&req, Access::AnyIngest)?;
    let ndjson = req
        .headers()
        .get(actix_web::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/x-ndjson"));
    if !ndjson {
        require_json(&req)?;
    }
    let body = read_body(&req, body, state.max_batch_bytes, state.body_timeout).await?;
    // Events stay JSON text (checked, not built into values): see `domain::client`.
    let format = if ndjson { domain::BatchFormat::Ndjson } else { domain::BatchFormat::Array };
    let items = domain::split_batch(&body, format).map_err(IngestError::InvalidEvent)?;
    if items.is_empty() {
        return Err(IngestError::InvalidEvent("the batch holds no event".into()));
    }
    if items.len() > state.max_batch_events {
        return Err(IngestError::TooManyEvents { count: items.len(), limit: state.max_batch_events });
    }
    // The whole batch counts against the in-flight bound.
    let _permits = state.in_flight.clone().try_acquire_many_owned(items.len() as u32).map_err(|_| IngestError::Request(RequestError::Unavailable {
        what: "the gateway is at capacity (gateway.max_in_flight)".into(),
        retry_after_s: state.retry_after_s,
    }))?;
    // Parse and authorize every event before any of them costs Redis or Kafka work.
    let events: Vec<Result<ClientEvent<'_>, IngestError>> = items
        .into_iter()
        .map(|item| {
            let event = item
                .map_err(IngestError::InvalidEvent)
                .and_then(|raw| ClientEvent::from_raw(raw).map_err(|e| IngestError::InvalidEvent(e.to_string())))?;
            principal.require(Access::Ingest(event.source.as_str()))?;
            Ok(event)
        })
        .collect();
    let cost = events.iter().filter(|e| e.is_ok()).count() as u64;
    state.limiter.take(&principal, &[(RateKind::Requests, 1), (RateKind::Events, cost)]).await?.attach(&req);
    let received_at = now_rfc3339();
    let results = futures_util::future::join_all(events.into_iter().map(|event| {
        let received_at = &received_at;
        async move { accept_event(state, event?, received_at, None).await }
    }))
    .await;
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let unavailable = results.iter().filter(|r| matches!(r, Err(IngestError::Request(RequestError::Unavailable { .. })))).count();
    if accepted == 0 && unavailable > 0 {
        return Err(IngestError::Request(RequestError::Unavailable { what: "kafka did not acknowledge any event of the batch".into(), retry_after_s: state.retry_after_s }));
    }
    // With no event accepted, the status says why: the rejections' status when they agree, 400
    // otherwise. The body still lists every event's result.
    let refused = (accepted == 0).then(|| {
        let mut statuses = results.iter().filter_map(|r| r.as_ref().err().map(Problem::status));
        let first = statuses.next();
        first.filter(|s| statuses.all(|t| t == *s)).unwrap_or(StatusCode::BAD_REQUEST)
    });
    let answers: Vec<BatchResult> = results
        .into_iter()
        .map(|r| match r {
            Ok(answer) => BatchResult::Accepted(answer),
            Err(err) => {
                state.metrics.ingest_rejected.add(1, &[opentelemetry::KeyValue::new("reason", err.code())]);
                BatchResult::Rejected(Rejected::from(&err))
            }
        })
        .collect();
    let rejected = answers.len() - accepted;
    match refused {
        Some(status) if rejected > 0 => Ok(HttpResponse::build(status).json(BatchRefused::new(answers))),
        _ => Ok(HttpResponse::Ok().json(BatchAnswer { accepted, rejected, results: answers })),
    }
}

/// The events of `POST /ingest/batch`: at least one, at most gateway.max_batch_events (1000
/// unless configured otherwise).
// No Rust type holds a batch: `domain::split_batch` keeps each element as its JSON text, parsed
// as a `ClientEvent` on its own (one bad event does not refuse the others). The maximum is the
// setting's default (config/default.yaml); a deployment may configure another.
pub(crate) struct Batch;

impl utoipa::PartialSchema for Batch {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name(ClientEvent::name()))
            .min_items(Some(1))
            .max_items(Some(1000))
            .into()
    }
}

impl ToSchema for Batch {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((ClientEvent::name().into_owned(), <ClientEvent as utoipa::PartialSchema>::schema()));
    }
}

/// The answer to a batch: one result per event, in order.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchAnswer {
    pub(crate) accepted: usize,
    pub(crate) rejected: usize,
    pub(crate) results: Vec<BatchResult>,
}

/// A batch of which no event was accepted: the error shape, with every event's result.
#[derive(Serialize, ToSchema)]
pub(crate) struct BatchRefused {
    /// `batch_refused`.
    error: &'static str,
    message: String,
    accepted: usize,
    rejected: usize,
    results: Vec<BatchResult>,
}

impl BatchRefused {
    /// The answer when none of `results` is accepted.
    pub(crate) fn new(results: Vec<BatchResult>) -> Self {
        let rejected = results.len();
        BatchRefused {
            error: "batch_refused",
            message: format!("no event of the batch was accepted ({rejected} rejected; see results)"),
            accepted: 0,
            rejected,
            results,
        }
    }
}

/// One event's result in a batch answer, in the order the events came.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum BatchResult {
    Accepted(Accepted),
    Rejected(Rejected),
}

/// An event Kafka acknowledged: where it is.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub(crate) struct Accepted {
    /// `accepted`.
    #[schema(value_type = String)]
    status: std::borrow::Cow<'static, str>,
    id: String,
    source: String,
    topic: String,
    partition: i32,
    offset: i64,
}

/// One event of a batch that was not accepted.
#[derive(Serialize, ToSchema)]
pub(crate) struct Rejected {
    /// `rejected`.
    status: &'static str,
    error: &'static str,
    message: String,
}

impl From<&IngestError> for Rejected {
    fn from(err: &IngestError) -> Self {
        Rejected { status: "rejected", error: err.code(), message: err.to_string() }
    }
}

/// How long a produce may wait for room in the producer's local queue before it is refused:
/// a full queue means Kafka is not keeping up, and the client should back off.
const QUEUE_WAIT: Duration = Duration::from_millis(100);

#[utoipa::path(post, path = "/ingest", operation_id = "ingest", tag = "ingest",
    description = "One event. Answered 202 only once Kafka acknowledged it. Needs `ingest:<source>`.",
    params(("Idempotency-Key" = Option<String>, Header, max_length = 255, pattern = r"^[!-~]([ -~]*[!-~])?$",
        description = "A retry with the same key (within gateway.idempotency_window_s) gets the first answer; no second event")),
    request_body(content = ClientEvent, content_type = "application/json"),
    responses(
        (status = 202, description = "Kafka acknowledged the event", body = Accepted),
        (status = 409, description = "A request with the same Idempotency-Key is in flight", body = adapters::http::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = adapters::http::ErrorBody),
        (status = 413, description = "Larger than the pipeline carries (`event_too_large`, with `size` and `limit`) or than the body limit", body = adapters::http::ErrorBody),
        (status = 415, description = "Not JSON", body = adapters::http::ErrorBody),
        (status = 422, description = "No configuration for the source (`unknown_source`), or an Idempotency-Key reused with another body", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn ingest(req: HttpRequest, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, IngestError> {
    // The server span; a client's `traceparent` makes it part of the client's trace.
    let span = tracing::info_span!(
        "ingest",
        otel.name = "POST /ingest",
        otel.kind = "server",
        http.request.method = "POST",
        http.route = "/ingest",
        http.response.status_code = tracing::field::Empty,
        metastream.event.id = tracing::field::Empty,
        metastream.source = tracing::field::Empty,
        trace_id = tracing::field::Empty,
    );
    adapters::telemetry::propagation::set_parent(&span, adapters::telemetry::propagation::from_http(req.headers()));
    adapters::telemetry::propagation::record_trace_id(&span);
    let result = handle(req, body, &state).instrument(span.clone()).await;
    let status = match &result {
        Ok(r) => r.status().as_u16(),
        Err(err) => {
            state.metrics.ingest_rejected.add(1, &[opentelemetry::KeyValue::new("reason", err.code())]);
            actix_web::ResponseError::status_code(err).as_u16()
        }
    };
    span.record("http.response.status_code", status);
    result
}

async fn handle(req: HttpRequest, body: web::Payload, state: &State) -> Result<HttpResponse, IngestError> {
    let principal = state.auth.authorize(&req, Access::AnyIngest)?;
    require_json(&req)?;
    // Bound what is in flight: past the limit, refuse rather than queue without end.
    let _permit = state.in_flight.clone().try_acquire_owned().map_err(|_| IngestError::Request(RequestError::Unavailable {
        what: "the gateway is at capacity (gateway.max_in_flight)".into(),
        retry_after_s: state.retry_after_s,
    }))?;
    let body = read_body(&req, body, state.max_body_bytes, state.body_timeout).await?;
    let event = ClientEvent::parse(&body).map_err(|e| IngestError::InvalidEvent(e.to_string()))?;
    principal.require(Access::Ingest(event.source.as_str()))?;
    state.limiter.take(&principal, &[(RateKind::Requests, 1), (RateKind::Events, 1)]).await?.attach(&req);
    // An Idempotency-Key is the client's: scoped by its key, so clients never share answers.
    let idempotency_key = match req.headers().get("idempotency-key") {
        Some(v) => Some(format!("{}:{}", principal.id, idempotency::check_key(v.to_str().unwrap_or(""))?)),
        None => None,
    };
    let claim = match &idempotency_key {
        Some(key) => match idempotency::claim(state, key, &body).await? {
            idempotency::Claim::Replay(status, answer) => {
                let status = actix_web::http::StatusCode::from_u16(status).unwrap_or(actix_web::http::StatusCode::ACCEPTED);
                return Ok(HttpResponse::build(status).insert_header(("Idempotent-Replayed", "true")).json(answer));
            }
            idempotency::Claim::New(redis_key) => Some(redis_key),
        },
        None => None,
    };
    let result = accept_event(state, event, &now_rfc3339(), idempotency_key.as_deref()).await;
    if let Some(redis_key) = claim {
        match &result {
            Ok(accepted) => {
                let answer = serde_json::to_value(accepted).expect("an answer always serializes");
                idempotency::complete(state, &redis_key, &body, 202, &answer).await;
            }
            Err(_) => idempotency::release(state, &redis_key).await,
        }
    }
    Ok(HttpResponse::Accepted().json(result?))
}

/// Checks the event's source and waits for Kafka's ack; the answer body on success. A request's
/// `Idempotency-Key` travels as a header, so the pre-transformer can drop a second copy that a
/// retry wrote after the first one's answer was lost.
pub(crate) async fn accept_event(state: &State, event: ClientEvent<'_>, received_at: &str, idempotency_key: Option<&str>) -> Result<Accepted, IngestError> {
    if !state.catalog.is_loaded() {
        return Err(IngestError::Request(RequestError::Unavailable {
            what: "source configurations are not loaded yet (redis unreachable)".into(),
            retry_after_s: state.retry_after_s,
        }));
    }
    if state.catalog.resolve(event.source.as_str()).is_none() {
        return Err(IngestError::UnknownSource(format!(
            "source `{}` has no configuration; add it to the sources seed file (config/sources.yaml) \
             or store one in the redis hash `sources`",
            event.source
        )));
    }
    let current = tracing::Span::current();
    current.record("metastream.event.id", event.id.as_str());
    current.record("metastream.source", event.source.as_str());

    let Some(limits) = state.limits.get() else {
        return Err(IngestError::Request(RequestError::Unavailable {
            what: "kafka has not answered yet (the topics' size limits are unknown)".into(),
            retry_after_s: state.retry_after_s,
        }));
    };
    let max_event_bytes = limits.max_event_bytes();
    let key = event.entity_key();
    let payload = event.to_wire(received_at);
    if payload.len() > max_event_bytes {
        return Err(IngestError::EventTooLarge { size: payload.len(), limit: max_event_bytes });
    }
    let produce_span = tracing::info_span!(
        "produce",
        otel.name = %format!("send {}", state.ingest_topic),
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = %state.ingest_topic,
        messaging.kafka.message.key = %key,
        messaging.destination.partition.id = tracing::field::Empty,
        messaging.kafka.offset = tracing::field::Empty,
        metastream.event.id = event.id.as_str(),
        metastream.source = event.source.as_str(),
    );
    let trace = adapters::telemetry::propagation::headers_for(&produce_span);
    let mut kafka_headers: Vec<(&str, &[u8])> =
        vec![(headers::EVENT_ID, event.id.as_str().as_bytes()), (headers::SOURCE, event.source.as_str().as_bytes())];
    if let Some(key) = idempotency_key {
        kafka_headers.push((headers::IDEMPOTENCY_KEY, key.as_bytes()));
    }
    kafka_headers.extend(trace.iter().map(|(name, value)| (name.as_str(), value.as_bytes())));
    let record = Record { topic: &state.ingest_topic, key: Some(key.as_bytes()), payload: &payload, headers: kafka_headers };
    let delivery = adapters::kafka::send(&state.producer, record, QUEUE_WAIT, state.produce_timeout + Duration::from_secs(1))
        .instrument(produce_span.clone())
        .await;
    match delivery {
        Ok(d) => {
            produce_span.record("messaging.destination.partition.id", d.partition);
            produce_span.record("messaging.kafka.offset", d.offset);
            state.metrics.events_ingested.add(1, &[opentelemetry::KeyValue::new("source", event.source.to_string())]);
            tracing::debug!(event_id = %event.id, source = %event.source, partition = d.partition, offset = d.offset, "event accepted");
            Ok(Accepted {
                status: "accepted".into(),
                id: event.id.to_string(),
                source: event.source.to_string(),
                topic: state.ingest_topic.clone(),
                partition: d.partition,
                offset: d.offset,
            })
        }
        Err(SendError::TooLarge(err)) => {
            // A topic's limit shrank since start-up: permanent for this event, never a 503.
            tracing::warn!(event_id = %event.id, source = %event.source, error = %err, "kafka refused the event as too large");
            Err(IngestError::EventTooLarge { size: payload.len(), limit: max_event_bytes.min(payload.len().saturating_sub(1)) })
        }
        Err(err) => {
            tracing::warn!(event_id = %event.id, source = %event.source, error = %err, "kafka did not take the event");
            Err(unavailable(&err, state.retry_after_s))
        }
    }
}

fn unavailable(err: &SendError, retry_after_s: u32) -> IngestError {
    let what = match err {
        SendError::QueueFull => "the gateway's Kafka queue is full".to_owned(),
        SendError::TimedOut => "kafka did not acknowledge the event in time".to_owned(),
        SendError::TooLarge(err) | SendError::Failed(err) => format!("kafka did not acknowledge the event ({err})"),
    };
    IngestError::Request(RequestError::Unavailable { what, retry_after_s })
}

/// What `POST /ingest` and `POST /ingest/batch` answer besides 2xx.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IngestError {
    #[error(transparent)]
    Request(#[from] RequestError),
    /// The event is not one metastream takes (the message names the field).
    #[error("{0}")]
    InvalidEvent(String),
    /// Larger than every topic on its way can carry (`domain::limits`).
    #[error("the event is {size} bytes as written to Kafka; the limit is {limit} bytes (the smallest topic's max.message.bytes less what the pipeline adds around an event)")]
    EventTooLarge { size: usize, limit: usize },
    #[error("the batch holds {count} events; the limit is {limit} (gateway.max_batch_events)")]
    TooManyEvents { count: usize, limit: usize },
    #[error("{0}")]
    UnknownSource(String),
    /// A request with the same `Idempotency-Key` is still in flight.
    #[error("{0}")]
    Conflict(String),
    /// The `Idempotency-Key` was used for another body.
    #[error("{0}")]
    IdempotencyMismatch(String),
}

impl IngestError {
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        IngestError::Request(RequestError::BadRequest(message.into()))
    }
}

impl Problem for IngestError {
    fn status(&self) -> StatusCode {
        match self {
            IngestError::Request(e) => e.status(),
            IngestError::InvalidEvent(_) => StatusCode::BAD_REQUEST,
            IngestError::EventTooLarge { .. } | IngestError::TooManyEvents { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            IngestError::UnknownSource(_) | IngestError::IdempotencyMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
            IngestError::Conflict(_) => StatusCode::CONFLICT,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            IngestError::Request(e) => e.code(),
            IngestError::InvalidEvent(_) => "invalid_event",
            IngestError::EventTooLarge { .. } => "event_too_large",
            IngestError::TooManyEvents { .. } => "too_many_events",
            IngestError::UnknownSource(_) => "unknown_source",
            IngestError::Conflict(_) => "conflict",
            IngestError::IdempotencyMismatch(_) => "idempotency_key_reused",
        }
    }

    fn details(&self, body: &mut serde_json::Map<String, serde_json::Value>) {
        match self {
            IngestError::Request(e) => e.details(body),
            IngestError::EventTooLarge { size, limit } => {
                body.insert("size".into(), (*size).into());
                body.insert("limit".into(), (*limit).into());
            }
            _ => {}
        }
    }

    fn headers(&self, response: &mut actix_web::HttpResponseBuilder) {
        if let IngestError::Request(e) = self {
            e.headers(response);
        }
    }
}

adapters::problem_response!(IngestError);

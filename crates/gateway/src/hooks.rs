//! Sources that speak their own protocol (`domain::native`): `POST /hooks/{source}` for a
//! source of kind `github`, `jira` or `cloudevents`; `POST /api/v1/lineage` — the path
//! OpenLineage's HTTP transport posts to — for a source of kind `openlineage`; and
//! `/datahub/{source}` as a DataHub server to `acryl-datahub`'s REST emitter (`GET config`,
//! `POST aspects?action=ingestProposal|ingestProposalBatch`) for a source of kind `datahub`.
//!
//! Authenticity comes first, before anything is parsed or written: GitHub and Jira sign each
//! request with the source's secret (`sha256=` HMAC of the raw body, checked in constant time;
//! the secret is derived from `auth.key_secret`, never stored — see `admin`'s
//! `POST /v1/sources/{source}/secret`); CloudEvents and OpenLineage senders present a bearer key
//! with `ingest:<source>`. Each event then takes the same path as `POST /ingest`: the size and
//! depth budget, the idempotency claim (keyed by the protocol's delivery id, so a redelivery is
//! answered with the first answer and published once), and Kafka's ack before any 2xx.

use actix_web::{web, HttpRequest, HttpResponse};
use adapters::http::{read_body, Problem as _, RequestError};
use domain::auth::{Access, RateKind};
use domain::event::now_rfc3339;
use domain::native::{self, NativeError, Outcome, Translated};
use domain::source::{Signing, SourceKind};
use domain::{ClientEvent, SourceName};
use serde_json::json;
use tracing::Instrument as _;

use crate::routes::{accept_event, Accepted, BatchAnswer, BatchRefused, BatchResult, IngestError, Rejected};
use crate::{idempotency, State};

adapters::routes! { pub(crate) fn configure / ROUTES {
    POST "/hooks/{source}" => hook,
    POST "/cloudevents" => cloudevents,
    POST "/api/v1/lineage" => lineage,
    GET "/datahub/{source}/config" => datahub_config,
    POST "/datahub/{source}/aspects" => datahub_aspects,
} }

/// `POST /hooks/{source}`: a GitHub or Jira webhook delivery, or CloudEvents (binary,
/// structured or batched), for a source of that kind.
#[utoipa::path(post, path = "/hooks/{source}", operation_id = "hook", tag = "ingest",
    description = "A native delivery for a source of kind `github`, `jira` (signed: `X-Hub-Signature-256` / `X-Hub-Signature`, `sha256=` HMAC of the body with the source's secret) or `cloudevents` (bearer key with `ingest:<source>`). 202 once Kafka acknowledged every event; GitHub's `ping` and events the source drops are answered 200.",
    params(("source" = String, Path, description = "Source name")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "`ping` answered, or the event dropped (`native.unmapped: drop`), or a CloudEvents batch's per-event results", body = Object),
        (status = 202, description = "Kafka acknowledged the event", body = Accepted),
        (status = 404, description = "No source of a native kind by that name", body = adapters::http::ErrorBody),
        (status = 413, description = "Larger than the pipeline carries", body = adapters::http::ErrorBody),
        (status = 422, description = "The same delivery id with another body", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("hub_signature" = []), ("bearer" = [])))]
async fn hook(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, IngestError> {
    let name = SourceName::parse(path.into_inner()).map_err(|e| RequestError::NotFound(e.to_string()))?;
    let kind = native_kind(&state, &name)?;
    match kind {
        SourceKind::Openlineage => Err(RequestError::NotFound(format!("source `{name}` is of kind openlineage: its clients post to /api/v1/lineage?source={name}")).into()),
        SourceKind::Datahub => Err(RequestError::NotFound(format!("source `{name}` is of kind datahub: its emitters' server is /datahub/{name}")).into()),
        _ => receive(&req, body, &state, Target::Source(&name, kind)).await,
    }
}

/// `GET /datahub/{source}/config`: what DataHub's REST emitter asks first (`test_connection`,
/// the `datahub-rest` sink) — the answer a DataHub server gives, as far as the emitter reads it:
/// `noCode` (the string `"true"`), and no version that would move it to the OpenAPI endpoints.
#[utoipa::path(get, path = "/datahub/{source}/config", operation_id = "datahub_config", tag = "ingest",
    description = "For a source of kind datahub: the server configuration DataHub's REST emitter reads before it emits (point the emitter's `gms_server` at `/datahub/{source}`).",
    params(("source" = String, Path, description = "Source name")),
    responses(
        (status = 200, description = "The configuration the emitter checks", body = Object),
        (status = 404, description = "No source of kind datahub by that name", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn datahub_config(req: HttpRequest, path: web::Path<String>, state: web::Data<State>) -> Result<HttpResponse, IngestError> {
    let principal = state.auth.authorize(&req, Access::AnyIngest)?;
    let name = datahub_source(&state, path.into_inner())?;
    principal.require(Access::Ingest(name.as_str()))?;
    Ok(HttpResponse::Ok().json(json!({"noCode": "true", "retention": "false", "statefulIngestionCapable": false, "patchCapable": false, "models": {}, "metastream": {"source": name}})))
}

/// `POST /datahub/{source}/aspects?action=ingestProposal|ingestProposalBatch`: what DataHub's
/// REST emitter posts (Rest.li), with a bearer key holding `ingest:<source>`.
#[utoipa::path(post, path = "/datahub/{source}/aspects", operation_id = "datahub_aspects", tag = "ingest",
    description = "A MetadataChangeProposal (`action=ingestProposal`) or several (`action=ingestProposalBatch`) as DataHub's REST emitter sends them. The entity is the proposal's `entityUrn`. 200 once Kafka acknowledged every proposal.",
    params(("source" = String, Path, description = "Source name"),
        ("action" = String, Query, description = "`ingestProposal` or `ingestProposalBatch`")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 200, description = "Every proposal accepted: `{\"value\": \"success\", \"accepted\", \"results\"}`", body = Object),
        (status = 404, description = "No source of kind datahub by that name", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn datahub_aspects(req: HttpRequest, path: web::Path<String>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, IngestError> {
    state.auth.authorize(&req, Access::AnyIngest)?;
    let name = datahub_source(&state, path.into_inner())?;
    receive(&req, body, &state, Target::Source(&name, SourceKind::Datahub)).await
}

fn datahub_source(state: &State, raw: String) -> Result<SourceName, IngestError> {
    let name = SourceName::parse(raw).map_err(|e| RequestError::NotFound(e.to_string()))?;
    match native_kind(state, &name)? {
        SourceKind::Datahub => Ok(name),
        other => Err(RequestError::NotFound(format!("source `{name}` is of kind {}, not datahub", other.as_str())).into()),
    }
}

/// `POST /api/v1/lineage`: an OpenLineage event, for the source named by `?source=`, or the one
/// source of kind `openlineage`.
#[utoipa::path(post, path = "/api/v1/lineage", operation_id = "lineage", tag = "ingest",
    description = "An OpenLineage event (run, job or dataset) as the OpenLineage HTTP transport posts it, with a bearer key holding `ingest:<source>`. The job (`namespace/name`) is the entity of a run event.",
    params(("source" = Option<String>, Query, pattern = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description = "The source of kind openlineage (needed when there are several)")),
    request_body(content = Object, content_type = "application/json"),
    responses(
        (status = 202, description = "Kafka acknowledged the event (and its dataset events)", body = Object),
        (status = 404, description = "No source of kind openlineage (or several, and none named)", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn lineage(req: HttpRequest, query: web::Query<std::collections::HashMap<String, String>>, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, IngestError> {
    // The key first, as on every ingest route; its scope for the source once that is known.
    state.auth.authorize(&req, Access::AnyIngest)?;
    let name = match query.get("source") {
        Some(name) => SourceName::parse(name.clone()).map_err(|e| IngestError::bad_request(format!("source: {e}")))?,
        None => {
            let mut lineage = state.catalog.of_kind(SourceKind::Openlineage).into_iter();
            match (lineage.next(), lineage.next()) {
                (Some(only), None) => SourceName::parse(only).map_err(|e| RequestError::Internal(anyhow::anyhow!(e.to_string())))?,
                (None, _) => return Err(RequestError::NotFound("no source is of kind openlineage: configure one (`\"kind\": \"openlineage\"`)".into()).into()),
                (Some(_), Some(_)) => return Err(IngestError::bad_request("several sources are of kind openlineage: name one with ?source=")),
            }
        }
    };
    let kind = native_kind(&state, &name)?;
    if kind != SourceKind::Openlineage {
        return Err(RequestError::NotFound(format!("source `{name}` is of kind {}, not openlineage", kind.as_str())).into());
    }
    receive(&req, body, &state, Target::Source(&name, kind)).await
}

/// The kind of `name`'s configuration, when it is a native one.
fn native_kind(state: &State, name: &SourceName) -> Result<SourceKind, IngestError> {
    if !state.catalog.is_loaded() {
        return Err(RequestError::Unavailable { what: "source configurations are not loaded yet (redis unreachable)".into(), retry_after_s: state.retry_after_s }.into());
    }
    match state.catalog.get(name.as_str()).map(|c| c.config().kind) {
        Some(SourceKind::Envelope) => Err(RequestError::NotFound(format!("source `{name}` takes envelopes at POST /ingest (its kind is envelope)")).into()),
        Some(kind) => Ok(kind),
        None => Err(RequestError::NotFound(format!("source `{name}` has no configuration")).into()),
    }
}

/// A native request for `target`, in its server span (a client's `traceparent` makes it part of
/// the client's trace), its refusal counted.
async fn receive(req: &HttpRequest, body: web::Payload, state: &State, target: Target<'_>) -> Result<HttpResponse, IngestError> {
    let span = match target {
        Target::Source(name, kind) => tracing::info_span!("hook", otel.name = %format!("POST native {}", kind.as_str()), otel.kind = "server", metastream.source = name.as_str()),
        Target::RoutedCloudEvents => tracing::info_span!("hook", otel.name = "POST /cloudevents", otel.kind = "server"),
    };
    adapters::telemetry::propagation::set_parent(&span, adapters::telemetry::propagation::from_http(req.headers()));
    let result = translate_and_ingest(req, body, state, target).instrument(span).await;
    if let Err(err) = &result {
        state.metrics.ingest_rejected.add(1, &[opentelemetry::KeyValue::new("reason", err.code())]);
    }
    result
}

/// Where a request's events go: the source the path names, or (`POST /cloudevents`) each
/// CloudEvent's source by its `source` attribute.
#[derive(Clone, Copy)]
enum Target<'a> {
    Source(&'a SourceName, SourceKind),
    RoutedCloudEvents,
}

/// `POST /cloudevents`: CloudEvents (any mode) for the sources of kind cloudevents whose
/// `native.ce_sources` match each event's `source` attribute.
#[utoipa::path(post, path = "/cloudevents", operation_id = "cloudevents", tag = "ingest",
    description = "CloudEvents 1.0 in binary (`ce-*` headers, JSON data), structured or batched mode; each event goes to the source of kind cloudevents whose `native.ce_sources` names its `source` attribute (exactly, or a prefix ending in `*`). Needs `ingest:<that source>`.",
    request_body(content(
        (native::CloudEvent = "application/cloudevents+json"),
        (native::CloudEventBatch = "application/cloudevents-batch+json"))),
    responses(
        (status = 200, description = "A batch: one result per event", body = BatchAnswer),
        (status = 202, description = "Kafka acknowledged the event", body = Accepted),
        (status = 422, description = "No source takes the event's `source` attribute (`unknown_source`)", body = adapters::http::ErrorBody),
        adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = [])))]
async fn cloudevents(req: HttpRequest, body: web::Payload, state: web::Data<State>) -> Result<HttpResponse, IngestError> {
    receive(&req, body, &state, Target::RoutedCloudEvents).await
}

/// The source of kind cloudevents whose `native.ce_sources` match `ce_source` best.
fn route_cloudevent(state: &State, ce_source: &str) -> Result<SourceName, NativeError> {
    let best = state
        .catalog
        .of_kind(SourceKind::Cloudevents)
        .into_iter()
        .filter_map(|name| {
            let config = state.catalog.get(&name)?;
            let score = config.config().native.ce_sources.iter().filter_map(|p| native::ce_source_matches(p, ce_source)).max()?;
            Some((score, name))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
    let Some((_, name)) = best else {
        return Err(NativeError::Unrouted(format!("no source of kind cloudevents takes ce-source `{ce_source}`: name it in a source's native.ce_sources")));
    };
    SourceName::parse(name).map_err(|e| NativeError::Unrouted(e.to_string()))
}

async fn translate_and_ingest(req: &HttpRequest, body: web::Payload, state: &State, target: Target<'_>) -> Result<HttpResponse, IngestError> {
    let (name, kind) = match target {
        Target::Source(name, kind) => (Some(name), kind),
        Target::RoutedCloudEvents => (None, SourceKind::Cloudevents),
    };
    let principal = if kind.is_signed() {
        None
    } else {
        let principal = state.auth.authorize(req, Access::AnyIngest)?;
        if let Some(name) = name {
            principal.require(Access::Ingest(name.as_str()))?;
        }
        Some(principal)
    };
    let _permit = state.in_flight.clone().try_acquire_owned().map_err(|_| RequestError::Unavailable {
        what: "the gateway is at capacity (gateway.max_in_flight)".into(),
        retry_after_s: state.retry_after_s,
    })?;
    let body = read_body(req, body, state.max_body_bytes, state.body_timeout).await?;
    if let (true, Some(name)) = (kind.is_signed(), name) {
        verify_signature(req, state, name, kind, &body)?;
    }
    let headers: std::collections::HashMap<String, String> =
        req.headers().iter().filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned()))).collect();
    let config = match name {
        Some(name) => Some(state.catalog.get(name.as_str()).ok_or_else(|| RequestError::NotFound(format!("source `{name}` has no configuration")))?),
        None => None,
    };
    let default_native = domain::source::Native::default();
    let native = config.as_ref().map_or(&default_native, |c| &c.config().native);
    let invalid = |e: NativeError| match e {
        NativeError::Unrouted(why) => IngestError::UnknownSource(why),
        other => IngestError::InvalidEvent(other.to_string()),
    };
    let translated: Vec<Result<Translated, NativeError>> = match (kind, name) {
        (SourceKind::Cloudevents, Some(name)) => native::cloudevents(&|_| Ok(name.clone()), &headers, &body).map_err(invalid)?,
        (SourceKind::Cloudevents, None) => native::cloudevents(&|ce| route_cloudevent(state, ce), &headers, &body).map_err(invalid)?,
        (_, None) => unreachable!("only CloudEvents are routed"),
        (SourceKind::Github | SourceKind::Jira, Some(name)) => {
            let outcome = if kind == SourceKind::Github { native::github(name, native, &headers, &body) } else { native::jira(name, native, &headers, &body) }.map_err(invalid)?;
            match outcome {
                Outcome::Ping => return Ok(HttpResponse::Ok().json(json!({"status": "pong", "source": name}))),
                Outcome::Dropped { event_type } => {
                    state.metrics.native_dropped.add(1, &[opentelemetry::KeyValue::new("source", name.to_string()), opentelemetry::KeyValue::new("event_type", event_type.clone())]);
                    return Ok(HttpResponse::Ok().json(json!({"status": "dropped", "source": name, "event_type": event_type})));
                }
                Outcome::Events(events) => events.into_iter().map(Ok).collect(),
            }
        }
        (SourceKind::Openlineage, Some(name)) => native::openlineage(name, native, &body).map_err(invalid)?.into_iter().map(Ok).collect(),
        (SourceKind::Datahub, Some(name)) => {
            let query = web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string()).map_err(|e| IngestError::bad_request(format!("query: {e}")))?;
            let action = query.get("action").ok_or_else(|| IngestError::bad_request("action is required: ingestProposal or ingestProposalBatch"))?;
            native::datahub(name, native::DatahubAction::parse(action).map_err(invalid)?, &body).map_err(invalid)?
        }
        (SourceKind::Envelope, Some(_)) => unreachable!("checked by native_kind"),
    };
    // Rate limits: the key's; a signed source's own (`auth.default_rate_limit`, counted per
    // source, as if the source were a key).
    let events = translated.iter().filter(|t| t.is_ok()).count() as u64;
    let limited = match (&principal, name) {
        (Some(principal), _) => Some(principal.clone()),
        (None, Some(name)) => Some(std::sync::Arc::new(signed_sender(state, name))),
        (None, None) => None,
    };
    if let Some(limited) = limited {
        state.limiter.take(&limited, &[(RateKind::Requests, 1), (RateKind::Events, events)]).await?.attach(req);
    }
    let received_at = now_rfc3339();
    let batch = (kind == SourceKind::Cloudevents && native::CloudEventsMode::of(headers.get("content-type").map_or("", String::as_str)) == native::CloudEventsMode::Batch)
        || kind == SourceKind::Datahub;
    let mut results = Vec::with_capacity(translated.len());
    for t in translated {
        let result = match t {
            // A redelivery is the same body (its headers may differ: Jira's flow); a CloudEvent
            // or an OpenLineage event is the same event wherever it travels.
            Ok(t) => ingest_one(state, principal.as_deref(), t, &received_at, kind.is_signed().then_some(&body[..])).await,
            Err(NativeError::Unrouted(why)) => Err(IngestError::UnknownSource(why)),
            Err(e) => Err(IngestError::InvalidEvent(e.to_string())),
        };
        if !batch {
            // One request, one outcome: the first failure is the answer (what was accepted
            // before it stays accepted; a retry is answered from the idempotency claims).
            if let Err(err) = result {
                return Err(err);
            }
        }
        results.push(result);
    }
    let accepted = results.iter().filter(|r| r.is_ok()).count();
    let unavailable = results.iter().filter(|r| matches!(r, Err(IngestError::Request(RequestError::Unavailable { .. })))).count();
    let rejections: Vec<actix_web::http::StatusCode> = results.iter().filter_map(|r| r.as_ref().err().map(adapters::http::Problem::status)).collect();
    let answers: Vec<BatchResult> = results
        .into_iter()
        .map(|r| match r {
            Ok(answer) => BatchResult::Accepted(answer),
            Err(err) => BatchResult::Rejected(Rejected::from(&err)),
        })
        .collect();
    let rejected = answers.len() - accepted;
    if kind == SourceKind::Datahub {
        // As a DataHub server: success only when every proposal is in; otherwise an error the
        // emitter raises (its `message`) — a 503 it retries when Kafka was the trouble (the
        // proposals already accepted are recognized by their idempotency keys).
        if rejected == 0 {
            return Ok(HttpResponse::Ok().json(json!({"value": "success", "accepted": accepted, "results": answers})));
        }
        if unavailable > 0 {
            return Err(RequestError::Unavailable { what: format!("kafka did not acknowledge {unavailable} of {} proposals", answers.len()), retry_after_s: state.retry_after_s }.into());
        }
        return Ok(HttpResponse::BadRequest().json(json!({
            "error": "proposals_refused",
            "message": format!("{rejected} of {} proposals were refused (see results)", answers.len()),
            "status": 400,
            "accepted": accepted,
            "rejected": rejected,
            "results": answers,
        })));
    }
    if batch {
        if accepted == 0 {
            // As /ingest/batch: with no event accepted, the status says why — the rejections'
            // when they agree, 400 otherwise — and the body still lists every event's result.
            let mut statuses = rejections.iter().copied();
            let first = statuses.next();
            let status = first.filter(|s| statuses.all(|t| t == *s)).unwrap_or(actix_web::http::StatusCode::BAD_REQUEST);
            return Ok(HttpResponse::build(status).json(BatchRefused::new(answers)));
        }
        return Ok(HttpResponse::Ok().json(BatchAnswer { accepted, rejected, results: answers }));
    }
    match <[BatchResult; 1]>::try_from(answers) {
        Ok([one]) => Ok(HttpResponse::Accepted().json(one)),
        Err(many) => Ok(HttpResponse::Accepted().json(json!({"status": "accepted", "accepted": accepted, "results": many}))),
    }
}

/// One translated event through the ingest path (the key's scope for its source checked, when a
/// key was presented), under its delivery's idempotency claim; a second delivery of it must
/// carry the same `content` (the request's body), or by default the same envelope.
async fn ingest_one(state: &State, principal: Option<&adapters::auth::Principal>, t: Translated, received_at: &str, content: Option<&[u8]>) -> Result<Accepted, IngestError> {
    let content = content.unwrap_or(t.envelope.as_bytes());
    let event = ClientEvent::parse(t.envelope.as_bytes()).map_err(|e| IngestError::InvalidEvent(e.to_string()))?;
    if let Some(principal) = principal {
        principal.require(Access::Ingest(event.source.as_str()))?;
    }
    let name = event.source.clone();
    let Some(key) = t.idempotency.as_ref().map(|k| format!("native:{name}:{k}")) else {
        return accept_event(state, event, received_at, None).await;
    };
    let claim = match idempotency::claim(state, &key, content).await? {
        idempotency::Claim::Replay(_, answer) => return serde_json::from_value::<Accepted>(answer).map_err(|e| RequestError::Internal(anyhow::anyhow!(e)).into()),
        idempotency::Claim::New(redis_key) => redis_key,
    };
    let result = accept_event(state, event, received_at, Some(&key)).await;
    match &result {
        Ok(accepted) => idempotency::complete(state, &claim, content, 202, &serde_json::to_value(accepted).expect("an answer serializes")).await,
        Err(_) => idempotency::release(state, &claim).await,
    }
    result
}

/// Who a signed source's sender is to the rate limiter (and nothing else: it holds no scope).
fn signed_sender(state: &State, name: &SourceName) -> adapters::auth::Principal {
    adapters::auth::Principal {
        id: format!("source:{name}"),
        name: format!("{name}'s signed sender"),
        scopes: domain::auth::Scopes::new(Vec::new()),
        rate_limit: state.default_rate_limit,
        expires_at: None,
    }
}

/// Checks the sender's `sha256=` signature of `body` against each honoured generation of the
/// source's secret: 401 when it is missing or none matches.
fn verify_signature(req: &HttpRequest, state: &State, name: &SourceName, kind: SourceKind, body: &[u8]) -> Result<(), IngestError> {
    let header_name = if kind == SourceKind::Github { "x-hub-signature-256" } else { "x-hub-signature" };
    let server = state.server_secret.as_deref().ok_or_else(|| RequestError::Unavailable {
        what: "signed sources need auth.key_secret (METASTREAM__AUTH__KEY_SECRET), which their secrets derive from".into(),
        retry_after_s: state.retry_after_s,
    })?;
    let signing = state.catalog.get(name.as_str()).and_then(|c| c.config().signing).ok_or_else(|| {
        RequestError::InvalidKey(format!("source `{name}` has no secret yet: create one with POST /v1/sources/{name}/secret on the admin listener"))
    })?;
    let Some(given) = req.headers().get(header_name).and_then(|v| v.to_str().ok()) else {
        return Err(RequestError::InvalidKey(format!("missing {header_name}: sign each request with the source's secret")).into());
    };
    let now = chrono::Utc::now().timestamp();
    let label = Signing::label(name.as_str());
    let matches = signing.honoured(now).any(|generation| {
        let secret = domain::webhooks::WebhookSecret::derive(server, &label, generation).expose();
        native::hub_signature_matches(secret.as_bytes(), body, given)
    });
    if matches {
        Ok(())
    } else {
        Err(RequestError::InvalidKey(format!("{header_name} does not match the body: wrong secret, or the body changed on the way")).into())
    }
}

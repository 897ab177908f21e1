//! `GET /v1/pipeline`: the pipeline at a glance, for the console's health page. Each
//! instance's readiness comes from its pulse in Redis ([`adapters::pulse`]), each stage's
//! consumer lag from Kafka (the group's committed offsets against the topic's end), and
//! events/s, dead letters and end-to-end latency from the instances' metrics samples — the
//! gateway calls no other service.

use actix_web::{web, HttpRequest, HttpResponse};
use adapters::pulse::{InstanceView, Rates, ServiceView};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::admin::{authorize_view, may_view, unavailable, AdminError};
use crate::State;

adapters::routes! { pub(crate) fn configure / ROUTES {
    GET "/v1/pipeline" => pipeline,
} }

/// What a stage has not processed yet.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StageLag {
    /// `pre` or `post`.
    stage: &'static str,
    group: String,
    topic: String,
    /// Messages of `topic` past the group's committed offsets, every partition together;
    /// absent when Kafka did not answer (`error` says why).
    lag: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// The pipeline at a glance.
#[derive(Debug, Serialize, ToSchema)]
struct Pipeline {
    at: DateTime<Utc>,
    /// Every service, with how many instances reported and how many are ready.
    services: Vec<ServiceView>,
    /// Every instance heard from in the last 15 minutes.
    instances: Vec<InstanceView>,
    lag: Vec<StageLag>,
    /// Events/s, dead letters and latency per step; rates by source (only the sources the key
    /// may see).
    rates: Rates,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
struct PipelineQuery {
    /// How far back the chart goes, in minutes (1 to 60; default 15).
    #[param(minimum = 1, maximum = 60)]
    minutes: Option<u64>,
}

#[utoipa::path(get, path = "/v1/pipeline", operation_id = "pipeline", tag = "admin",
    description = "Each service's instances and readiness (from the pulse every instance writes to Redis every 5 s; one silent for 20 s is `silent`), each stage's consumer lag (from Kafka), and events/s, dead letters and end-to-end latency p50/p99 per 30 s over the last minutes (from the instances' metrics samples, every 15 s). Scope: `admin`, or any `read:` scope (rates only of the sources it covers).",
    params(PipelineQuery),
    responses((status = 200, description = "The pipeline at a glance", body = Pipeline), adapters::openapi::AuthErrors, adapters::openapi::RequestErrors),
    security(("bearer" = ["admin", "read:<source>"])))]
async fn pipeline(req: HttpRequest, state: web::Data<State>) -> Result<HttpResponse, AdminError> {
    let principal = authorize_view(&req, &state)?;
    let query: PipelineQuery = adapters::http::query(&req)?;
    let minutes = query.minutes.unwrap_or(15);
    if !(1..=60).contains(&minutes) {
        return Err(adapters::http::RequestError::BadRequest(format!("minutes: must be 1 to 60, not {minutes}")).into());
    }
    let lag = tokio::task::spawn_blocking({
        let state = state.clone();
        move || stage_lags(&state)
    });
    let reports = state.pulse.instances().await.map_err(|e| unavailable(&state, e))?;
    let samples = state.pulse.samples(adapters::store::pulse::MAX_SAMPLES as usize).await.map_err(|e| unavailable(&state, e))?;
    let now = Utc::now();
    let (instances, forget) = adapters::pulse::instances(now, reports);
    if let Err(err) = state.pulse.forget(&forget).await {
        tracing::debug!(error = %err, "forgetting instances gone for long failed; next time");
    }
    let mut rates = adapters::pulse::rates(now, &samples, std::time::Duration::from_secs(minutes * 60));
    rates.sources.retain(|source, _| may_view(&principal, source));
    let lag = lag.await.unwrap_or_default();
    Ok(HttpResponse::Ok().json(Pipeline { at: now, services: adapters::pulse::services(&instances), instances, lag, rates }))
}

/// The lag of each stage's consumer group. Blocking: asks the broker.
fn stage_lags(state: &State) -> Vec<StageLag> {
    state
        .stages
        .iter()
        .map(|(stage, group, topic)| {
            let (lag, error) = match adapters::kafka::groups::group_lag(&state.reader_config, group, topic) {
                Ok(n) => (Some(n), None),
                Err(e) => (None, Some(format!("{e:#}"))),
            };
            StageLag { stage, group: group.clone(), topic: topic.clone(), lag, error }
        })
        .collect()
}

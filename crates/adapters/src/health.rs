//! Readiness as the probes see it: the dependencies answer, and the service's own loops are
//! not stuck retrying.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::store::Pool;
use serde::Serialize;

/// A check run on each `/readyz`: blocking (it may call librdkafka), run on a blocking thread.
pub type KafkaProbe = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// Shared between a service's loops (which report trouble) and its `/readyz`.
#[derive(Clone)]
pub struct Health {
    redis: Option<(Pool, Duration)>,
    kafka: Option<KafkaProbe>,
    /// What is failing, and when it was last reported.
    trouble: Arc<Mutex<Option<(String, Instant)>>>,
}

impl Health {
    pub fn new(redis: Option<(Pool, Duration)>, kafka: Option<KafkaProbe>) -> Self {
        Health { redis, kafka, trouble: Arc::new(Mutex::new(None)) }
    }

    /// Marks the service not ready, saying why (e.g. "redis unavailable, retrying").
    pub fn set_trouble(&self, why: impl Into<String>) {
        *self.trouble.lock().expect("health lock") = Some((why.into(), Instant::now()));
    }

    /// Whether trouble was reported within `window` and not cleared since: a loop is retrying
    /// a dependency that fails.
    pub fn troubled_within(&self, window: Duration) -> bool {
        self.trouble.lock().expect("health lock").as_ref().is_some_and(|(_, at)| at.elapsed() <= window)
    }

    pub fn clear_trouble(&self) {
        let mut t = self.trouble.lock().expect("health lock");
        if t.take().is_some() {
            tracing::info!("recovered");
        }
    }

    /// Runs every check; `Ok` when all pass, otherwise the report of each.
    pub async fn check(&self) -> Result<Readiness, Readiness> {
        let mut checks = BTreeMap::new();
        let mut ready = true;
        if let Some((pool, timeout)) = &self.redis {
            let r = crate::store::ping(pool, *timeout).await.map_err(|e| e.to_string());
            ready &= r.is_ok();
            checks.insert("redis", status(r));
        }
        if let Some(probe) = &self.kafka {
            let probe = probe.clone();
            let r = tokio::task::spawn_blocking(move || probe()).await.unwrap_or_else(|e| Err(e.to_string()));
            ready &= r.is_ok();
            checks.insert("kafka", status(r));
        }
        if let Some((why, _)) = self.trouble.lock().expect("health lock").clone() {
            ready = false;
            checks.insert("processing", why);
        }
        let report = Readiness { status: if ready { "ready" } else { "not_ready" }, checks };
        if ready {
            Ok(report)
        } else {
            Err(report)
        }
    }
}

/// `GET /readyz`: each dependency's check.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Readiness {
    /// `ready` or `not_ready`.
    pub status: &'static str,
    /// Each check's result (`ok` or what failed), by name (`kafka`, `redis`, `processing`).
    pub checks: BTreeMap<&'static str, String>,
}

fn status(r: Result<(), String>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => e,
    }
}

impl crate::retry::Trouble for Health {
    fn trouble(&self, why: String) {
        self.set_trouble(why);
    }
}

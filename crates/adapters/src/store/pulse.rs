//! Every instance's pulse (`<prefix>pulse:instances`, a hash) and its metrics' samples
//! (`<prefix>pulse:samples`, a capped list, newest first): what [`crate::pulse`] writes and the
//! gateway's `GET /v1/pipeline` reads.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use deadpool_redis::redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};

use super::{query_pipeline, timed, Pool, StoreError};
use crate::metrics::Totals;

/// One instance's last word: ready or not, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstanceReport {
    /// `gateway`, `pre-transformer`, `post-transformer` or `consumer-api`.
    pub service: String,
    /// The pod's name, or `<host>-<pid>` outside Kubernetes.
    pub instance: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub reported_at: DateTime<Utc>,
    /// Its `/readyz` at that moment.
    pub ready: bool,
    /// Each readiness check (`kafka`, `redis`, `processing`): `ok`, or what failed.
    pub checks: BTreeMap<String, String>,
}

impl InstanceReport {
    /// Its field in the instances' hash.
    pub fn field(&self) -> String {
        format!("{}/{}", self.service, self.instance)
    }
}

/// What one instance counted over `seconds` up to `at`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub service: String,
    pub instance: String,
    pub at: DateTime<Utc>,
    pub seconds: f64,
    #[serde(flatten)]
    pub counted: Totals,
}

/// The most samples kept: with four services of two instances each, one sample every
/// [`crate::pulse::SAMPLE_EVERY`] per instance, a little over an hour.
pub const MAX_SAMPLES: isize = 2048;

/// Reads and writes the pulse. Cheap to clone.
#[derive(Clone)]
pub struct PulseStore {
    pool: Pool,
    keys: domain::KeySchema,
    timeout: Duration,
}

impl PulseStore {
    pub fn new(pool: Pool, keys: domain::KeySchema, timeout: Duration) -> Self {
        PulseStore { pool, keys, timeout }
    }

    /// Writes one instance's report, replacing its last.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn report(&self, report: &InstanceReport) -> Result<(), StoreError> {
        let json = serde_json::to_string(report).expect("a report serializes");
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.hset(self.keys.pulse_instances(), report.field(), json).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }

    /// Adds a sample, keeping the newest [`MAX_SAMPLES`].
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn push_sample(&self, sample: &Sample) -> Result<(), StoreError> {
        let json = serde_json::to_string(sample).expect("a sample serializes");
        let key = self.keys.pulse_samples();
        query_pipeline(&self.pool, self.timeout, deadpool_redis::redis::pipe().lpush(&key, json).ignore().ltrim(&key, 0, MAX_SAMPLES - 1).ignore()).await
    }

    /// Every instance's last report; one that does not parse is left out (and logged).
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn instances(&self) -> Result<Vec<InstanceReport>, StoreError> {
        super::json_hash(&self.pool, &self.keys.pulse_instances(), self.timeout, "instance report").await
    }

    /// The newest `n` samples, newest first; one that does not parse is left out.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn samples(&self, n: usize) -> Result<Vec<Sample>, StoreError> {
        let stop = isize::try_from(n).unwrap_or(MAX_SAMPLES).min(MAX_SAMPLES) - 1;
        let raw: Vec<String> = timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            Ok::<_, StoreError>(conn.lrange(self.keys.pulse_samples(), 0, stop).await?)
        })
        .await?;
        Ok(raw.iter().filter_map(|json| serde_json::from_str(json).ok()).collect())
    }

    /// Forgets instances (`<service>/<instance>` fields): those gone for long, or one that
    /// stops.
    ///
    /// # Errors
    /// When Redis fails or does not answer in time.
    pub async fn forget(&self, fields: &[String]) -> Result<(), StoreError> {
        if fields.is_empty() {
            return Ok(());
        }
        timed(self.timeout, async {
            let mut conn = self.pool.get().await?;
            let () = conn.hdel(self.keys.pulse_instances(), fields).await?;
            Ok::<_, StoreError>(())
        })
        .await
    }
}

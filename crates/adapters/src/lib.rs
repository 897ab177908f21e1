//! The I/O every metastream service shares, so each service holds only its own logic.
//!
//! - [`settings`]: layered configuration (`config/default.yaml`, `config/{env}.yaml`,
//!   `METASTREAM__SECTION__KEY`), validated at start with the bad key named.
//! - [`kafka`]: producer, consumer and admin set-up; librdkafka properties passed through.
//! - [`store`]: the Redis pool and timeouts around Redis calls.
//! - [`sources`]: source configs in Redis (seeding, loading) and the cached, refreshed catalog.
//! - [`http`]: the JSON error shape, bearer auth, health endpoints.
//! - [`health`]: readiness, as the probes see it.
//! - [`metrics`]: instruments, OTLP export and the Prometheus `/metrics` text.
//! - [`process`]: a service process from start to exit (what every `main` runs).
//! - [`pulse`]: each instance's readiness and metrics samples in Redis, summed for the console's
//!   health page.
//! - [`telemetry`]: `tracing` set-up, with optional OTLP trace export.
//! - [`shutdown`]: the SIGTERM/SIGINT signal `main` hands to the services, `Interrupted`, and
//!   the exit code of a run.
//! - [`retry`]: capped exponential backoff with jitter; `pause` and `with_redis_retry`.
//! - [`stage`]: what both transformers share (its own map in `stage/mod.rs`): the runner, the
//!   offset ledger, produce-and-wait, dead letters, counters, the Redis-restart guard, the
//!   `on_error` policy.
//! - [`watchdog`]: a blocking librdkafka call that never returns ends the process (exit 75),
//!   so the orchestrator starts it again, rather than leaving a stage stopped but healthy.
//! - [`liveness`]: a transformer whose partitions, group membership or loop stand still with
//!   work waiting ends the process (exit 75), as a hung call does.
//! - [`webhooks`]: webhook subscriptions, their delivery status and dead letters in Redis.
//! - [`auth`]: API keys in Redis, the in-memory view every replica authenticates from, and
//!   per-key rate limits shared by all replicas.
//! - [`openapi`]: what every service's OpenAPI document shares (error body, health answers,
//!   bearer scheme, a document filtered to one listener).

pub mod auth;
pub mod health;
pub mod http;
pub mod kafka;
pub mod liveness;
pub mod metrics;
pub mod openapi;
pub mod process;
pub mod pulse;
pub mod retry;
pub mod settings;
pub mod shutdown;
pub mod stage;
pub mod sources;
pub mod store;
pub mod telemetry;
pub mod watchdog;
pub mod webhooks;

pub use health::Health;
/// The allocator every service binary installs (`#[global_allocator]`): under load, glibc's
/// malloc cost the services about a fifth of their CPU; mimalloc a fraction of that.
pub use mimalloc::MiMalloc as Allocator;
pub use settings::{Secret, Settings};
pub use sources::{SourceCatalog, SourceStore};

/// The build version every service reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// This process's instance name: `$HOSTNAME` (the pod name in Kubernetes) or a random id.
pub fn instance_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("local-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]))
}

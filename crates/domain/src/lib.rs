//! metastream's pure core, shared by every service.
//!
//! - [`event`]: the event envelope clients send, its validated id and source, and how it is parsed.
//! - [`client`]: the gateway's view of a client event: checked, its payload kept as JSON text.
//! - [`source`]: a source's configuration (pre and post operation lists, error policy, version).
//! - [`operations`]: the operation catalog; one file per operation.
//! - [`pipeline`]: compiles a [`SourceConfig`] into runnable operations and applies them.
//! - [`path`]: the field-path syntax operations use to address an event.
//! - [`condition`]: the `when` predicates that decide whether an operation runs.
//! - [`schema`]: topic names, the Redis key schema and the Kafka header names.
//! - [`messages`]: what travels between stages on Kafka besides the event itself.
//! - [`limits`]: the size and depth budget every message of an accepted event must fit.
//! - [`webhooks`]: webhook subscriptions, Standard Webhooks signatures, the retry schedule.
//! - [`native`]: requests of sources that speak their own protocol (GitHub, Jira, CloudEvents,
//!   OpenLineage, DataHub) turned into envelopes.
//! - [`auth`]: the trust model: API key format, scopes, and what a request needs.
//! - [`object`]: an event's payload as the stages hold it, parsed only when read.
//! - [`projection`]: the parts of an event a consumer asked for (`fields=`).
//! - [`masking`]: what a reader is shown of a message its source's operations did not mask yet.
//!
//! This crate does no I/O: no tokio, rdkafka or redis anywhere in its dependency tree.

pub mod auth;
pub mod client;
pub mod condition;
pub mod event;
pub mod limits;
pub mod masking;
pub mod messages;
pub mod native;
pub mod object;
pub mod operations;
pub mod path;
pub mod pipeline;
pub mod projection;
pub mod schema;
pub mod source;
pub mod webhooks;

pub use client::{check_json, split_batch, BatchFormat, ClientEvent};
pub use condition::Condition;
pub use event::{Event, EventError, EventId, Provenance, Routing, SourceName};
pub use limits::TopicLimits;
pub use messages::ProcessedNotice;
pub use object::LazyObject;
pub use operations::{describe_catalog, OperationKind, ParamDoc};
pub use pipeline::{CompiledSource, ConfigError, Context, Input, Outcome, RunError, Stage};
pub use schema::{DeadLetterReason, EventOutcome, KeySchema, Topics, TransactionOutcome};
pub use source::{OnError, OperationSpec, SourceConfig};

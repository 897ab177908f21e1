//! The machinery both transformers share: take a batch of messages, and, once their effects are
//! done, produce what they lead to and store their offsets. Every effect is retried with backoff
//! until it succeeds or the service shuts down; nothing is committed before its effects.
//!
//! - [`runner`]: [`StageRunner`], the consume loop: batches in, a [`Processor`] over them,
//!   delivery tasks pipelined, offsets released through the [`ledger`]; [`Shared`] clients.
//! - [`ledger`]: [`OffsetLedger`], which offsets may be stored given batches finishing out of
//!   order (pure, unit- and property-tested).
//! - [`produce`]: [`Outgoing`] messages handed to Kafka, acks awaited, failures retried; what
//!   Kafka refuses for good replaced by dead letters; the size check against topic limits.
//! - [`dead_letter`]: [`Failure`], dead letters and references (a dead letter always fits).
//! - [`headers`]: the Kafka headers of outgoing messages and what is read from consumed ones.
//! - [`counters`]: [`Tally`] and the outcome and dead-letter counters.
//! - [`guard`]: the Redis-restart guard (re-processing what a restarted Redis may have lost).
//! - [`apply`]: a source's operations applied under its `on_error` policy.
//! - [`pipeline`]: the batches handed to Kafka and not yet committed, and the transitions
//!   between them (acknowledged, committed, aborted and redone, rewound).
//! - [`turns`]: under exactly once, which transaction a batch joins and which may commit when,
//!   with a pool of producers taking turns (pure, unit- and property-tested).
//! - [`transaction`]: exactly once — output and offsets committed in one Kafka transaction; the
//!   pool of transactional producers, its calls and the revoke hook.
//!
//! Nothing outside this module's users (the transformers) imports it: the retry helpers live in
//! [`crate::retry`], offset commits in [`crate::kafka`], [`Interrupted`] in [`crate::shutdown`].

pub mod apply;
pub mod counters;
pub mod dead_letter;
pub mod guard;
pub mod headers;
pub mod ledger;
mod pipeline;
pub mod produce;
pub mod runner;
pub mod transaction;
pub mod turns;

pub use crate::shutdown::Interrupted;
pub use apply::{apply, Applied};
pub use counters::Tally;
pub use dead_letter::{dead_letter, reference, Failure};
pub use headers::{event_headers, message_headers, output_headers, source_of, with_headers, with_hop_times, with_ingest_time};
pub use ledger::OffsetLedger;
pub use produce::{oversize, produce_all, Outgoing};
pub use runner::{process_span, Processed, Processor, Replay, Shared, StageRunner, Transform, Transformer};

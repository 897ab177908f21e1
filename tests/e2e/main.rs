//! End-to-end tests: the four services started in-process on port 0, against the real Kafka
//! broker and Redis that `make test` starts. Each test gets its own topics, consumer groups and
//! Redis key prefix, so tests run side by side. A test that cannot reach Kafka or Redis fails,
//! saying so.

mod harness;

mod admin;
mod budget;
mod consume;
mod delivery;
mod guarantees;
mod liveness;
mod native;
mod observability;
mod errors;
mod exactly_once;
mod prototype;
mod sources;
mod store;
mod tracing;
mod trust;
mod webhooks;

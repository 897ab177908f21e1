//! `consumer-api`: see the crate docs in `lib.rs`. The image runs the same `run` from
//! `metastream-services` (crates/services).

#[global_allocator]
static ALLOCATOR: adapters::Allocator = adapters::Allocator;

fn main() -> std::process::ExitCode {
    consumer_api::run()
}

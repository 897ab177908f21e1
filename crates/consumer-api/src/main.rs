//! `consumer-api`: see the crate docs in `lib.rs`.

use adapters::process::Threads;
use adapters::settings::Service;

#[global_allocator]
static ALLOCATOR: adapters::Allocator = adapters::Allocator;

fn main() -> std::process::ExitCode {
    adapters::process::run(Service::ConsumerApi, Threads::Multi, |settings, shutdown| async move { consumer_api::Application::build(settings, shutdown).await?.run_until_stopped().await })
}

//! `pre-transformer`: see the crate docs in `lib.rs`.

use adapters::process::Threads;
use adapters::settings::Service;

#[global_allocator]
static ALLOCATOR: adapters::Allocator = adapters::Allocator;

fn main() -> std::process::ExitCode {
    adapters::process::run(Service::PreTransformer, Threads::Current, |settings, shutdown| async move { pre_transformer::PreTransformer::build(settings, shutdown).await?.run_until_stopped().await })
}

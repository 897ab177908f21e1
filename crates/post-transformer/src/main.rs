//! `post-transformer`: see the crate docs in `lib.rs`.

use adapters::settings::Service;

#[global_allocator]
static ALLOCATOR: adapters::Allocator = adapters::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = adapters::Settings::load()?;
    let _telemetry = adapters::telemetry::init(Service::PostTransformer.name(), &settings.telemetry)?;
    let shutdown = adapters::shutdown::on_signal();
    post_transformer::PostTransformer::build(settings, shutdown).await?.run_until_stopped().await
}

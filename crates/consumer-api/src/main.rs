//! `consumer-api`: see the crate docs in `lib.rs`.

use adapters::settings::Service;

#[global_allocator]
static ALLOCATOR: adapters::Allocator = adapters::Allocator;

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let settings = adapters::Settings::load()?;
    let _telemetry = adapters::telemetry::init(Service::ConsumerApi.name(), &settings.telemetry)?;
    let shutdown = adapters::shutdown::on_signal();
    let run = async { consumer_api::Application::build(settings, shutdown).await?.run_until_stopped().await };
    Ok(adapters::shutdown::exit_code(run.await))
}

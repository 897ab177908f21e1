//! The shutdown signal. `main` owns signals and hands a [`CancellationToken`] to the service;
//! tests cancel the token instead.

pub use tokio_util::sync::CancellationToken;

/// Resolves on SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing the SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown signal received");
}

/// A token cancelled when [`signal`] fires.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let child = token.clone();
    tokio::spawn(async move {
        signal().await;
        child.cancel();
    });
    token
}

/// What a service's `main` returns for how its run ended: success only for a requested
/// shutdown. Any other end is logged at ERROR with its cause chain — the line an operator finds
/// — and is a non-zero exit, so an orchestrator restarts the process and counts the failure.
pub fn exit_code(result: anyhow::Result<()>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %format!("{err:#}"), "stopping on an unrecoverable error");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Shutdown came before the work was done: what was in hand is not finished and must not be
/// committed (the next owner redoes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("shutting down before the work was done")]
pub struct Interrupted;

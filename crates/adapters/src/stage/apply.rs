//! A source's operations applied to one event, under the source's `on_error` policy.

use domain::{DeadLetterReason, Stage};

use super::dead_letter::Failure;
use super::runner::Shared;
use crate::retry::{pause, Backoff};
use crate::shutdown::Interrupted;

/// What a stage's operations made of an event.
// Returned once per event and matched at once, never kept in a collection: boxing the event to
// shrink the other variants would cost an allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Applied {
    /// Transformed, by the source config of the given version.
    Keep(domain::Event, u64),
    /// An operation dropped it on purpose.
    Filtered,
    /// An operation failed and the source's policy is `skip`.
    Skipped,
    /// To the dead-letter topic, for this reason.
    DeadLetter(Failure),
}

/// Applies `stage`'s operations of the event's source, following the source's `on_error`
/// policy. Under `fail`, waits (reporting not ready) until a config change lets it through.
///
/// # Errors
/// [`Interrupted`] when shutdown comes while waiting.
pub async fn apply(
    s: &Shared,
    stage: Stage,
    service: crate::settings::Service,
    original: domain::Event,
    input: Option<domain::Input<'_>>,
) -> Result<Applied, Interrupted> {
    use domain::{OnError, Outcome};
    let mut backoff = Backoff::infra();
    let mut pending = Some(original);
    loop {
        let current = pending.as_ref().expect("kept while retrying");
        let Some(source) = s.catalog.resolve(current.source.as_str()) else {
            let error = format!("source `{}` has no configuration", current.source);
            return Ok(Applied::DeadLetter(Failure::new(DeadLetterReason::MissingConfig, error)));
        };
        // Only `fail` retries the same event; otherwise it is transformed in place, uncopied.
        let mut event = if source.config().on_error == OnError::Fail {
            current.clone()
        } else {
            pending.take().expect("present")
        };
        let ctx = domain::Context {
            stage,
            service: service.name(),
            instance: &s.instance,
            version: crate::VERSION,
            config_version: source.version(),
            now: chrono::Utc::now(),
            input,
        };
        let (id, src) = (event.id.clone(), event.source.clone());
        let outcome = source.run(stage, &mut event, &ctx);
        // The payload stays text until an operation reads it. The pre stage checked it, so only
        // a record put into Redis by hand can read as unreadable here (a number out of range, a
        // lone surrogate, nesting too deep); the operations saw it empty and what they decided
        // stands for nothing: the message goes to the dead letters as it came.
        if let Some(error) = event.payload.unreadable() {
            return Ok(Applied::DeadLetter(Failure::new(DeadLetterReason::Unparseable, format!("payload: {error}"))));
        }
        match outcome {
            Ok(Outcome::Keep) => return Ok(Applied::Keep(event, source.version())),
            Ok(Outcome::Dropped { index, op }) => {
                tracing::debug!(event_id = %id, source = %src, index, op, "event filtered");
                return Ok(Applied::Filtered);
            }
            Err(err) => {
                s.metrics.operation_failures.add(
                    1,
                    &[
                        opentelemetry::KeyValue::new("stage", stage.as_str()),
                        opentelemetry::KeyValue::new("source", src.to_string()),
                        opentelemetry::KeyValue::new("operation", err.op),
                    ],
                );
                match source.config().on_error {
                    OnError::DeadLetter => {
                        let operation = Some((err.index, err.op));
                        return Ok(Applied::DeadLetter(Failure { reason: DeadLetterReason::OperationFailed, error: err.to_string(), operation }));
                    }
                    OnError::Skip => {
                        tracing::warn!(event_id = %id, source = %src, error = %err, "operation failed; skipping the event (on_error: skip)");
                        return Ok(Applied::Skipped);
                    }
                    OnError::Fail => {
                        tracing::error!(event_id = %id, source = %src, error = %err, "operation failed; holding until the config is fixed (on_error: fail)");
                        s.health.set_trouble(format!("source {src} failing: {err}"));
                        pause(&mut backoff, &s.shutdown).await?;
                    }
                }
            }
        }
    }
}

//! Counting what became of events: `metastream_events_processed_total` by stage, source and
//! [`EventOutcome`], and `metastream_dead_letters_total` by [`DeadLetterReason`].

use domain::{DeadLetterReason, EventOutcome, Stage};

use super::runner::Shared;

/// Counts outcomes per (source, outcome) and adds each total once: one counter update per
/// batch and source instead of one per event.
/// A batch holds few sources, so a list beats a map.
#[derive(Default)]
pub struct Tally(Vec<(String, EventOutcome, u64)>);

impl Tally {
    pub fn add(&mut self, source: &str, outcome: EventOutcome) {
        match self.0.iter_mut().find(|(s, o, _)| s == source && *o == outcome) {
            Some((_, _, n)) => *n += 1,
            None => self.0.push((source.to_owned(), outcome, 1)),
        }
    }

    /// Adds the totals to `metastream_events_processed_total` for `stage`.
    pub fn record(self, s: &Shared, stage: Stage) {
        for (source, outcome, n) in self.0 {
            s.count_n(stage, &source, outcome, n);
        }
    }
}

impl Shared {
    /// Counts an event's outcome in a stage.
    pub fn count(&self, stage: Stage, source: &str, outcome: EventOutcome) {
        self.count_n(stage, source, outcome, 1);
    }

    /// Counts `n` events of one outcome (see [`Tally`]).
    pub fn count_n(&self, stage: Stage, source: &str, outcome: EventOutcome, n: u64) {
        self.metrics.events_processed.add(
            n,
            &[
                opentelemetry::KeyValue::new("stage", stage.as_str()),
                opentelemetry::KeyValue::new("source", source.to_owned()),
                opentelemetry::KeyValue::new("outcome", outcome.as_str()),
            ],
        );
    }

    /// Counts a dead letter (and the `dead_lettered` outcome).
    pub fn count_dead_letter(&self, stage: Stage, source: &str, reason: DeadLetterReason) {
        self.count(stage, source, EventOutcome::DeadLettered);
        self.metrics.dead_letters.add(
            1,
            &[
                opentelemetry::KeyValue::new("stage", stage.as_str()),
                opentelemetry::KeyValue::new("source", source.to_owned()),
                opentelemetry::KeyValue::new("reason", reason.as_str()),
            ],
        );
    }
}

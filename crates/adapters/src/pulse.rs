//! Every instance's pulse, for the operator console's health page: services never call each
//! other, so each one writes to Redis, every [`REPORT_EVERY`], whether it is ready (its own
//! `/readyz` checks), and every [`SAMPLE_EVERY`] what its metrics counted since its last
//! sample (events acknowledged, published and dead-lettered by source; the end-to-end latency
//! histogram's buckets). The gateway's `GET /v1/pipeline` reads them back and sums them with
//! [`instances`], [`services`] and [`rates`]: instances and their readiness, events/s and latency p50/p99 per
//! [`STEP`] over the last minutes, rates and dead letters per source. Prometheus and Grafana
//! remain the place for more; this is the glance.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::health::Health;
use crate::metrics::{Metrics, Totals};
use crate::settings::Service;
use crate::shutdown::CancellationToken;
use crate::store::pulse::{InstanceReport, PulseStore, Sample};

/// How often an instance reports whether it is ready.
pub const REPORT_EVERY: Duration = Duration::from_secs(5);
/// How often an instance adds a sample of its metrics.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(15);
/// An instance that has not reported for this long is shown silent.
pub const SILENT_AFTER: Duration = Duration::from_secs(20);
/// An instance silent for this long is forgotten (scaled down, or gone without a goodbye).
pub const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The width of one point of the chart.
pub const STEP: Duration = Duration::from_secs(30);

/// This instance's name in the pulse: the pod's name in Kubernetes (unique there); elsewhere
/// the host and the process id, since several instances may share a host.
pub fn instance_name() -> String {
    let host = crate::instance_id();
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        host
    } else {
        format!("{host}-{}", std::process::id())
    }
}

/// A running pulse; [`Pulse::stopped`] waits for it to take this instance's report away.
pub struct Pulse(tokio::task::JoinHandle<()>);

impl Pulse {
    /// Once shutdown was asked: waits (at most a second) until the report is taken away, so a
    /// stopped instance is gone from the console rather than silent.
    pub async fn stopped(self) {
        let _ = tokio::time::timeout(Duration::from_secs(1), self.0).await;
    }
}

/// Reports this instance's readiness and samples its metrics until `shutdown`, then takes its
/// report away (a stopped instance is gone, not silent; one that crashed stays, silent).
/// Redis trouble is logged and waited out: the pulse never holds up the service.
pub fn spawn(service: Service, health: Health, metrics: std::sync::Arc<Metrics>, store: PulseStore, shutdown: CancellationToken) -> Pulse {
    let service = service.name();
    Pulse(tokio::spawn(async move {
        let instance = instance_name();
        let started_at = Utc::now();
        let mut last = (Utc::now(), metrics.totals());
        let mut ticks = tokio::time::interval(REPORT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let field = loop {
            tokio::select! {
                () = shutdown.cancelled() => break format!("{service}/{instance}"),
                _ = ticks.tick() => {}
            }
            let (ready, readiness) = match health.check().await {
                Ok(r) => (true, r),
                Err(r) => (false, r),
            };
            let now = Utc::now();
            let report = InstanceReport {
                service: service.to_owned(),
                instance: instance.clone(),
                version: env!("CARGO_PKG_VERSION").to_owned(),
                started_at,
                reported_at: now,
                ready,
                checks: readiness.checks.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            };
            let mut result = store.report(&report).await;
            if result.is_ok() && (now - last.0).to_std().unwrap_or_default() >= SAMPLE_EVERY {
                let totals = metrics.totals();
                let sample = Sample {
                    service: service.to_owned(),
                    instance: instance.clone(),
                    at: now,
                    seconds: (now - last.0).num_milliseconds() as f64 / 1000.0,
                    counted: totals.since(&last.1),
                };
                result = store.push_sample(&sample).await;
                if result.is_ok() {
                    last = (now, totals);
                }
            }
            match result {
                Err(err) if !failing => {
                    tracing::warn!(error = %err, "could not write this instance's pulse to redis; the console shows it silent until redis answers");
                    failing = true;
                }
                Ok(()) if failing => failing = false,
                _ => {}
            }
        };
        let _ = store.forget(&[field]).await;
    }))
}

/// An instance as the health page shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct InstanceView {
    #[serde(flatten)]
    pub report: InstanceReport,
    /// `ready`, `not_ready`, or `silent` (no report for [`SILENT_AFTER`]).
    pub state: &'static str,
    /// Seconds since its last report.
    pub age_s: f64,
}

/// A service's instances, counted.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceView {
    pub service: String,
    pub instances: usize,
    pub ready: usize,
}

/// One point of the chart: what every instance counted in one [`STEP`].
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Point {
    /// The step's end.
    pub at: DateTime<Utc>,
    pub ingested_per_s: f64,
    pub published_per_s: f64,
    pub dead_letters: u64,
    /// End-to-end latency (gateway acknowledgement to publication) of the events published in
    /// the step: estimated from the histogram's buckets, as Prometheus' `histogram_quantile`
    /// does; absent when none was published.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// A source's rates.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct SourceRates {
    /// Events acknowledged per second over the last five minutes (or since the samples start).
    pub ingested_per_s: f64,
    /// Events published per second, likewise.
    pub published_per_s: f64,
    /// Messages dead-lettered over the last hour (or `window_s`, what the samples cover).
    pub dead_letters: u64,
}

/// What the samples say, summed over every instance.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Rates {
    /// Points, oldest first, every [`STEP`] over the window asked for.
    pub series: Vec<Point>,
    /// Latency over the last five minutes.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// By source.
    pub sources: BTreeMap<String, SourceRates>,
    /// How far back the samples reach (seconds; at most an hour is used).
    pub window_s: f64,
}

/// Instances as the page shows them, and those to forget (silent for [`FORGET_AFTER`]).
pub fn instances(now: DateTime<Utc>, reports: Vec<InstanceReport>) -> (Vec<InstanceView>, Vec<String>) {
    let mut shown = Vec::new();
    let mut forget = Vec::new();
    for report in reports {
        let age = (now - report.reported_at).num_milliseconds().max(0) as f64 / 1000.0;
        if age >= FORGET_AFTER.as_secs_f64() {
            forget.push(report.field());
            continue;
        }
        let state = if age >= SILENT_AFTER.as_secs_f64() {
            "silent"
        } else if report.ready {
            "ready"
        } else {
            "not_ready"
        };
        shown.push(InstanceView { report, state, age_s: (age * 10.0).round() / 10.0 });
    }
    shown.sort_by(|a, b| (&a.report.service, &a.report.instance).cmp(&(&b.report.service, &b.report.instance)));
    (shown, forget)
}

/// Every service, with how many of its instances are shown and ready (a service with none is
/// listed too: that is what an operator needs to see first).
pub fn services(shown: &[InstanceView]) -> Vec<ServiceView> {
    Service::ALL
        .iter()
        .map(|s| {
            let mine: Vec<_> = shown.iter().filter(|i| i.report.service == s.name()).collect();
            ServiceView { service: s.name().to_owned(), instances: mine.len(), ready: mine.iter().filter(|i| i.state == "ready").count() }
        })
        .collect()
}

/// Sums `samples` (any order) into the chart of the last `window` and the per-source rates.
pub fn rates(now: DateTime<Utc>, samples: &[Sample], window: Duration) -> Rates {
    let step = STEP.as_secs_f64();
    let steps = (window.as_secs_f64() / step).ceil().max(1.0) as usize;
    // Steps end on multiples of STEP, the last one at or after `now`.
    let last_end = (now.timestamp() as f64 / step).ceil() * step;
    let first_start = last_end - steps as f64 * step;
    let mut per_step = vec![Totals::default(); steps];
    let (mut recent, mut hour) = (Totals::default(), Totals::default());
    let mut oldest = now;
    let age = |s: &Sample| (now - s.at).num_milliseconds() as f64 / 1000.0;
    for sample in samples.iter().filter(|s| age(s) <= 3600.0) {
        oldest = oldest.min(sample.at - chrono::Duration::milliseconds((sample.seconds * 1000.0) as i64));
        hour.add(&sample.counted);
        if age(sample) <= 300.0 {
            recent.add(&sample.counted);
        }
        let at = sample.at.timestamp_millis() as f64 / 1000.0;
        if at > first_start && at <= last_end {
            let i = (((at - first_start) / step).ceil() as usize).clamp(1, steps) - 1;
            per_step[i].add(&sample.counted);
        }
    }
    let covered = (now - oldest).num_milliseconds() as f64 / 1000.0;
    let recent_s = covered.clamp(1.0, 300.0);
    let sum = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    let series = per_step
        .iter()
        .enumerate()
        .map(|(i, t)| Point {
            at: DateTime::from_timestamp((first_start + (i + 1) as f64 * step) as i64, 0).unwrap_or(now),
            ingested_per_s: round(sum(&t.ingested) as f64 / step),
            published_per_s: round(sum(&t.published) as f64 / step),
            dead_letters: sum(&t.dead_lettered),
            p50_ms: quantile(0.5, &t.e2e).map(|s| round(s * 1000.0)),
            p99_ms: quantile(0.99, &t.e2e).map(|s| round(s * 1000.0)),
        })
        .collect();
    let mut sources: BTreeMap<String, SourceRates> = BTreeMap::new();
    for (source, n) in &recent.ingested {
        sources.entry(source.clone()).or_default().ingested_per_s = round(*n as f64 / recent_s);
    }
    for (source, n) in &recent.published {
        sources.entry(source.clone()).or_default().published_per_s = round(*n as f64 / recent_s);
    }
    for (source, n) in &hour.dead_lettered {
        sources.entry(source.clone()).or_default().dead_letters = *n;
    }
    Rates {
        series,
        p50_ms: quantile(0.5, &recent.e2e).map(|s| round(s * 1000.0)),
        p99_ms: quantile(0.99, &recent.e2e).map(|s| round(s * 1000.0)),
        sources,
        window_s: covered.clamp(0.0, 3600.0).round(),
    }
}

/// The `q` quantile (seconds) of per-bucket `counts` over [`crate::metrics::SECONDS`]:
/// linear within the bucket it falls in (the first bucket starts at 0); one in the last,
/// unbounded bucket is its lower bound — as Prometheus' `histogram_quantile`.
pub fn quantile(q: f64, counts: &[u64]) -> Option<f64> {
    let bounds = crate::metrics::SECONDS;
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut below = 0u64;
    for (i, n) in counts.iter().enumerate() {
        if *n > 0 && (below + n) as f64 >= rank {
            let Some(upper) = bounds.get(i) else { return bounds.last().copied() };
            let lower = if i == 0 { 0.0 } else { bounds[i - 1] };
            return Some(lower + (upper - lower) * ((rank - below as f64) / *n as f64).clamp(0.0, 1.0));
        }
        below += n;
    }
    bounds.last().copied()
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at: DateTime<Utc>, instance: &str, ingested: u64, published: u64, dead: u64, e2e: Vec<u64>) -> Sample {
        Sample {
            service: "post-transformer".into(),
            instance: instance.into(),
            at,
            seconds: 15.0,
            counted: Totals {
                ingested: BTreeMap::from([("jira".to_owned(), ingested)]),
                published: BTreeMap::from([("jira".to_owned(), published)]),
                dead_lettered: if dead > 0 { BTreeMap::from([("github".to_owned(), dead)]) } else { BTreeMap::new() },
                e2e,
            },
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        // A multiple of STEP: steps end on the minute and half-minute.
        DateTime::from_timestamp(1_700_000_010 + s, 0).unwrap()
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket_as_prometheus_does() {
        // 10 events in (5 ms, 10 ms], 10 in (10 ms, 25 ms].
        let mut counts = vec![0; crate::metrics::SECONDS.len() + 1];
        counts[4] = 10;
        counts[5] = 10;
        assert_eq!(quantile(0.5, &counts), Some(0.01));
        assert!((quantile(0.75, &counts).unwrap() - 0.0175).abs() < 1e-9);
        assert_eq!(quantile(0.5, &[]), None);
        // All above the last bound: its bound, not infinity.
        let mut over = vec![0; crate::metrics::SECONDS.len() + 1];
        over[crate::metrics::SECONDS.len()] = 3;
        assert_eq!(quantile(0.99, &over), Some(30.0));
    }

    #[test]
    fn totals_since_an_earlier_reading_are_the_difference_and_a_restart_counts_from_zero() {
        let earlier = Totals { ingested: BTreeMap::from([("jira".into(), 10)]), e2e: vec![1, 2], ..Totals::default() };
        let now = Totals { ingested: BTreeMap::from([("jira".into(), 15), ("github".into(), 2)]), e2e: vec![1, 5], ..Totals::default() };
        let d = now.since(&earlier);
        assert_eq!(d.ingested, BTreeMap::from([("github".into(), 2), ("jira".into(), 5)]));
        assert_eq!(d.e2e, vec![0, 3]);
        assert_eq!(Totals { ingested: BTreeMap::from([("jira".into(), 3)]), ..Totals::default() }.since(&earlier).ingested["jira"], 3);
        assert_eq!(earlier.since(&earlier), Totals::default(), "nothing new: nothing written");
    }

    #[test]
    fn samples_of_every_instance_sum_into_steps_and_rates_per_source() {
        let now = at(600);
        let mut fast = vec![0; crate::metrics::SECONDS.len() + 1];
        fast[4] = 30; // (5 ms, 10 ms]
        let samples = vec![
            sample(at(590), "a", 30, 30, 0, fast.clone()),
            sample(at(590), "b", 30, 30, 2, fast.clone()),
            sample(at(575), "a", 15, 15, 0, fast),
            // Older than an hour: left out.
            sample(at(600 - 4000), "a", 1000, 1000, 1000, Vec::new()),
        ];
        let r = rates(now, &samples, Duration::from_secs(120));
        assert_eq!(r.series.len(), 4);
        assert_eq!(r.series.last().unwrap().at, at(600));
        let last = r.series.last().unwrap();
        assert_eq!((last.ingested_per_s, last.published_per_s, last.dead_letters), (2.5, 2.5, 2));
        assert!(last.p50_ms.unwrap() > 5.0 && last.p99_ms.unwrap() <= 10.0, "{last:?}");
        assert_eq!(r.series[0].p50_ms, None, "nothing published then");
        assert_eq!(r.sources["jira"].ingested_per_s, 1.88, "75 events over what the samples cover (40 s)");
        assert_eq!(r.sources["github"].dead_letters, 2);
        assert_eq!(r.window_s, 40.0);
    }

    #[test]
    fn instances_silent_for_long_are_shown_silent_then_forgotten_and_every_service_is_listed() {
        let now = at(10_000);
        let report = |instance: &str, ago: i64, ready: bool| InstanceReport {
            service: "gateway".into(),
            instance: instance.into(),
            version: "0.1.0".into(),
            started_at: at(0),
            reported_at: now - chrono::Duration::seconds(ago),
            ready,
            checks: BTreeMap::new(),
        };
        let (shown, forget) = instances(now, vec![report("a", 1, true), report("b", 2, false), report("c", 60, true), report("d", 3600, true)]);
        assert_eq!(shown.iter().map(|i| (i.report.instance.as_str(), i.state)).collect::<Vec<_>>(), [("a", "ready"), ("b", "not_ready"), ("c", "silent")]);
        assert_eq!(forget, ["gateway/d"]);
        let services = services(&shown);
        assert_eq!(services.len(), 4);
        assert_eq!((services[0].service.as_str(), services[0].instances, services[0].ready), ("gateway", 3, 1));
        assert!(services[1..].iter().all(|s| s.instances == 0));
    }
}

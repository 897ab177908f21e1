//! Prints the Prometheus text `/metrics` serves, for a counter whose label value holds every
//! character the exposition format escapes (`"`, `\`, a newline). `scripts/prometheus.sh check`
//! has a real Prometheus scrape it and reads the value back through its API.

use opentelemetry::KeyValue;

/// The label value the check expects back, byte for byte.
const HOSTILE: &str = "a\"b\\c\nd";

fn main() {
    let metrics = adapters::metrics::Metrics::new("hostile-label-check", "");
    metrics.http_requests.add(1, &[KeyValue::new("route", HOSTILE)]);
    print!("{}", metrics.render());
}

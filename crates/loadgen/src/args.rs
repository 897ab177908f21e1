//! The command line, and the events the load is made of.

use clap::{Parser, ValueEnum};

use crate::report::now_us;

#[derive(Copy, Clone, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Http,
    KafkaProduce,
    KafkaRoundtrip,
    /// A raw rdkafka consumer (read_committed) reading `--topic` from the start.
    KafkaConsume,
    /// `GET /consume?max=1000` on the consumer-api (`--url`), one new group, from the start.
    HttpConsume,
    /// A raw consume → produce loop in Kafka transactions, `--topic` to `--to-topic`: the floor
    /// under a transformer's CPU per event.
    KafkaTransform,
}

#[derive(Parser, Debug, Clone)]
#[command(name = "metastream-loadgen")]
pub struct Args {
    #[arg(long, value_enum, default_value = "http")]
    pub mode: Mode,
    /// Gateway base URL.
    #[arg(long, default_value = "http://127.0.0.1:8081")]
    pub url: String,
    #[arg(long, default_value = "your-secret-key")]
    pub token: String,
    /// Events per request (1: POST /ingest; more: POST /ingest/batch).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Closed loop: this many clients, each sending as soon as its previous request is answered.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Open loop: events per second (overrides --clients' pacing; clients become the sender pool).
    #[arg(long)]
    pub rate: Option<u64>,
    /// How long to run.
    #[arg(long, default_value_t = 10)]
    pub seconds: u64,
    /// Approximate size of each event's JSON, in bytes.
    #[arg(long, default_value_t = 1024)]
    pub event_size: usize,
    /// Distinct entities (ids repeat across them: updates).
    #[arg(long, default_value_t = 10_000)]
    pub entities: u64,
    /// Sources, cycled (each must have a config).
    #[arg(long, value_delimiter = ',', default_value = "jira,github,serviceX")]
    pub sources: Vec<String>,
    /// Kafka bootstrap servers (raw modes and --e2e-topic).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka: String,
    /// Topic for the raw modes.
    #[arg(long, default_value = "loadgen-raw")]
    pub topic: String,
    /// `kafka-transform`: where each message read from `--topic` is written.
    #[arg(long)]
    pub to_topic: Option<String>,
    /// `kafka-transform`: messages per transaction, at most (a transformer's `batch_size`).
    #[arg(long, default_value_t = 500)]
    pub transaction_events: usize,
    /// Consume this topic (the output topic) to measure end-to-end latency.
    #[arg(long)]
    pub e2e_topic: Option<String>,
    /// Processes to measure: `name=pid` (repeatable).
    #[arg(long = "pid")]
    pub pids: Vec<String>,
    /// A label for this run in the results.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Write results as JSON here.
    #[arg(long)]
    pub json: Option<String>,
    /// The consume modes and `kafka-transform`: stop after this many events (or `--seconds`).
    #[arg(long)]
    pub max_events: Option<u64>,
    /// `http-consume`: events per call.
    #[arg(long, default_value_t = 1000)]
    pub consume_max: u64,
    /// `http-consume`: callers of the one group, each calling back to back and acknowledging its
    /// own answers by their cursors (more than one: while one reads its answer, the next is
    /// taken — how a reader pipelines HTTP calls).
    #[arg(long, default_value_t = 1)]
    pub consume_clients: usize,
    /// Only create `--topic` (6 partitions) and exit.
    #[arg(long)]
    pub create_topic: bool,
    /// Only delete every topic whose name starts with this prefix, and exit (a benchmark run's
    /// topics: they hold gigabytes).
    #[arg(long)]
    pub delete_topics: Option<String>,
}

/// A ~`size`-byte event for entity `n`, as JSON text. Written directly, not built as a value:
/// the load generator shares the machine with what it measures.
pub fn event(args: &Args, filler: &str, n: u64, seq: u64) -> String {
    let source = &args.sources[(n % args.sources.len() as u64) as usize];
    debug_assert!(!source.contains(['"', '\\']), "source names need no JSON escaping");
    format!(
        r#"{{"id":"lg-{n}","source":"{source}","payload":{{"seq":{seq},"title":"load generator event","status":"open","owner":"team-a","filler":"{filler}"}},"metadata":{{"sent_at_us":{}}}}}"#,
        now_us()
    )
}

/// The filler that brings an event to about `--event-size` bytes.
pub fn filler(args: &Args) -> String {
    "x".repeat(args.event_size.saturating_sub(160))
}

//! The operation engine's throughput on one core: a 10-operation pipeline on a ~1 KiB event,
//! (a) on an already-parsed event and (b) with JSON parse and serialize around it, plus each
//! operation alone to find hot spots. Run with `cargo bench -p domain --bench engine`; criterion
//! prints events/s as "elem/s". Numbers and method: `crates/domain/BENCHMARKS.md`.

use std::hint::black_box;

use chrono::TimeZone;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use domain::{CompiledSource, Context, Event, Input, SourceConfig, Stage};
use serde_json::{json, Value};

/// Events cloned ahead of each timed batch: small enough to stay in cache (the service runs
/// operations on an event it just parsed), large enough to hide the timer's cost.
const BATCH: u64 = 64;

fn operations() -> Value {
    json!([
        {"op": "insert_field", "params": {"target": "metadata.origin", "attribute": "source"}},
        {"op": "cast", "params": {"fields": {"payload.priority": "int", "payload.estimate_h": "float"}}},
        {"op": "mask_field", "params": {"fields": ["payload.reporter.email"], "mode": "sha256", "salt": "bench-salt"}},
        {"op": "classify", "params": {"rules": [
            {"tag": "PII", "field_names": ["(?i)e-?mail", "(?i)^(ssn|social_security_number)$", "(?i)phone"],
             "values": ["[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}", "\\b\\d{3}-\\d{2}-\\d{4}\\b"]},
            {"tag": "GDPR", "field_names": ["(?i)^(first_?name|last_?name|birth_?date|home_?address)$"]}
        ]}},
        {"op": "replace_field", "params": {"rename": {"summary": "title"}}},
        {"op": "copy_field", "params": {"from": "payload.project.key", "to": "metadata.project"}},
        {"op": "set_key", "params": {"fields": ["source", "payload.project.key"]}},
        {"op": "insert_header", "params": {"name": "x-origin", "attribute": "source"}},
        {"op": "add_timestamp", "params": {}},
        {"op": "validate", "params": {"required": ["payload.title", "payload.project.key", "payload.priority"]}},
    ])
}

/// A Jira-like issue of about 1 KiB on the wire.
fn event_json() -> Value {
    json!({
        "id": "PROJ-12345",
        "source": "jira",
        "payload": {
            "summary": "Login fails with SSO when the session cookie expired",
            "description": "Steps: open the portal, wait for the session to expire, click login. Expected: redirect to the identity provider. Actual: a blank page and a 500 in the logs.",
            "status": "In Progress",
            "priority": "2",
            "estimate_h": 3,
            "labels": ["auth", "sso", "regression", "customer-facing"],
            "project": {"key": "PROJ", "name": "Customer Portal", "lead": "a.lovelace"},
            "reporter": {"display_name": "Grace Hopper", "email": "grace.hopper@example.com", "timezone": "Europe/Paris"},
            "assignee": {"display_name": "Ada Lovelace", "account_id": "5b10ac8d82e05b22cc7d4ef5"},
            "components": [{"id": 10001, "name": "auth-service"}, {"id": 10002, "name": "web-frontend"}],
            "fix_versions": ["2024.07", "2024.08"],
            "created": "2024-07-18T09:12:44.000+0200",
            "updated": "2024-07-20T12:30:01.512+0200",
            "votes": 7,
            "watchers": 12,
            "resolution": null,
            "environment": "production, eu-west-1, build 8841",
        },
        "metadata": {"created_at": "2024-07-18T07:12:44Z", "schema_version": 3, "tenant": "acme"},
    })
}

fn context(now: chrono::DateTime<chrono::Utc>) -> Context<'static> {
    Context {
        stage: Stage::Pre,
        service: "pre-transformer",
        instance: "bench-1",
        version: "0.1.0",
        config_version: 1,
        now,
        input: Some(Input { topic: "pre_process_meta_data_events", partition: 0, offset: 1 }),
    }
}

fn compiled(ops: Value) -> CompiledSource {
    let config: SourceConfig = serde_json::from_value(json!({"source": "jira", "pre": ops})).unwrap();
    CompiledSource::compile(config).unwrap()
}

fn engine(c: &mut Criterion) {
    let now = chrono::Utc.with_ymd_and_hms(2024, 7, 20, 12, 34, 56).unwrap();
    let ctx = context(now);
    let pipeline = compiled(operations());
    let wire = serde_json::to_vec(&event_json()).unwrap();
    let event = Event::from_wire(&wire).unwrap();

    // Sanity: the pipeline does what it says on this event.
    let mut check = event.clone();
    pipeline.run(Stage::Pre, &mut check, &ctx).unwrap();
    assert_eq!(check.metadata["tags"], json!(["PII"]));
    assert_eq!(check.routing.key.as_deref(), Some("jira:PROJ"));
    eprintln!("event: {} bytes in, {} bytes out", wire.len(), check.to_wire().len());

    let mut group = c.benchmark_group("engine");
    group.throughput(Throughput::Elements(1));
    group.bench_function("clone_only", |b| b.iter(|| black_box(event.clone())));
    group.bench_function("run_10_ops", |b| {
        b.iter_batched_ref(
            || event.clone(),
            |e| pipeline.run(Stage::Pre, black_box(e), &ctx).unwrap(),
            BatchSize::NumIterations(BATCH),
        )
    });
    group.bench_function("parse_run_serialize_10_ops", |b| {
        b.iter(|| {
            let mut e = Event::from_wire(black_box(&wire)).unwrap();
            pipeline.run(Stage::Pre, &mut e, &ctx).unwrap();
            black_box(e.to_wire())
        })
    });
    group.bench_function("parse_serialize_only", |b| {
        b.iter(|| black_box(Event::from_wire(black_box(&wire)).unwrap().to_wire()))
    });
    group.finish();

    // The gateway's work per event: the client's body to the ingest topic's bytes.
    let client = serde_json::to_vec(&json!({
        "id": event.id.as_str(), "source": event.source.as_str(), "payload": event.payload, "metadata": event.metadata,
    }))
    .unwrap();
    let mut ingest = c.benchmark_group("ingest");
    ingest.throughput(Throughput::Elements(1));
    ingest.bench_function("value_tree", |b| {
        b.iter(|| {
            let mut e = Event::parse_client(black_box(&client)).unwrap();
            e.received_at = Some("2024-07-20T12:34:56.000Z".into());
            black_box(e.to_wire())
        })
    });
    ingest.bench_function("client_event", |b| {
        b.iter(|| black_box(domain::ClientEvent::parse(black_box(&client)).unwrap().to_wire("2024-07-20T12:34:56.000Z")))
    });
    ingest.finish();

    // What each transformer does to an event no operation of its touches the payload of (the
    // default sources: `add_timestamp` before storage, `add_processing_info` after): parse the
    // message (the pre stage checks the payload: it comes from the ingest topic), run the stage,
    // write the record (pre) or the published event (post).
    let mut stages = c.benchmark_group("stage");
    stages.throughput(Throughput::Elements(1));
    let pre = compiled(json!([{"op": "add_timestamp", "params": {}}]));
    let post: SourceConfig = serde_json::from_value(json!({"source": "jira", "post": [{"op": "add_processing_info", "params": {}}]})).unwrap();
    let post = CompiledSource::compile(post).unwrap();
    let post_ctx = Context { stage: Stage::Post, service: "post-transformer", ..ctx.clone() };
    let loadgen = serde_json::to_vec(&json!({
        "id": "lg-1", "source": "jira", "received_at": "2024-07-20T12:34:56.000Z",
        "payload": {"seq": 1, "title": "load generator event", "status": "open", "owner": "team-a", "filler": "x".repeat(864)},
        "metadata": {"sent_at_us": 1_721_478_896_000_000u64},
    }))
    .unwrap();
    for (shape, ingested) in [("jira", &wire), ("loadgen", &loadgen)] {
        let mut stored = Event::from_wire(ingested).unwrap();
        pre.run(Stage::Pre, &mut stored, &ctx).unwrap();
        assert!(stored.payload.is_verbatim(), "add_timestamp leaves the payload alone");
        stored.provenance.ingest_partition = Some(0);
        stored.provenance.ingest_offset = Some(1);
        let record = stored.to_record();
        stages.bench_function(format!("pre_{shape}"), |b| {
            b.iter(|| {
                let mut e = Event::from_wire(black_box(ingested)).unwrap();
                e.payload.check().unwrap();
                pre.run(Stage::Pre, &mut e, &ctx).unwrap();
                e.provenance.ingest_partition = Some(0);
                e.provenance.ingest_offset = Some(1);
                black_box(e.to_record())
            })
        });
        stages.bench_function(format!("post_{shape}"), |b| {
            b.iter(|| {
                let mut e = Event::from_wire(black_box(&record)).unwrap();
                post.run(Stage::Post, &mut e, &post_ctx).unwrap();
                black_box(e.to_wire())
            })
        });
    }
    stages.finish();

    let mut ops = c.benchmark_group("op");
    ops.throughput(Throughput::Elements(1));
    // Each operation alone, on the event as the pipeline hands it to that operation.
    let mut input = event.clone();
    for spec in operations().as_array().unwrap() {
        let name = spec["op"].as_str().unwrap();
        let single = compiled(json!([spec]));
        ops.bench_function(name, |b| {
            b.iter_batched_ref(
                || input.clone(),
                |e| single.run(Stage::Pre, black_box(e), &ctx).unwrap(),
                BatchSize::NumIterations(BATCH),
            )
        });
        single.run(Stage::Pre, &mut input, &ctx).unwrap();
    }
    // classify on an event without PII: every name and value is searched, nothing matches.
    let classify = compiled(json!([operations()[3].clone()]));
    let mut clean = event.clone();
    clean.payload["reporter"].as_object_mut().unwrap().remove("email");
    ops.bench_function("classify_no_match", |b| {
        b.iter_batched_ref(
            || clean.clone(),
            |e| classify.run(Stage::Pre, black_box(e), &ctx).unwrap(),
            BatchSize::NumIterations(BATCH),
        )
    });
    // classify on events whose field names it has not seen: the per-thread name cache misses.
    let mut n = 0u64;
    ops.bench_function("classify_new_shape", |b| {
        b.iter_batched_ref(
            || {
                n += 1;
                let mut e = event.clone();
                e.payload.insert(format!("field_{n}"), json!(n));
                e
            },
            |e| classify.run(Stage::Pre, black_box(e), &ctx).unwrap(),
            BatchSize::NumIterations(BATCH),
        )
    });
    ops.finish();
}

criterion_group!(benches, engine);
criterion_main!(benches);

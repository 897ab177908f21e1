//! Sources that speak their own protocol, driven by their real client libraries (installed by
//! `scripts/clients.sh`, which `make test` runs): GitHub's example payloads from
//! `@octokit/webhooks-examples` signed by `@octokit/webhooks-methods`, OpenLineage's Python
//! client with its HTTP transport, and the CloudEvents Python SDK.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::harness::{Stack, TOKEN};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Where `scripts/clients.sh install` put the client packages; the test fails, saying how to
/// install them, when they are not there.
fn client(var: &str, default: &str) -> PathBuf {
    let path = std::env::var(var).map(PathBuf::from).unwrap_or_else(|_| root().join(default));
    assert!(path.exists(), "{} is missing: run `scripts/clients.sh install` (make test does) — the client libraries these tests drive", path.display());
    path
}

fn node_modules() -> PathBuf {
    client("METASTREAM_CLIENTS_NODE_PATH", "var/clients/node/node_modules")
}

fn python() -> PathBuf {
    client("METASTREAM_CLIENTS_PYTHON", "var/clients/venv/bin/python")
}

/// Runs a client script; its stdout, one JSON object per line.
async fn run(program: &Path, args: &[&str]) -> Vec<Value> {
    let out = tokio::process::Command::new(program)
        .args(args)
        .env("METASTREAM_CLIENTS_NODE_PATH", node_modules())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{} {args:?} failed ({}):\n{stdout}\n{}", program.display(), out.status, String::from_utf8_lossy(&out.stderr));
    stdout.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"))).collect()
}

/// An admin API call (`Stack::admin`, without `If-Match`): its status and body.
async fn admin(stack: &Stack, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, _, answer) = stack.admin(method, path, body, None).await;
    (status, answer)
}

/// Configures `config` through the admin API and waits until every service runs it; the answer.
async fn configure(stack: &Stack, config: Value) -> Value {
    let name = config["source"].as_str().unwrap().to_owned();
    let (status, answer) = admin(stack, Method::PUT, &format!("/v1/sources/{name}"), Some(config)).await;
    assert_eq!(status, 200, "{answer}");
    stack.wait_for_config(&name, answer["version"].as_u64().unwrap()).await;
    answer
}

/// Every output event of `source`, consumed until `want` arrived (or 60 s passed).
async fn output_of(stack: &Stack, source: &str, want: usize) -> Vec<Value> {
    let events = stack.consume("native", want, Duration::from_secs(60)).await;
    events.into_iter().filter(|e| e["source"] == source).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_octokit_example_is_mapped_or_handled_and_none_is_a_5xx() {
    let stack = Stack::start().await;
    let answer = configure(&stack, json!({"source": "gh", "kind": "github", "pre": [], "post": []})).await;
    let secret = answer["secret"].as_str().expect("a new signed source shows its secret once").to_owned();
    assert!(secret.starts_with("whsec_"), "{answer}");

    let script = root().join("tests/clients/github.mjs");
    let url = stack.gateway_url("/hooks/gh");
    let deliveries = run(Path::new("node"), &[script.to_str().unwrap(), &url, &secret]).await;
    assert!(deliveries.len() > 100, "the examples package holds hundreds of payloads, got {}", deliveries.len());
    let mut accepted: HashMap<String, usize> = HashMap::new();
    let mut statuses: HashMap<u64, usize> = HashMap::new();
    for d in &deliveries {
        let status = d["status"].as_u64().unwrap();
        *statuses.entry(status).or_default() += 1;
        assert!(status < 500, "a 5xx: {d}");
        match d["event"].as_str().unwrap() {
            "ping" => assert_eq!((status, d["body"]["status"].as_str()), (200, Some("pong")), "{d}"),
            // Every other example is accepted (unmapped ones with a default id), or refused as
            // larger than the pipeline carries.
            _ if status == 413 => assert_eq!(d["body"]["error"], "event_too_large", "{d}"),
            event => {
                assert_eq!(status, 202, "{d}");
                let id = d["body"]["id"].as_str().unwrap().to_owned();
                if matches!(event, "issues" | "issue_comment") {
                    assert!(id.contains("#issue/"), "{event}: {id}");
                }
                if event == "pull_request" {
                    assert!(id.contains("#pull/"), "{event}: {id}");
                }
                *accepted.entry(id).or_default() += 1;
            }
        }
    }
    let total: usize = accepted.values().sum();
    let events = output_of(&stack, "gh", total).await;
    let mut published: HashMap<String, usize> = HashMap::new();
    for e in &events {
        *published.entry(e["id"].as_str().unwrap().to_owned()).or_default() += 1;
        assert!(e["metadata"]["github"]["delivery"].is_string(), "{e}");
    }
    assert_eq!(published, accepted, "every accepted delivery published once, under its entity (statuses: {statuses:?})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_github_redelivery_is_published_once_and_a_tampered_body_is_refused() {
    let stack = Stack::start().await;
    let secret = configure(&stack, json!({"source": "gh", "kind": "github"})).await["secret"].as_str().unwrap().to_owned();
    let body = json!({"action": "labeled", "issue": {"number": 7}, "label": {"name": "pii"}, "repository": {"full_name": "octo/data"}}).to_string();
    let post = |body: String, signature: String, delivery: &'static str| {
        stack
            .http
            .post(stack.gateway_url("/hooks/gh"))
            .header("content-type", "application/json")
            .header("x-github-event", "issues")
            .header("x-github-delivery", delivery)
            .header("x-hub-signature-256", signature)
            .body(body)
            .send()
    };
    let signature = domain::native::hub_signature(secret.as_bytes(), body.as_bytes());
    let first = post(body.clone(), signature.clone(), "d-1").await.unwrap();
    assert_eq!(first.status(), 202);
    let first: Value = first.json().await.unwrap();
    let again: Value = post(body.clone(), signature.clone(), "d-1").await.unwrap().json().await.unwrap();
    assert_eq!((&again["offset"], &again["partition"]), (&first["offset"], &first["partition"]), "a redelivery gets the first answer");

    let tampered = body.replace("pii", "pij");
    let refused = post(tampered, signature, "d-2").await.unwrap();
    assert_eq!(refused.status(), 401);
    let problem: Value = refused.json().await.unwrap();
    assert!(problem["message"].as_str().unwrap().contains("x-hub-signature-256"), "{problem}");
    let unsigned = stack.http.post(stack.gateway_url("/hooks/gh")).header("x-github-event", "issues").body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);

    // Huge and deep bodies, correctly signed: a JSON 4xx naming the limit, nothing written.
    let huge = json!({"action": "opened", "issue": {"number": 8}, "repository": {"full_name": "octo/data"}, "blob": "x".repeat(2 << 20)}).to_string();
    let answer = post(huge.clone(), domain::native::hub_signature(secret.as_bytes(), huge.as_bytes()), "d-huge").await.unwrap();
    assert_eq!(answer.status(), 413);
    assert!(answer.json::<Value>().await.unwrap()["error"].is_string());
    let deep = format!(r#"{{"action":"opened","issue":{{"number":9}},"repository":{{"full_name":"octo/data"}},"d":{}1{}}}"#, "[".repeat(300), "]".repeat(300));
    let answer = post(deep.clone(), domain::native::hub_signature(secret.as_bytes(), deep.as_bytes()), "d-deep").await.unwrap();
    assert_eq!(answer.status(), 400);
    assert!(answer.json::<Value>().await.unwrap()["message"].is_string());

    // A rotated secret: the old one still works during the overlap, the new one at once.
    let (status, rotated) = admin(&stack, Method::POST, "/v1/sources/gh/secret", Some(json!({"overlap_s": 600}))).await;
    assert_eq!(status, 200, "{rotated}");
    stack.wait_for_config("gh", rotated_version(&stack).await).await;
    let new = rotated["secret"].as_str().unwrap();
    assert_ne!(new, secret);
    let second = json!({"action": "closed", "issue": {"number": 7}, "repository": {"full_name": "octo/data"}}).to_string();
    assert_eq!(post(second.clone(), domain::native::hub_signature(new.as_bytes(), second.as_bytes()), "d-3").await.unwrap().status(), 202);
    assert_eq!(post(second.clone(), domain::native::hub_signature(secret.as_bytes(), second.as_bytes()), "d-4").await.unwrap().status(), 202);

    let events = output_of(&stack, "gh", 3).await;
    let ids: Vec<(&str, &str)> = events.iter().map(|e| (e["id"].as_str().unwrap(), e["metadata"]["event_type"].as_str().unwrap())).collect();
    assert_eq!(ids, [("octo/data#issue/7", "issues.labeled"), ("octo/data#issue/7", "issues.closed"), ("octo/data#issue/7", "issues.closed")], "in order, once each");
}

async fn rotated_version(stack: &Stack) -> u64 {
    admin(stack, Method::GET, "/v1/sources/gh", None).await.1["version"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openlineage_python_client_events_arrive_in_order_per_job() {
    let stack = Stack::start().await;
    configure(&stack, json!({"source": "lineage", "kind": "openlineage", "native": {"dataset_events": true}})).await;
    let script = root().join("tests/clients/openlineage_emit.py");
    let base = stack.gateway_url("");
    let sent = run(&python(), &[script.to_str().unwrap(), &base, TOKEN, "airflow", "etl.orders"]).await;
    let types: Vec<&str> = sent.iter().map(|s| s["eventType"].as_str().unwrap()).collect();
    assert_eq!(types, ["START", "RUNNING", "COMPLETE", "START", "FAIL"]);

    // Each run event: the job, plus one event per input and output dataset.
    let events = output_of(&stack, "lineage", 15).await;
    let job: Vec<&str> = events.iter().filter(|e| e["id"] == "airflow/etl.orders").map(|e| e["payload"]["eventType"].as_str().unwrap()).collect();
    assert_eq!(job, types, "the job's run states, in order");
    let written: Vec<&Value> = events.iter().filter(|e| e["id"] == "s3://bucket/warehouse/orders_daily").collect();
    assert_eq!(written.len(), 5);
    assert!(written.iter().all(|e| e["payload"]["direction"] == "output" && e["payload"]["job"]["name"] == "etl.orders"), "{written:?}");
    assert_eq!(events.len(), 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudevents_sdk_binary_structured_and_batch_arrive_with_their_subjects() {
    let stack = Stack::start().await;
    configure(&stack, json!({"source": "ce", "kind": "cloudevents"})).await;
    let script = root().join("tests/clients/cloudevents_emit.py");
    let url = stack.gateway_url("/hooks/ce");
    for mode in ["binary", "structured", "batch"] {
        for answer in run(&python(), &[script.to_str().unwrap(), &url, TOKEN, mode]).await {
            let status = answer["status"].as_u64().unwrap();
            assert!(status == 202 || (mode == "batch" && status == 200), "{mode}: {answer}");
        }
    }
    let events = output_of(&stack, "ce", 5).await;
    let subjects: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(subjects, HashSet::from(["warehouse.orders", "warehouse.a", "warehouse.b", "warehouse.c"]), "{events:?}");
    assert!(events.iter().all(|e| e["metadata"]["event_type"] == "com.example.dataset.updated"), "{events:?}");

    // Routed by their source attribute: POST /cloudevents, to the source whose ce_sources match.
    configure(&stack, json!({"source": "ce-warehouse", "kind": "cloudevents", "native": {"ce_sources": ["/datasets/*"]}})).await;
    for mode in ["binary", "batch"] {
        for answer in run(&python(), &[script.to_str().unwrap(), &stack.gateway_url("/cloudevents"), TOKEN, mode]).await {
            assert!([200, 202].contains(&answer["status"].as_u64().unwrap()), "{mode}: {answer}");
        }
    }
    let routed = output_of(&stack, "ce-warehouse", 4).await;
    assert_eq!(routed.len(), 4, "{routed:?}");
    let unrouted = stack
        .http
        .post(stack.gateway_url("/cloudevents"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/cloudevents+json")
        .body(r#"{"specversion":"1.0","id":"x","source":"/elsewhere","type":"t","data":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(unrouted.status(), 422);
    assert!(unrouted.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("/elsewhere"));

    // Bad input: a JSON 4xx naming what is wrong, and nothing stops.
    let missing = stack.http.post(&url).bearer_auth(TOKEN).header("content-type", "application/json").header("ce-specversion", "1.0").body("{}").send().await.unwrap();
    assert_eq!(missing.status(), 400);
    let problem: Value = missing.json().await.unwrap();
    assert!(problem["message"].as_str().unwrap().contains("id, source, type"), "{problem}");
    let unauthenticated = stack.http.post(&url).header("content-type", "application/cloudevents+json").body("{}").send().await.unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jira_webhooks_signed_by_an_independent_implementation_arrive_under_their_issue_keys() {
    let stack = Stack::start().await;
    let secret = configure(&stack, json!({"source": "jira-cloud", "kind": "jira"})).await["secret"].as_str().unwrap().to_owned();
    let script = root().join("tests/clients/jira.mjs");
    let url = stack.gateway_url("/hooks/jira-cloud");
    let sent = run(Path::new("node"), &[script.to_str().unwrap(), &url, &secret, "--redeliver"]).await;
    assert_eq!(sent.len(), 7);
    assert!(sent.iter().all(|d| d["status"] == 202), "{sent:?}");
    assert_eq!(sent[6]["body"], sent[0]["body"], "the retry (same identifier) is answered as the first delivery");

    let events = output_of(&stack, "jira-cloud", 6).await;
    let got: Vec<(&str, &str)> = events.iter().map(|e| (e["id"].as_str().unwrap(), e["metadata"]["event_type"].as_str().unwrap())).collect();
    // One entity's events in order; entities among themselves in any order.
    let issue: Vec<&str> = got.iter().filter(|(id, _)| *id == "TEST-1").map(|(_, t)| *t).collect();
    assert_eq!(issue, ["jira:issue_created", "jira:issue_updated", "comment_created"], "{got:?}");
    let others: HashSet<(&str, &str)> = got.iter().copied().filter(|(id, _)| *id != "TEST-1").collect();
    assert_eq!(others, HashSet::from([("project/DATA", "project_created"), ("sprint/7", "sprint_started"), ("version/10000", "jira:version_released")]));
    assert_eq!(events.len(), 6, "the retry is not published again: {got:?}");
    let updated = events.iter().find(|e| e["metadata"]["event_type"] == "jira:issue_updated").unwrap();
    assert_eq!(updated["metadata"]["jira"]["flow"], "Primary");
    assert_eq!(updated["payload"]["changelog"]["items"][1]["toString"], "pii");

    // Signed with another secret: 401, nothing written.
    let body = std::fs::read_to_string(root().join("tests/clients/jira/issue_created.json")).unwrap();
    let wrong = stack
        .http
        .post(&url)
        .header("content-type", "application/json")
        .header("x-hub-signature", domain::native::hub_signature(b"not the secret", body.trim().as_bytes()))
        .body(body.trim().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datahub_rest_emitter_proposals_arrive_under_their_urn() {
    let stack = Stack::start().await;
    configure(&stack, json!({"source": "dh", "kind": "datahub"})).await;
    let script = root().join("tests/clients/datahub_emit.py");
    let gms = stack.gateway_url("/datahub/dh");
    let urn = "urn:li:dataset:(urn:li:dataPlatform:postgres,public.orders,PROD)";
    for mode in ["single", "batch"] {
        let sent = run(&python(), &[script.to_str().unwrap(), &gms, TOKEN, mode]).await;
        let aspects: Vec<&str> = sent.iter().map(|s| s["aspect"].as_str().unwrap()).collect();
        assert_eq!(aspects, ["schemaMetadata", "globalTags", "ownership"], "{mode}");
    }
    let events = output_of(&stack, "dh", 6).await;
    assert_eq!(events.len(), 6);
    assert!(events.iter().all(|e| e["id"] == urn), "{events:?}");
    let order: Vec<&str> = events.iter().map(|e| e["metadata"]["datahub"]["aspect_name"].as_str().unwrap()).collect();
    assert_eq!(order, ["schemaMetadata", "globalTags", "ownership", "schemaMetadata", "globalTags", "ownership"], "one entity: in order");
    let tags = events.iter().find(|e| e["metadata"]["event_type"] == "datahub.UPSERT.globalTags").unwrap();
    assert_eq!(tags["payload"]["aspect"]["tags"][0]["tag"], "urn:li:tag:pii", "the aspect is stored as JSON, not as text");

    // What the emitter would not send: named, 4xx.
    let delete = stack.http.post(stack.gateway_url("/datahub/dh/aspects?action=delete")).bearer_auth(TOKEN).json(&json!({"urn": urn})).send().await.unwrap();
    assert_eq!(delete.status(), 400);
    assert!(delete.json::<Value>().await.unwrap()["message"].as_str().unwrap().contains("ingestProposal"));
}

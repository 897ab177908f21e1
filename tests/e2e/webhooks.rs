//! Webhook subscriptions (Standard Webhooks 1.0), end to end: a receiver in the test checks
//! every signature, answers 500 then 200 (retried with the same `webhook-id`), 429 with
//! `Retry-After` (honoured), 410 (the subscription is disabled, and resumes where it stopped
//! when re-enabled); filters, projection and CloudEvents; dead letters listed and replayed;
//! two consumer-api replicas sharing the deliveries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use domain::webhooks::WebhookSecret;
use reqwest::Method;
use serde_json::{json, Value};

use crate::admin::ADMIN;
use crate::harness::{start_consumer_api, Stack, TOKEN};

/// One request the receiver got, and what it answered.
#[derive(Debug, Clone)]
struct Received {
    webhook_id: String,
    timestamp: i64,
    signature: String,
    content_type: String,
    body: Vec<u8>,
    json: Value,
    at: Instant,
    answered: u16,
}

impl Received {
    /// The entity id of the event delivered (`data.id`, or a CloudEvent's `subject`).
    fn event_id(&self) -> String {
        self.json["data"]["id"].as_str().or(self.json["subject"].as_str()).unwrap_or_default().to_owned()
    }
}

/// How the receiver answers: from the event id and how many times this `webhook-id` came.
type Script = Box<dyn Fn(&str, usize) -> (u16, Option<&'static str>) + Send + Sync>;

#[derive(Clone)]
struct Receiver {
    url: String,
    log: Arc<Mutex<Vec<Received>>>,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(script: Script) -> Receiver {
        let log: Arc<Mutex<Vec<Received>>> = Arc::default();
        let script = Arc::new(Mutex::new(script));
        let (l, s) = (log.clone(), script.clone());
        let server = HttpServer::new(move || {
            let (l, s) = (l.clone(), s.clone());
            // Events up to the gateway's limit (about 1 MB): actix-web's default body limit is 256 KiB.
            App::new().app_data(web::PayloadConfig::new(16 << 20)).default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (l, s) = (l.clone(), s.clone());
                async move {
                    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let webhook_id = header("webhook-id");
                    let mut log = l.lock().unwrap();
                    let attempt = 1 + log.iter().filter(|r| r.webhook_id == webhook_id).count();
                    let mut received = Received {
                        webhook_id,
                        timestamp: header("webhook-timestamp").parse().unwrap_or(0),
                        signature: header("webhook-signature"),
                        content_type: header("content-type"),
                        body: body.to_vec(),
                        json,
                        at: Instant::now(),
                        answered: 0,
                    };
                    let (status, retry_after) = (s.lock().unwrap())(&received.event_id(), attempt);
                    received.answered = status;
                    log.push(received);
                    let mut answer = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                    if let Some(after) = retry_after {
                        answer.insert_header(("Retry-After", after));
                    }
                    answer.finish()
                }
            }))
        })
        .workers(1)
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        tokio::spawn(server.run());
        Receiver { url: format!("http://127.0.0.1:{port}/hook"), log, script }
    }

    fn set_script(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }

    fn received(&self) -> Vec<Received> {
        self.log.lock().unwrap().clone()
    }

    /// Waits until `done` holds of what was received; fails after `within`.
    async fn wait_until(&self, within: Duration, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let started = Instant::now();
        loop {
            let got = self.received();
            if done(&got) {
                return got;
            }
            assert!(started.elapsed() < within, "{what}: not after {within:?}; received {:?}", got.iter().map(|r| (r.event_id(), r.answered)).collect::<Vec<_>>());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn admin(stack: &Stack, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut req = stack.http.request(method, stack.admin_url(path)).bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn subscribe(stack: &Stack, body: Value) -> (String, WebhookSecret) {
    let (status, sub) = admin(stack, Method::POST, "/v1/subscriptions", Some(body)).await;
    assert_eq!(status, 201, "{sub}");
    let secret = WebhookSecret::parse(sub["secret"].as_str().unwrap()).unwrap();
    (sub["id"].as_str().unwrap().to_owned(), secret)
}

async fn ingest(stack: &Stack, id: &str, source: &str, payload: Value) {
    let (status, body) = stack.ingest(&json!({"id": id, "source": source, "payload": payload})).await;
    assert_eq!(status, 202, "{body}");
}

fn assert_signed(received: &[Received], secret: &WebhookSecret) {
    let now = chrono::Utc::now().timestamp();
    for r in received {
        assert!(secret.verify(&r.webhook_id, r.timestamp, &r.body, &r.signature), "a delivery's signature does not verify: {r:?}");
        assert!((now - r.timestamp).abs() < 300, "webhook-timestamp outside the receivers' 5-minute tolerance: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_are_signed_retried_in_order_filtered_projected_and_shared_by_replicas() {
    let stack = Stack::start().await;
    let second = start_consumer_api(&stack.settings).await;
    let hooks = Receiver::start(Box::new(|id, attempt| match (id, attempt) {
        ("e-0", 1) => (500, None),
        ("e-1", 1) => (429, Some("2")),
        _ => (204, None),
    }))
    .await;
    let cloud = Receiver::start(Box::new(|_, _| (200, None))).await;
    let (a, secret_a) = subscribe(&stack, json!({"url": hooks.url, "filter": {"source": "jira"}, "description": "jira only"})).await;
    let (_b, secret_b) = subscribe(&stack, json!({"url": cloud.url, "format": "cloudevents", "fields": "payload.n", "filter": {"source": "jira"}})).await;

    for i in 0..20 {
        ingest(&stack, &format!("e-{i}"), "jira", json!({"n": i, "title": "t"})).await;
    }
    for i in 0..5 {
        ingest(&stack, &format!("g-{i}"), "github", json!({"n": i})).await;
    }
    for v in 0..5 {
        ingest(&stack, "same", "jira", json!({"n": 100 + v, "v": v})).await;
    }

    let wanted = |got: &[Received]| {
        let ok: Vec<&Received> = got.iter().filter(|r| (200..300).contains(&r.answered)).collect();
        let distinct: std::collections::HashSet<String> = ok.iter().map(|r| r.event_id()).collect();
        distinct.len() >= 21 && ok.iter().filter(|r| r.event_id() == "same").count() >= 5
    };
    let got = hooks.wait_until(Duration::from_secs(60), "every jira event delivered", wanted).await;
    assert_signed(&got, &secret_a);
    assert!(got.iter().all(|r| r.json["data"]["source"] == "jira"), "the filter passes only jira");
    assert!(got.iter().all(|r| r.json["type"] == "metadata.processed" && r.content_type == "application/json"));

    // 500 then 200, with the same webhook-id.
    let e0: Vec<&Received> = got.iter().filter(|r| r.event_id() == "e-0").collect();
    assert_eq!(e0.iter().map(|r| r.answered).collect::<Vec<_>>()[..2], [500, 204]);
    assert_eq!(e0[0].webhook_id, e0[1].webhook_id);
    // 429 with Retry-After: 2 — the next attempt waited for it (the backoff alone is 100 ms).
    let e1: Vec<&Received> = got.iter().filter(|r| r.event_id() == "e-1").collect();
    assert_eq!(e1[0].answered, 429);
    assert!(e1[1].at.duration_since(e1[0].at) >= Duration::from_millis(1900), "Retry-After not honoured: {:?}", e1[1].at.duration_since(e1[0].at));
    // One entity's updates arrive in order.
    let versions: Vec<i64> = got.iter().filter(|r| r.event_id() == "same" && r.answered == 204).map(|r| r.json["data"]["payload"]["v"].as_i64().unwrap()).collect();
    assert_eq!(versions, [0, 1, 2, 3, 4]);

    // CloudEvents, projected.
    let ce = cloud.wait_until(Duration::from_secs(30), "cloudevents delivered", |g| g.len() >= 25).await;
    assert_signed(&ce, &secret_b);
    for r in &ce {
        assert_eq!(r.content_type, "application/cloudevents+json");
        assert_eq!(r.json["specversion"], "1.0");
        assert_eq!(r.json["id"], r.webhook_id.as_str(), "the webhook-id is the CloudEvents id");
        assert_eq!(r.json["source"], "/metastream/sources/jira");
        assert!(r.json["data"]["payload"]["n"].is_number() && r.json["data"]["payload"].get("title").is_none(), "projected: {}", r.json);
    }

    // The status shows it; the lag drains to 0 once offsets are committed.
    let started = Instant::now();
    loop {
        let (status, sub) = admin(&stack, Method::GET, &format!("/v1/subscriptions/{a}"), None).await;
        assert_eq!(status, 200, "{sub}");
        assert_eq!(sub["state"], "active");
        assert!(sub.get("secret").is_none(), "a secret is shown only at creation");
        if sub["status"]["lag"] == 0 && sub["status"]["delivered"].as_u64() >= Some(25) {
            assert!(sub["status"]["last_success_at"].is_string());
            assert_eq!(sub["status"]["consecutive_failures"], 0);
            // Partitions deliver concurrently: either failure may have been the last.
            assert!(["HTTP 429", "HTTP 500"].contains(&sub["status"]["last_error"].as_str().unwrap()), "{sub}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "lag did not drain: {sub}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Both replicas deliver: Kafka shares the subscription's partitions between them.
    let started = Instant::now();
    let mut n = 0;
    loop {
        let mut both = true;
        for port in [stack.consumer_api.admin_port, second.admin_port] {
            let text = stack.http.get(format!("http://127.0.0.1:{port}/metrics")).send().await.unwrap().text().await.unwrap();
            let delivered: f64 = adapters::metrics::parse_exposition(&text)
                .iter()
                .filter(|(s, _)| s.starts_with("metastream_webhook_attempts_total{") && s.contains("outcome=\"delivered\""))
                .map(|(_, v)| v)
                .sum();
            both &= delivered > 0.0;
        }
        if both {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(40), "one replica delivered nothing");
        // Rebalancing takes a moment: more events, over every partition.
        for _ in 0..6 {
            ingest(&stack, &format!("more-{n}"), "jira", json!({"n": n})).await;
            n += 1;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spent_retries_become_dead_letters_that_replay_and_410_disables_until_re_enabled() {
    let stack = Stack::start().await;
    let hooks = Receiver::start(Box::new(|id, _| match id {
        i if i.starts_with("bad") => (500, None),
        "gone" => (410, None),
        _ => (200, None),
    }))
    .await;
    let (id, secret) = subscribe(&stack, json!({"url": hooks.url, "from": "latest"})).await;

    // A bad body is refused with the member named.
    let (status, err) = admin(&stack, Method::POST, "/v1/subscriptions", Some(json!({"url": "ftp://x"}))).await;
    assert_eq!(status, 400, "{err}");
    assert!(err["message"].as_str().unwrap().contains("url"), "{err}");
    let (status, err) = admin(&stack, Method::POST, "/v1/subscriptions", Some(json!({"url": hooks.url, "filter": {"nope": 1}}))).await;
    assert_eq!(status, 400, "{err}");
    // A consume key is not an admin.
    let r = stack.http.get(stack.admin_url("/v1/subscriptions")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 403);

    ingest(&stack, "ok-0", "jira", json!({})).await;
    ingest(&stack, "bad-0", "jira", json!({})).await;
    ingest(&stack, "ok-1", "jira", json!({})).await;
    hooks
        .wait_until(Duration::from_secs(30), "ok delivered, bad tried max_attempts times", |g| {
            g.iter().filter(|r| r.event_id().starts_with("ok") && r.answered == 200).count() == 2 && g.iter().filter(|r| r.event_id() == "bad-0").count() == 3
        })
        .await;
    // The dead letter is listed.
    let started = Instant::now();
    let dead = loop {
        let (status, body) = admin(&stack, Method::GET, &format!("/v1/subscriptions/{id}/dead-letters"), None).await;
        assert_eq!(status, 200, "{body}");
        if body["count"] == 1 {
            break body["dead_letters"][0].clone();
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no dead letter: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(dead["attempts"], 3);
    assert_eq!(dead["last_error"], "HTTP 500");
    let (_, sub) = admin(&stack, Method::GET, &format!("/v1/subscriptions/{id}"), None).await;
    assert_eq!(sub["status"]["dead_lettered"], 1, "{sub}");
    assert_eq!(sub["status"]["dead_letters_pending"], 1, "{sub}");

    // The receiver is fixed; the dead letter is replayed with its webhook-id.
    hooks.set_script(Box::new(|id, _| if id == "gone" { (410, None) } else { (200, None) }));
    let (status, body) = admin(&stack, Method::POST, &format!("/v1/subscriptions/{id}/dead-letters/replay"), Some(json!({}))).await;
    assert_eq!((status, body["requested"].clone()), (202, json!(1)), "{body}");
    let got = hooks.wait_until(Duration::from_secs(20), "the dead letter replayed", |g| g.iter().any(|r| r.event_id() == "bad-0" && r.answered == 200)).await;
    let replayed = got.iter().find(|r| r.event_id() == "bad-0" && r.answered == 200).unwrap();
    assert_eq!(replayed.webhook_id, dead["webhook_id"].as_str().unwrap());
    let started = Instant::now();
    loop {
        let (_, body) = admin(&stack, Method::GET, &format!("/v1/subscriptions/{id}/dead-letters"), None).await;
        if body["count"] == 0 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "the replayed dead letter stays listed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 410 disables the subscription; what follows waits in Kafka.
    ingest(&stack, "gone", "jira", json!({})).await;
    let started = Instant::now();
    loop {
        let (_, sub) = admin(&stack, Method::GET, &format!("/v1/subscriptions/{id}"), None).await;
        if sub["state"] == "disabled" {
            assert!(sub["disabled_reason"].as_str().unwrap().contains("410"), "{sub}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "410 did not disable: {sub}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_attempts = hooks.received().iter().filter(|r| r.event_id() == "gone").count();
    assert_eq!(gone_attempts, 1, "410 is not retried");
    ingest(&stack, "after-0", "jira", json!({})).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(!hooks.received().iter().any(|r| r.event_id() == "after-0"), "a disabled subscription delivered");

    // Re-enabled: it resumes with the event that got the 410.
    hooks.set_script(Box::new(|_, _| (200, None)));
    let (status, sub) = admin(&stack, Method::PATCH, &format!("/v1/subscriptions/{id}"), Some(json!({"state": "active"}))).await;
    assert_eq!(status, 200, "{sub}");
    let got = hooks
        .wait_until(Duration::from_secs(30), "gone and after-0 delivered once re-enabled", |g| {
            ["gone", "after-0"].iter().all(|e| g.iter().any(|r| r.event_id() == *e && r.answered == 200))
        })
        .await;
    assert_signed(&got, &secret);
    let mut firsts: HashMap<String, usize> = HashMap::new();
    for (i, r) in got.iter().enumerate() {
        firsts.entry(r.event_id()).or_insert(i);
    }
    assert!(firsts["gone"] < firsts["after-0"]);

    // Rotation: both secrets sign for the overlap.
    let (status, rotated) = admin(&stack, Method::POST, &format!("/v1/subscriptions/{id}/rotate-secret"), None).await;
    assert_eq!(status, 200, "{rotated}");
    let new_secret = WebhookSecret::parse(rotated["secret"].as_str().unwrap()).unwrap();
    assert_ne!(new_secret, secret);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = hooks.received().len();
    ingest(&stack, "after-rotation", "jira", json!({})).await;
    let got = hooks.wait_until(Duration::from_secs(20), "delivered after rotation", |g| g.iter().any(|r| r.event_id() == "after-rotation")).await;
    let fresh = &got[before..];
    assert_signed(fresh, &new_secret);
    assert_signed(fresh, &secret);

    let (status, _) = admin(&stack, Method::DELETE, &format!("/v1/subscriptions/{id}"), None).await;
    assert_eq!(status, 204);
    let (status, _) = admin(&stack, Method::GET, &format!("/v1/subscriptions/{id}"), None).await;
    assert_eq!(status, 404);
}

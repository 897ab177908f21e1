//! A webhook receiver for every scenario: a subscription to the scenario's output is made when
//! the stack starts (from the earliest event), and the receiver records each update it gets,
//! checking every signature (Standard Webhooks). What it never got is reported as lost.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use domain::webhooks::WebhookSecret;
use serde_json::Value;

#[derive(Default)]
struct Log {
    /// (entity, seq) of every update received with a valid signature.
    updates: HashSet<(String, u64)>,
    requests: usize,
    bad_signatures: usize,
}

pub struct Receiver {
    log: Arc<Mutex<Log>>,
    server: actix_web::dev::ServerHandle,
}

/// What the receiver saw.
pub struct Received {
    pub lost: usize,
    pub requests: usize,
    pub bad_signatures: usize,
}

impl Receiver {
    /// Starts a receiver and subscribes it through the gateway's admin API at `admin_url`.
    /// With `net`, deliveries go through the network's receiver proxy.
    pub async fn subscribe(http: &reqwest::Client, admin_url: &str, admin_token: &str, net: Option<&crate::stack::Network>) -> anyhow::Result<Receiver> {
        let log: Arc<Mutex<Log>> = Arc::default();
        let secret: Arc<Mutex<Option<WebhookSecret>>> = Arc::default();
        let (l, s) = (log.clone(), secret.clone());
        let server = HttpServer::new(move || {
            let (l, s) = (l.clone(), s.clone());
            // Events up to the gateway's limit (about 1 MB): actix-web's default body limit is 256 KiB.
            App::new().app_data(web::PayloadConfig::new(16 << 20)).default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
                let (l, s) = (l.clone(), s.clone());
                async move {
                    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
                    let timestamp: i64 = header("webhook-timestamp").parse().unwrap_or(0);
                    let signed = s.lock().unwrap().as_ref().is_some_and(|secret| secret.verify(&header("webhook-id"), timestamp, &body, &header("webhook-signature")));
                    let mut log = l.lock().unwrap();
                    log.requests += 1;
                    if !signed {
                        log.bad_signatures += 1;
                        return HttpResponse::Unauthorized().finish();
                    }
                    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    if let (Some(id), Some(seq)) = (event["data"]["id"].as_str(), event["data"]["payload"]["seq"].as_u64()) {
                        log.updates.insert((id.to_owned(), seq));
                    }
                    HttpResponse::NoContent().finish()
                }
            }))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")?;
        let mut port = server.addrs()[0].port();
        if let Some(net) = net {
            port = net.front_receiver(port).await?;
        }
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        // A broker just started (a fresh one, or the one the last scenario restarted) can leave
        // the gateway answering 503 "retry later" for a moment: the suite retries, as a client
        // of that API would, for up to a minute.
        let started = Instant::now();
        let body = loop {
            let r = http
                .post(format!("{admin_url}/v1/subscriptions"))
                .bearer_auth(admin_token)
                .json(&serde_json::json!({"url": format!("http://127.0.0.1:{port}/hook"), "from": "earliest", "description": "fault suite"}))
                .send()
                .await
                .context("creating the webhook subscription")?;
            let status = r.status();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            if status.as_u16() == 503 && started.elapsed() < Duration::from_secs(60) {
                eprintln!("   creating the webhook subscription: {status} {body}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            anyhow::ensure!(status.as_u16() == 201, "creating the webhook subscription: {status} {body}");
            break body;
        };
        let parsed = WebhookSecret::parse(body["secret"].as_str().unwrap_or_default()).map_err(anyhow::Error::msg)?;
        *secret.lock().unwrap() = Some(parsed);
        Ok(Receiver { log, server: handle })
    }

    /// Waits until every update in `acked` was received, or nothing new came for `idle`.
    pub async fn finish(self, acked: &HashSet<(String, u64)>, idle: Duration) -> Received {
        let mut last_count = 0;
        let mut last_change = Instant::now();
        loop {
            let (missing, count) = {
                let log = self.log.lock().unwrap();
                (acked.iter().filter(|u| !log.updates.contains(*u)).count(), log.requests)
            };
            if missing == 0 || last_change.elapsed() > idle {
                let received = {
                    let log = self.log.lock().unwrap();
                    Received { lost: missing, requests: log.requests, bad_signatures: log.bad_signatures }
                };
                self.server.stop(false).await;
                return received;
            }
            if count != last_count {
                last_count = count;
                last_change = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

//! The operator console: a browser UI over the admin API, served at `/console` on the admin
//! listener only (the public listener and the edge never route it).
//!
//! Its files live in the repository's top-level `console/` folder (an HTML shell, a stylesheet
//! and ES modules — no build step) and are embedded in the binary with `include_str!`, so the
//! console works from the one binary with no Node at run time. It has no backend of its own:
//! every action is an admin API call made by the browser with the operator's key as
//! `Authorization: Bearer`, so every scope check stays the API's. No cookies are set.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and styles from this origin
//! only — no inline script or style, no `eval` — nothing framed, no form posted elsewhere) and
//! the framing, sniffing and referrer headers below.
//!
//! The entity lookup and the live tail call the consumer-api, another origin:
//! `gateway.console.consumer_api_url` names it, `/console/config.json` tells the console, and
//! the policy's `connect-src` adds exactly that origin (the consumer-api answers CORS for the
//! console's origins, `consumer_api.cors_origins`).

use actix_web::http::header;
use actix_web::{guard, web, HttpRequest, HttpResponse};

/// The policy every console answer carries. `connect-src`: the admin API of the listener that
/// served it, and the configured consumer-api origin if any.
fn content_security_policy(consumer_api: Option<&str>) -> String {
    let connect = consumer_api.map_or_else(|| "'self'".to_owned(), |origin| format!("'self' {origin}"));
    format!(
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src {connect}; \
font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )
}

/// What the console is told and the policy it is served with, from the gateway's settings.
pub(crate) struct Console {
    csp: String,
    /// `/console/config.json`.
    config: serde_json::Value,
}

impl Console {
    /// # Errors
    /// When `gateway.console.consumer_api_url` is not an origin (settings validation says so
    /// first).
    pub(crate) fn new(settings: &adapters::settings::ConsoleSettings) -> anyhow::Result<Self> {
        let origin = settings
            .consumer_api_url
            .as_deref()
            .map(adapters::settings::web_origin)
            .transpose()
            .map_err(|e| anyhow::anyhow!("gateway.console.consumer_api_url: {e}"))?;
        Ok(Console { csp: content_security_policy(origin.as_deref()), config: serde_json::json!({"consumer_api_url": origin, "dashboards_url": settings.dashboards_url}) })
    }
}

/// One embedded file: its name under `/console/assets/`, content type and text.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! assets {
    ($($type:expr => [$($name:literal),* $(,)?]),* $(,)?) => {
        &[$($(Asset { name: $name, content_type: $type, body: include_str!(concat!("../../../console/", $name)) }),*),*]
    };
}

const JS: &str = "text/javascript; charset=utf-8";

/// Every file of `console/` but the page itself, by content type. A file not listed here is not
/// served.
const ASSETS: &[Asset] = assets! {
    "text/css; charset=utf-8" => ["console.css"],
    JS => ["app.js", "api.js", "dom.js", "jsonpos.js", "sources.js", "dead-letters.js", "keys.js",
        "subscriptions.js", "audit.js", "entities.js", "tail.js", "export.js", "health.js", "saved.js"],
};

const INDEX: &str = include_str!("../../../console/index.html");

/// Registers `/console`, `/console/config.json` and `/console/assets/{file}` (GET and HEAD).
pub(crate) fn configure(console: web::Data<Console>) -> impl FnOnce(&mut web::ServiceConfig) {
    move |cfg| {
        let read = || web::route().guard(guard::Any(guard::Get()).or(guard::Head()));
        cfg.app_data(console)
            .route("/console", read().to(index))
            .route("/console/", read().to(index))
            .route("/console/config.json", read().to(config))
            .route("/console/assets/{file}", read().to(asset));
    }
}

async fn index(console: web::Data<Console>) -> HttpResponse {
    respond(&console, "text/html; charset=utf-8", INDEX)
}

async fn config(console: web::Data<Console>) -> HttpResponse {
    with_headers(&console, HttpResponse::Ok()).json(&console.config)
}

async fn asset(req: HttpRequest, console: web::Data<Console>) -> HttpResponse {
    let name = req.match_info().get("file").unwrap_or_default();
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => respond(&console, a.content_type, a.body),
        None => with_headers(&console, HttpResponse::NotFound())
            // The API's error shape, `{"error", "message"}`.
            .json(serde_json::json!({"error": "not_found", "message": format!("no console file `{name}`")})),
    }
}

fn respond(console: &Console, content_type: &'static str, body: &'static str) -> HttpResponse {
    with_headers(console, HttpResponse::Ok()).content_type(content_type).body(body)
}

/// The security headers on every console answer. `no-store`: the page is small, and an admin
/// UI should never be served stale from a shared cache after an upgrade.
fn with_headers(console: &Console, mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder
        .insert_header((header::CONTENT_SECURITY_POLICY, console.csp.clone()))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .insert_header(("cross-origin-opener-policy", "same-origin"))
        .insert_header(("cross-origin-resource-policy", "same-origin"));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{test as web_test, App};

    fn console(consumer_api_url: Option<&str>) -> web::Data<Console> {
        let settings = adapters::settings::ConsoleSettings { consumer_api_url: consumer_api_url.map(str::to_owned), dashboards_url: None };
        web::Data::new(Console::new(&settings).unwrap())
    }

    async fn get_from(console: web::Data<Console>, path: &str) -> actix_web::dev::ServiceResponse {
        let app = web_test::init_service(App::new().configure(configure(console))).await;
        web_test::call_service(&app, web_test::TestRequest::get().uri(path).to_request()).await
    }

    async fn get(path: &str) -> actix_web::dev::ServiceResponse {
        get_from(console(None), path).await
    }

    #[actix_web::test]
    async fn every_answer_carries_the_security_headers() {
        let strict = content_security_policy(None);
        assert!(strict.contains("connect-src 'self';"), "{strict}");
        for path in ["/console", "/console/", "/console/config.json", "/console/assets/app.js", "/console/assets/console.css", "/console/assets/nope.js"] {
            let res = get(path).await;
            let h = res.headers();
            assert_eq!(h.get("content-security-policy").unwrap(), strict.as_str(), "{path}");
            assert_eq!(h.get("x-frame-options").unwrap(), "DENY", "{path}");
            assert_eq!(h.get("x-content-type-options").unwrap(), "nosniff", "{path}");
            assert_eq!(h.get("referrer-policy").unwrap(), "no-referrer", "{path}");
            assert!(h.get("set-cookie").is_none(), "{path}");
        }
        assert_eq!(get("/console/assets/nope.js").await.status(), 404);
        assert_eq!(get("/console/assets/app.js").await.headers().get("content-type").unwrap(), JS);
    }

    /// The configured consumer-api is told to the console, and the policy lets it connect there
    /// and nowhere else.
    #[actix_web::test]
    async fn the_consumer_api_origin_is_told_and_allowed_exactly() {
        let res = get_from(console(Some("http://127.0.0.1:8084/")), "/console/config.json").await;
        let csp = res.headers().get("content-security-policy").unwrap().to_str().unwrap().to_owned();
        assert!(csp.contains("connect-src 'self' http://127.0.0.1:8084;"), "{csp}");
        let body: serde_json::Value = web_test::read_body_json(res).await;
        assert_eq!(body, serde_json::json!({"consumer_api_url": "http://127.0.0.1:8084", "dashboards_url": null}));
        let body: serde_json::Value = web_test::read_body_json(get("/console/config.json").await).await;
        assert_eq!(body, serde_json::json!({"consumer_api_url": null, "dashboards_url": null}));
        let bad = adapters::settings::ConsoleSettings { consumer_api_url: Some("http://x/path; script-src *".into()), dashboards_url: None };
        assert!(Console::new(&bad).is_err());
    }

    /// No inline script or style can sneak into the page (the policy would refuse it anyway,
    /// and the console would break), and every file the page or a module names is served.
    #[test]
    fn the_page_names_only_embedded_files_and_nothing_inline() {
        assert!(!INDEX.contains("<style"), "inline <style> in index.html");
        assert!(!INDEX.contains("style="), "inline style attribute in index.html");
        for (i, _) in INDEX.match_indices("<script") {
            let tag = &INDEX[i..i + INDEX[i..].find('>').unwrap()];
            assert!(tag.contains("src="), "inline script in index.html: {tag}");
        }
        let mut named: Vec<&str> = INDEX.split("/console/assets/").skip(1).map(|s| &s[..s.find('"').unwrap()]).collect();
        for a in ASSETS.iter().filter(|a| a.name.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let from = line.rsplit("from").next().unwrap().trim().trim_end_matches(';').trim_matches(|c| c == '"' || c == '\'');
                named.push(from.trim_start_matches("./"));
            }
            assert!(!a.body.contains("innerHTML"), "{} writes innerHTML: build nodes instead", a.name);
            assert!(!a.body.contains("eval("), "{} calls eval", a.name);
        }
        for name in named {
            assert!(ASSETS.iter().any(|a| a.name == name), "`{name}` is named but not embedded");
        }
    }
}

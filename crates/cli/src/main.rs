//! `metastream`: the gateway's admin API from the command line: source configurations from
//! YAML (or JSON) files, so configs can live in git and be applied in CI, and API keys.
//!
//! ```text
//! metastream sources validate config/sources.yaml      # compile locally, no server needed
//! metastream sources put config/sources.yaml           # store every config in the file
//! metastream sources preview jira --event event.json   # pre then post, nothing stored
//! metastream keys create jira-prod --scope ingest:jira --scope read:jira --requests-per-s 100
//! metastream keys list
//! metastream keys revoke key_0123456789abcdef
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use domain::{CompiledSource, SourceConfig};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "metastream", version, about = "Manage metastream source configurations and API keys")]
struct Cli {
    /// Base URL of the gateway's admin listener (gateway.admin_listen; never the public edge).
    #[arg(long, env = "METASTREAM_URL", default_value = "http://localhost:9081", global = true)]
    url: String,
    /// A key with the `admin` scope (an `auth.admin_tokens` entry, or a key created with it).
    #[arg(long, env = "METASTREAM_ADMIN_TOKEN", default_value = "dev-admin-key", global = true, hide_default_value = true)]
    token: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Source configurations.
    #[command(subcommand)]
    Sources(Sources),
    /// The operation catalog: every operation with its parameters and an example.
    Operations,
    /// API keys: create (the key is printed once), list, show, rotate, revoke.
    #[command(subcommand)]
    Keys(Keys),
    /// The audit trail of admin actions, oldest first.
    Audit {
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
enum Keys {
    /// Create a key; prints it once (only its keyed hash is stored).
    Create {
        /// What the key is for (shown in listings and the audit trail).
        name: String,
        /// `ingest:<source-glob>`, `consume:<group-glob>`, `read:<source-glob>` or `admin`;
        /// repeat for several.
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        /// When the key stops working (RFC 3339).
        #[arg(long)]
        expires_at: Option<String>,
        #[arg(long)]
        requests_per_s: Option<f64>,
        #[arg(long)]
        events_per_s: Option<f64>,
        #[arg(long)]
        burst: Option<u32>,
    },
    /// List every key (never the keys themselves).
    List,
    /// Show one key.
    Get { id: String },
    /// Issue a new key for the same id and scopes; the old one stops working at once.
    Rotate { id: String },
    /// Revoke a key: every replica refuses it within a second.
    Revoke { id: String },
}

#[derive(Subcommand)]
enum Sources {
    /// List every stored configuration.
    List,
    /// Print one configuration as YAML.
    Get { source: String },
    /// Store the configurations of a file (one config, or `sources: [...]`).
    Put {
        file: PathBuf,
        /// Only store if the stored version is this one (a single config only).
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Delete a configuration.
    Delete {
        source: String,
        #[arg(long)]
        if_match: Option<u64>,
    },
    /// Compile the configurations of a file locally and report every error; stores nothing.
    Validate { file: PathBuf },
    /// A new secret for a signed source (kind github or jira), shown once; the previous one
    /// stays valid for `--overlap-s` seconds.
    Secret {
        source: String,
        #[arg(long, default_value_t = 86_400)]
        overlap_s: u64,
    },
    /// Run a source's operations on a sample event (the stored config, or `--config`).
    Preview {
        source: String,
        /// The sample event (JSON or YAML).
        #[arg(long)]
        event: PathBuf,
        /// A config to try instead of the stored one.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ConfigFile {
    Many { sources: Vec<SourceConfig> },
    One(SourceConfig),
}

fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml_ng::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn read_configs(path: &Path) -> anyhow::Result<Vec<SourceConfig>> {
    Ok(match read_yaml::<ConfigFile>(path)? {
        ConfigFile::Many { sources } => sources,
        ConfigFile::One(config) => vec![config],
    })
}

struct Admin {
    http: reqwest::Client,
    url: String,
    token: String,
}

impl Admin {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>, if_match: Option<u64>) -> anyhow::Result<Value> {
        let mut req = self.http.request(method, format!("{}{path}", self.url.trim_end_matches('/'))).bearer_auth(&self.token);
        if let Some(v) = if_match {
            req = req.header("If-Match", v.to_string());
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.with_context(|| format!("calling {}", self.url))?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value = if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if !status.is_success() {
            let mut msg = format!("{status}: {}", value["message"].as_str().unwrap_or(&value.to_string()));
            if let Some(errors) = value["errors"].as_array() {
                for e in errors {
                    msg.push_str(&format!("\n  {}: {}", e["location"].as_str().unwrap_or("?"), e["message"].as_str().unwrap_or("?")));
                }
            }
            bail!(msg);
        }
        Ok(value)
    }
}

fn print_yaml(v: &Value) -> anyhow::Result<()> {
    print!("{}", serde_yaml_ng::to_string(v)?);
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let admin = Admin { http: reqwest::Client::new(), url: cli.url, token: cli.token };
    use reqwest::Method;
    match cli.command {
        Command::Operations => print_yaml(&admin.call(Method::GET, "/v1/operations", None, None).await?)?,
        Command::Keys(keys) => run_keys(&admin, keys).await?,
        Command::Audit { limit } => print_yaml(&admin.call(Method::GET, &format!("/v1/audit?limit={limit}"), None, None).await?)?,
        Command::Sources(Sources::List) => print_yaml(&admin.call(Method::GET, "/v1/sources", None, None).await?)?,
        Command::Sources(Sources::Get { source }) => {
            print_yaml(&admin.call(Method::GET, &format!("/v1/sources/{source}"), None, None).await?)?
        }
        Command::Sources(Sources::Put { file, if_match }) => {
            let configs = read_configs(&file)?;
            if if_match.is_some() && configs.len() != 1 {
                bail!("--if-match needs a file with exactly one config");
            }
            for config in configs {
                let stored = admin
                    .call(Method::PUT, &format!("/v1/sources/{}", config.source), Some(serde_json::to_value(&config)?), if_match)
                    .await
                    .with_context(|| format!("storing `{}`", config.source))?;
                println!("stored {} at version {}", config.source, stored["version"]);
                if let Some(secret) = stored["secret"].as_str() {
                    eprintln!("{} signs its requests: its secret, shown this once (configure the sender with it):", config.source);
                    println!("{secret}");
                }
            }
        }
        Command::Sources(Sources::Secret { source, overlap_s }) => {
            let rotated = admin.call(Method::POST, &format!("/v1/sources/{source}/secret"), Some(serde_json::json!({"overlap_s": overlap_s})), None).await?;
            eprintln!(
                "new secret for {source} (generation {}), shown this once; the previous one is honoured until {}:",
                rotated["generation"],
                rotated["previous_valid_until"].as_str().unwrap_or("now (it was the first)")
            );
            println!("{}", rotated["secret"].as_str().unwrap_or_default());
        }
        Command::Sources(Sources::Delete { source, if_match }) => {
            admin.call(Method::DELETE, &format!("/v1/sources/{source}"), None, if_match).await?;
            println!("deleted {source}");
        }
        Command::Sources(Sources::Validate { file }) => {
            let mut failed = false;
            for config in read_configs(&file)? {
                let name = config.source.clone();
                match CompiledSource::compile(config) {
                    Ok(_) => println!("{name}: ok"),
                    Err(errors) => {
                        failed = true;
                        for e in errors {
                            println!("{name}: {}: {}", e.location, e.message);
                        }
                    }
                }
            }
            if failed {
                bail!("invalid configuration in {}", file.display());
            }
        }
        Command::Sources(Sources::Preview { source, event, config }) => {
            let mut body = json!({"event": read_yaml::<Value>(&event)?});
            if let Some(config) = config {
                body["config"] = read_yaml::<Value>(&config)?;
            }
            print_yaml(&admin.call(Method::POST, &format!("/v1/sources/{source}/preview"), Some(body), None).await?)?;
        }
    }
    Ok(())
}

async fn run_keys(admin: &Admin, keys: Keys) -> anyhow::Result<()> {
    use reqwest::Method;
    match keys {
        Keys::Create { name, scopes, expires_at, requests_per_s, events_per_s, burst } => {
            let mut body = json!({"name": name, "scopes": scopes});
            if expires_at.is_some() {
                body["expires_at"] = json!(expires_at);
            }
            if requests_per_s.is_some() || events_per_s.is_some() || burst.is_some() {
                body["rate_limit"] = json!({"requests_per_s": requests_per_s, "events_per_s": events_per_s, "burst": burst});
                body["rate_limit"].as_object_mut().expect("an object").retain(|_, v| !v.is_null());
            }
            let created = admin.call(Method::POST, "/v1/keys", Some(body), None).await?;
            eprintln!("created {} — the key below is shown this once; store it in your secret manager:", created["id"].as_str().unwrap_or("?"));
            println!("{}", created["key"].as_str().unwrap_or_default());
        }
        Keys::List => print_yaml(&admin.call(Method::GET, "/v1/keys", None, None).await?)?,
        Keys::Get { id } => print_yaml(&admin.call(Method::GET, &format!("/v1/keys/{id}"), None, None).await?)?,
        Keys::Rotate { id } => {
            let rotated = admin.call(Method::POST, &format!("/v1/keys/{id}/rotate"), None, None).await?;
            eprintln!("rotated {id} — the new key below is shown this once; the old one no longer works:");
            println!("{}", rotated["key"].as_str().unwrap_or_default());
        }
        Keys::Revoke { id } => {
            admin.call(Method::DELETE, &format!("/v1/keys/{id}"), None, None).await?;
            println!("revoked {id}");
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

//! `metastream`: list, get, put, delete and preview source configurations through the gateway's
//! admin API, from YAML (or JSON) files, so configs can live in git and be applied in CI.
//!
//! ```text
//! metastream sources validate config/sources.yaml      # compile locally, no server needed
//! metastream sources put config/sources.yaml           # store every config in the file
//! metastream sources preview jira --event event.json   # pre then post, nothing stored
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use domain::{CompiledSource, SourceConfig};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "metastream", version, about = "Manage metastream source configurations")]
struct Cli {
    /// Base URL of the gateway (or the edge routing /v1 to it).
    #[arg(long, env = "METASTREAM_URL", default_value = "http://localhost:8080", global = true)]
    url: String,
    /// Admin token (auth.admin_tokens of the gateway).
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
            }
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

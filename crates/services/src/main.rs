//! `metastream-services`: the four services in one binary, for the image. They share most of
//! their code (adapters, librdkafka, actix-web, the Redis client): one copy of it instead of four
//! makes the image's programs about a third of their size. Which service runs is the name the
//! binary is called by — the image's `/usr/local/bin/gateway`, `pre-transformer`,
//! `post-transformer` and `consumer-api` are links to it — or, called as itself, its first
//! argument (`metastream-services gateway`). Each service is also built as its own binary
//! (`make run`, the tests); both run the same `run` of the service's crate.

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

#[global_allocator]
static ALLOCATOR: adapters::Allocator = adapters::Allocator;

const SERVICES: &str = "gateway, pre-transformer, post-transformer, consumer-api";

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let called = args.next().as_deref().and_then(|a| Path::new(a).file_name().map(OsString::from)).unwrap_or_default();
    let name = if called == "metastream-services" { args.next().unwrap_or_default() } else { called };
    match name.to_str() {
        Some("gateway") => gateway::run(),
        Some("pre-transformer") => pre_transformer::run(),
        Some("post-transformer") => post_transformer::run(),
        Some("consumer-api") => consumer_api::run(),
        _ => {
            eprintln!("metastream-services: which service? call it as one of {SERVICES} (a link named so), or `metastream-services <service>`; got {name:?}");
            ExitCode::from(2)
        }
    }
}

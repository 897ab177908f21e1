//! A source config body as `PUT /v1/sources/jira` takes it: parsed as the admin API does
//! (`parse_config` in crates/gateway/src/admin.rs), compiled, then run pre then post on the
//! sample event as a preview does (crates/gateway/src/preview.rs).
//!
//! Invariants: nothing panics — not compiling, not a condition, not an operation; a config that
//! compiles still compiles from its stored form (`to_json`, what the services load); no
//! operation changes the event's id or source; a kept event still serializes and reads back.
#![no_main]

use domain::{CompiledSource, Event, Outcome, SourceConfig, Stage};
use libfuzzer_sys::fuzz_target;
use metastream_fuzz::{context, sample_event};
use serde_json::{json, Value};

/// The source the config is written for: the sample event's.
const SOURCE: &str = "jira";

/// `parse_config` of the admin API: `source` may be omitted (the path names it) but must not
/// differ, `version` is ignored.
fn parse_config(body: &[u8]) -> Option<SourceConfig> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let obj = value.as_object_mut()?;
    match obj.get("source") {
        None => {
            obj.insert("source".into(), json!(SOURCE));
        }
        Some(s) if s == SOURCE => {}
        Some(_) => return None,
    }
    obj.remove("version");
    serde_json::from_value(value).ok()
}

fuzz_target!(|body: &[u8]| {
    let Some(config) = parse_config(body) else { return };
    let Ok(compiled) = CompiledSource::compile(config) else {
        return;
    };

    let stored: SourceConfig = serde_json::from_str(&compiled.config().to_json()).expect("a stored config parses");
    if let Err(errors) = CompiledSource::compile(stored) {
        panic!("a config the admin API accepted does not compile when a service loads it: {errors:?}");
    }

    let mut event = sample_event();
    let (id, source) = (event.id.clone(), event.source.clone());
    for stage in [Stage::Pre, Stage::Post] {
        let outcome = compiled.run(stage, &mut event, &context(stage, compiled.version()));
        assert_eq!(
            (&event.id, &event.source),
            (&id, &source),
            "an operation changed the envelope"
        );
        match outcome {
            Ok(Outcome::Keep) => match stage {
                Stage::Pre => event.provenance.pre_config_version = Some(compiled.version()),
                Stage::Post => event.provenance.post_config_version = Some(compiled.version()),
            },
            Ok(Outcome::Dropped { .. }) | Err(_) => return,
        }
    }
    // What the stages write (the record, the output message) reads back as an event. Operations
    // may nest an event deeper than the stages' parser takes (nothing bounds that yet), so only
    // events within that budget are checked.
    let record = event.to_record();
    if domain::limits::json_depth(&record) <= domain::limits::PARSER_DEPTH_LIMIT {
        let back = Event::from_wire(&record).expect("a kept event's record reads back");
        assert_eq!(
            (&back.id, &back.source, &back.provenance, &back.routing),
            (&id, &source, &event.provenance, &event.routing)
        );
    }
});

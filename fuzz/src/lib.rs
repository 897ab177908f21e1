//! What the fuzz targets share: the sample event operations and paths run on, a pipeline
//! context with a fixed clock, and the check that the gateway's fast event parser
//! ([`ClientEvent`]) agrees with the value parser ([`Event::parse_client`]) the pipeline's
//! contract is written against.

use domain::{ClientEvent, Context, Event, EventError, Stage};
use serde_json::Value;

/// The `received_at` every target stamps, so a crash replays identically.
pub const RECEIVED_AT: &str = "2024-01-01T00:00:00.000Z";

/// A client event with something for every operation of the catalog to act on (the fields its
/// examples name), arrays and quoted-looking names for paths, and a few number forms.
const SAMPLE: &str = r#"{
  "id": "PROJ-123",
  "source": "jira",
  "payload": {
    "title": "Fix login bug", "status": "draft", "created": "20/07/2024 14:34", "after": {"a": 1},
    "reporter": {"email": "a@b.co"}, "project": "P", "tenant": "acme", "internal": {"trace_id": "x"},
    "priority": "2", "estimate_h": "1.5", "id": 7, "fields": {"a": {"b": 1}}, "internal_notes": "n",
    "summary": "s", "owner": {"email": "o@b.co"}, "ssn": "123-45-6789",
    "owners": [{"email": "a@b.co", "tags": ["x", "y"]}, null, 3],
    "a.b": {"c[0]": true}, "n": null, "big": 18446744073709551615, "neg": -1, "f": 2.5e-3, "empty": {}
  },
  "metadata": {"created_at": "2024-07-20T12:34:56Z", "epoch_ms": 1721478896000}
}"#;

/// The sample event as the pipeline sees it: stamped by the gateway, with one header.
pub fn sample_event() -> Event {
    let mut event = Event::parse_client(SAMPLE.as_bytes()).expect("the sample event is valid");
    event.received_at = Some(RECEIVED_AT.to_owned());
    event.routing.set_header("x-tenant", "acme".to_owned());
    event
}

/// What a stage's operations see, with a fixed clock and no Kafka position (as in a preview).
pub fn context(stage: Stage, config_version: u64) -> Context<'static> {
    Context {
        stage,
        service: match stage {
            Stage::Pre => "pre-transformer",
            Stage::Post => "post-transformer",
        },
        instance: "fuzz-0",
        version: "0.0.0-fuzz",
        config_version,
        now: chrono::DateTime::from_timestamp(1_721_478_896, 789_000_000).expect("a valid instant"),
        input: None,
    }
}

/// Checks the gateway's parse of one event body (`fast`, from [`ClientEvent::parse`] or
/// [`ClientEvent::from_raw`]) against [`Event::parse_client`] on the same bytes:
///
/// - both accept or both refuse, and a refusal is the same error (client.rs promises the same
///   message, so clients see one answer whichever path the gateway takes);
/// - an accepted event's wire form (`to_wire`) is a JSON object of exactly the envelope's fields
///   that [`Event::from_wire`] — how every stage reads it — reads back as the value parser's
///   event with the same id, source and `received_at`, and the same entity key.
///
/// The wire form itself is not fed to `parse_client`: it carries `received_at`, which a client
/// may not send, so `parse_client` refuses it by design.
pub fn check_client_event(body: &[u8], fast: Result<ClientEvent<'_>, EventError>) {
    let slow = Event::parse_client(body);
    let (client, mut event) = match (fast, slow) {
        (Ok(client), Ok(event)) => (client, event),
        (Err(fast), Err(slow)) => {
            assert_eq!(fast, slow, "the two parsers refuse with different errors");
            return;
        }
        (fast, slow) => panic!("the parsers disagree: ClientEvent {fast:?}, Event::parse_client {slow:?}"),
    };
    assert_eq!((&client.id, &client.source), (&event.id, &event.source));
    assert_eq!(client.entity_key(), event.entity_key());

    let wire = client.to_wire(RECEIVED_AT);
    let value: Value = serde_json::from_slice(&wire).expect("to_wire writes valid JSON");
    let object = value.as_object().expect("to_wire writes an object");
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["id", "metadata", "payload", "received_at", "source"]);
    assert_eq!(object["id"], client.id.as_str());
    assert_eq!(object["source"], client.source.as_str());
    assert_eq!(object["received_at"], RECEIVED_AT);

    let read = Event::from_wire(&wire).expect("every stage reads the gateway's wire form");
    event.received_at = Some(RECEIVED_AT.to_owned());
    assert_eq!(read, event, "the wire form reads back as a different event");
}

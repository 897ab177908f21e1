//! Inputs the fuzz targets in `fuzz/` found, kept as tests: each states the behaviour the input
//! got wrong. fuzz/README.md says how a crash becomes one of these.

use domain::{split_batch, BatchFormat, ClientEvent, Event, EventError};

/// Both parsers' answer for `body`, which must be a refusal, and the same one.
fn refused_by_both(body: &[u8]) -> EventError {
    let fast = ClientEvent::parse(body).map(|event| event.entity_key());
    let slow = Event::parse_client(body).map(|event| event.entity_key());
    match (fast, slow) {
        (Err(fast), Err(slow)) => {
            assert_eq!(fast, slow, "{}", String::from_utf8_lossy(body));
            fast
        }
        (fast, slow) => panic!(
            "{}: ClientEvent {fast:?}, Event::parse_client {slow:?}",
            String::from_utf8_lossy(body)
        ),
    }
}

/// With serde_json's `raw_value` feature (the gateway's fast path needs it), a `Value` parser
/// reads an object whose first key is `$serde_json::private::RawValue` as the JSON held in that
/// key's string. The gateway kept such an object verbatim while every stage, parsing values,
/// would read something else: `{"$serde_json::private::RawValue": "[1]"}` as `[1]`, or fail on
/// the event after the gateway had accepted it. Both parsers now refuse the name anywhere (a
/// stage re-serializing an object sorts it first), with the same error.
///
/// Found by `client_event`: the gateway accepted the second body, `parse_client` refused it;
/// the first is what `cargo fuzz tmin` reduced it to (the parsers' errors differed).
#[test]
fn the_raw_value_token_is_refused_as_a_field_name_by_both_parsers() {
    let bodies: [&[u8]; 6] = [
        br#"{"$serde_json::private::RawValue":4"#,
        br#"{"id":"1234345","source":"jira","payload":{"title":"x"},"metadata":{"$serde_json::private::RawValue":"4852.-07fae)vic6Z"}}"#,
        br#"{"id":"1","source":"jira","payload":{"a":{"$serde_json::private::RawValue":"[1]"}}}"#,
        br#"{"id":"1","source":"jira","payload":{"a":[{"b":1,"$serde_json::private::RawValue":"[1]"}]}}"#,
        br#"{"id":"1","source":"jira","payload":{"a":{"\u0024serde_json::private::RawValue":"[1]"}}}"#,
        br#"{"$serde_json::private::RawValue":"{\"id\":\"1\",\"source\":\"jira\",\"payload\":{}}"}"#,
    ];
    for body in bodies {
        let err = refused_by_both(body);
        assert!(matches!(err, EventError::Malformed(_)), "{err:?}");
        assert!(
            err.to_string().contains("`$serde_json::private::RawValue` is reserved"),
            "{err}"
        );
    }
}

/// A batch refuses it as a single event does: the whole array, or the NDJSON line holding it.
#[test]
fn batches_refuse_the_raw_value_token_too() {
    let array = br#"[{"id":"1","source":"jira","payload":{"a":{"$serde_json::private::RawValue":"[1]"}}}]"#;
    assert!(split_batch(array, BatchFormat::Array)
        .unwrap_err()
        .contains("is reserved"));

    let ndjson = b"{\"id\":\"1\",\"source\":\"jira\",\"payload\":{}}\n{\"id\":\"2\",\"source\":\"jira\",\"payload\":{\"$serde_json::private::RawValue\":\"1\"}}";
    let items = split_batch(ndjson, BatchFormat::Ndjson).unwrap();
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok());
    assert!(items[1].as_ref().unwrap_err().contains("is reserved"), "{:?}", items[1]);
}

/// Only that exact name is reserved: names like it still pass, and read back as sent.
#[test]
fn names_like_the_token_are_still_accepted() {
    let body = br#"{"id":"1","source":"jira","payload":{"$ref":{"$serde_json::private::RawValue2":"[1]"},"$serde_json::private::Number":"1"}}"#;
    let fast = ClientEvent::parse(body).unwrap();
    let slow = Event::parse_client(body).unwrap();
    let mut read = Event::from_wire(&fast.to_wire("2024-01-01T00:00:00.000Z")).unwrap();
    read.received_at = None;
    assert_eq!(read, slow);
    assert_eq!(slow.payload["$ref"]["$serde_json::private::RawValue2"], "[1]");
}

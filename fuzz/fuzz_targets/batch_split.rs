//! A batch body, split both as a JSON array and as NDJSON (`split_batch`), then every element
//! parsed as the gateway does (`ClientEvent::from_raw`).
//!
//! Invariants: an array splits only when the body is a JSON array, into exactly its elements;
//! NDJSON gives one item per non-blank line (so never more items than lines), each `Ok` item
//! is that line's JSON; every element parses as `check_client_event` demands of a single event.
#![no_main]

use domain::{check_json, split_batch, BatchFormat, ClientEvent};
use libfuzzer_sys::fuzz_target;
use metastream_fuzz::check_client_event;
use serde_json::Value;

fuzz_target!(|body: &[u8]| {
    match split_batch(body, BatchFormat::Array) {
        Ok(items) => {
            let Ok(Value::Array(elements)) = serde_json::from_slice::<Value>(body) else {
                panic!("split as an array, but the body is not a JSON array");
            };
            assert_eq!(items.len(), elements.len(), "not one item per element");
            for (item, element) in items.into_iter().zip(elements) {
                let raw = item.expect("an array's elements are never Err items");
                let reparsed: Value = serde_json::from_str(raw.get()).expect("an element is JSON");
                assert_eq!(reparsed, element, "an item is not the element's JSON");
                check_client_event(raw.get().as_bytes(), ClientEvent::from_raw(raw));
            }
        }
        Err(_) => {
            let is_array =
                check_json(body).is_ok() && matches!(serde_json::from_slice::<Value>(body), Ok(Value::Array(_)));
            assert!(!is_array, "a JSON array body was refused as a batch");
        }
    }

    let items = split_batch(body, BatchFormat::Ndjson).expect("an NDJSON body always splits");
    let lines: Vec<&[u8]> = body
        .split(|b| *b == b'\n')
        .filter(|line| !line.iter().all(u8::is_ascii_whitespace))
        .collect();
    assert!(
        items.len() <= body.split(|b| *b == b'\n').count(),
        "more items than lines"
    );
    assert_eq!(items.len(), lines.len(), "not one item per non-blank line");
    for (item, line) in items.into_iter().zip(lines) {
        match item {
            Ok(raw) => {
                assert!(check_json(line).is_ok(), "an Ok item from a line that is not JSON");
                let text = std::str::from_utf8(line).expect("a JSON line is UTF-8");
                assert_eq!(
                    raw.get(),
                    text.trim_matches(|c: char| c.is_ascii_whitespace()),
                    "an item is not its line's JSON"
                );
                check_client_event(raw.get().as_bytes(), ClientEvent::from_raw(raw));
            }
            Err(message) => assert!(check_json(line).is_err(), "a JSON line became an Err item: {message}"),
        }
    }
});

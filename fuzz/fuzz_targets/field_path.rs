//! A field path as operations and conditions take it (`FieldPath::parse`), on UTF-8 input.
//!
//! Invariants: a parsed path displays as the text it was parsed from and reparses to an equal
//! path; its canonical spelling (rebuilt from root and segments, quoting names that need it)
//! parses to the same root and segments; on the sample event `get`, `get_mut`, `object_mut`,
//! `set` and `remove` never panic, a `set` that succeeds is what `get` then reads, and a
//! `remove` right after gives that value back; a read-only path refuses writes.
#![no_main]

use domain::path::{FieldPath, Segment};
use libfuzzer_sys::fuzz_target;
use metastream_fuzz::sample_event;
use serde_json::json;

/// The path spelled from its parts: `."name"` for a name holding a character the bare form
/// cannot (`.`, `[`, `]`), `[n]` for an index.
fn canonical(path: &FieldPath) -> String {
    let mut text = path.root().as_str().to_owned();
    for segment in path.segments() {
        match segment {
            Segment::Key(name) if name.contains(['.', '[', ']']) => text.push_str(&format!(".\"{name}\"")),
            Segment::Key(name) => text.push_str(&format!(".{name}")),
            Segment::Index(i) => text.push_str(&format!("[{i}]")),
        }
    }
    text
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(path) = FieldPath::parse(text) else { return };

    assert_eq!(path.to_string(), text, "Display is not the text parsed");
    assert_eq!(
        FieldPath::parse(&path.to_string()).as_ref(),
        Ok(&path),
        "the displayed path reparses differently"
    );
    let spelled = canonical(&path);
    let again =
        FieldPath::parse(&spelled).unwrap_or_else(|e| panic!("the canonical spelling {spelled:?} does not parse: {e}"));
    assert_eq!(
        (again.root(), again.segments()),
        (path.root(), path.segments()),
        "{spelled:?}"
    );

    let mut event = sample_event();
    let _ = path.get(&event);
    let _ = path.get_mut(&mut event);
    let _ = path.object_mut(&mut event);

    let value = if path.is_root() {
        json!({"fuzz": [1, "two"]})
    } else {
        json!("fuzz")
    };
    // A refused `set` may leave objects it created on the way: a stage that fails discards the
    // event for the original, so that is not checked.
    if path.set(&mut event, value.clone()).is_ok() {
        assert!(!path.is_read_only(), "a read-only path was written");
        let read = path.get(&event).expect("a value just set is present");
        assert!(read.json_eq(&value), "set {value} but read {:?}", read.to_value());
        let removed = path.remove(&mut event).expect("a writable path removes");
        assert_eq!(removed, Some(value), "remove did not give back what set wrote");
    }
    assert_eq!(path.remove(&mut event).is_err(), path.is_read_only());
});

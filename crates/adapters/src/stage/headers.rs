//! Kafka headers: those metastream writes on the messages it produces, and what it reads from
//! the messages it consumes.

use domain::schema::headers;
use rdkafka::message::{Header, Headers as _, Message, OwnedHeaders, OwnedMessage};

/// The value of header `name` of a consumed message, as text.
pub(super) fn header_of(m: &OwnedMessage, name: &str) -> Option<String> {
    let h = m.headers()?.iter().find(|h| h.key == name)?;
    Some(String::from_utf8_lossy(h.value?).into_owned())
}

/// Headers naming the event, for messages about one event.
pub fn event_headers(id: &str, source: &str) -> OwnedHeaders {
    OwnedHeaders::new_with_capacity(2)
        .insert(Header { key: headers::EVENT_ID, value: Some(id) })
        .insert(Header { key: headers::SOURCE, value: Some(source) })
}

/// Adds `(name, value)` headers, e.g. the trace context.
pub fn with_headers(mut h: OwnedHeaders, extra: &[(String, String)]) -> OwnedHeaders {
    for (name, value) in extra {
        h = h.insert(Header { key: name, value: Some(value) });
    }
    h
}

/// An event's headers (`id`, `source`) plus those its operations decided (`routing.headers`).
pub fn output_headers(id: &domain::EventId, source: &domain::SourceName, routing: &domain::Routing) -> OwnedHeaders {
    let mut h = event_headers(id.as_str(), source.as_str());
    for (name, value) in &routing.headers {
        if name != headers::EVENT_ID && name != headers::SOURCE {
            h = h.insert(Header { key: name, value: Some(value) });
        }
    }
    h
}

/// The headers of a consumed message, as (name, UTF-8 value) pairs.
pub fn message_headers(message: &OwnedMessage) -> Vec<(String, String)> {
    message
        .headers()
        .map(|h| {
            h.iter()
                .filter_map(|h| Some((h.key.to_owned(), String::from_utf8(h.value?.to_vec()).ok()?)))
                .collect()
        })
        .unwrap_or_default()
}

/// The source a consumed message names in its headers, or `unknown`.
pub fn source_of(message: &OwnedMessage) -> String {
    source(message).to_owned()
}

/// [`source_of`], borrowed from any message (a fetched one not yet copied out of the client).
pub fn source<M: rdkafka::message::Message>(message: &M) -> &str {
    message
        .headers()
        .and_then(|h| h.iter().find(|h| h.key == headers::SOURCE).and_then(|h| h.value))
        .and_then(|v| std::str::from_utf8(v).ok())
        .unwrap_or("unknown")
}

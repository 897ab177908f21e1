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

/// When `message` was produced (its Kafka timestamp, ms since the epoch), as a header value.
fn produced_at_ms<M: Message>(message: &M) -> Option<String> {
    message.timestamp().to_millis().filter(|ms| *ms > 0).map(|ms| ms.to_string())
}

/// A notice's headers gain when its ingest message was produced ([`headers::INGESTED_AT_MS`]).
pub fn with_ingest_time(h: OwnedHeaders, ingest: &OwnedMessage) -> OwnedHeaders {
    match produced_at_ms(ingest) {
        Some(at) => h.insert(Header { key: headers::INGESTED_AT_MS, value: Some(&at) }),
        None => h,
    }
}

/// A published event's headers gain when its ingest message and its notice were produced
/// ([`headers::INGESTED_AT_MS`], carried by the notice, and [`headers::NOTICED_AT_MS`]): with
/// the published message's own timestamp, the time each hop took.
pub fn with_hop_times(mut h: OwnedHeaders, notice: &OwnedMessage) -> OwnedHeaders {
    if let Some(ingested) = header_of(notice, headers::INGESTED_AT_MS) {
        h = h.insert(Header { key: headers::INGESTED_AT_MS, value: Some(&ingested) });
    }
    match produced_at_ms(notice) {
        Some(at) => h.insert(Header { key: headers::NOTICED_AT_MS, value: Some(&at) }),
        None => h,
    }
}

/// An event's headers (`id`, `source`) plus those its operations decided (`routing.headers`).
pub fn output_headers(id: &domain::EventId, source: &domain::SourceName, routing: &domain::Routing) -> OwnedHeaders {
    let mut h = event_headers(id.as_str(), source.as_str());
    for (name, value) in &routing.headers {
        if ![headers::EVENT_ID, headers::SOURCE, headers::INGESTED_AT_MS, headers::NOTICED_AT_MS].contains(&name.as_str()) {
            h = h.insert(Header { key: name, value: Some(value) });
        }
    }
    h
}

/// The headers of a consumed message, as (name, UTF-8 value) pairs.
pub fn message_headers<M: Message>(message: &M) -> Vec<(String, String)> {
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
    header(message, headers::SOURCE).unwrap_or("unknown")
}

/// The value of the message's header `name`, when it has one that is text.
pub fn header<'m, M: rdkafka::message::Message>(message: &'m M, name: &str) -> Option<&'m str> {
    message.headers()?.iter().find(|h| h.key == name).and_then(|h| std::str::from_utf8(h.value?).ok())
}

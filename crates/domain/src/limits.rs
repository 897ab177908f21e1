//! The size and depth budget of an accepted event, end to end.
//!
//! Every message a stage produces for an event — the ingest message, the pre stage's notice
//! (which carries the record one level down), the output message, a dead letter with its
//! headers — must fit the topic it goes to, or the pipeline cannot get past it. The gateway
//! therefore accepts only events that fit the smallest of those topics with room for what the
//! pipeline adds around them ([`ENVELOPE_ALLOWANCE`]), and nests no deeper than the stages'
//! parser allows once wrapped ([`MAX_EVENT_DEPTH`]). What operations add on top is checked where
//! it happens: an output that outgrows its topic is dead-lettered, and a dead letter that
//! outgrows the dead-letter topic becomes a reference to the original message.
//!
//! The topic limits are read from the broker at start-up (`max.message.bytes`); see
//! [`TopicLimits`].

use crate::schema::Topics;

/// The deepest nesting every stage's JSON parser accepts (serde_json refuses a 128th level).
pub const PARSER_DEPTH_LIMIT: usize = 127;

/// Levels the pipeline wraps an event in: a notice carries the record one level down.
pub const WRAPPER_DEPTH: usize = 1;

/// Levels left for operations that nest deeper (e.g. `insert_field` creating parents).
pub const OPERATION_DEPTH_HEADROOM: usize = 6;

/// The deepest a client event may nest, counting the event object itself as level 1:
/// `{"payload": {"a": [1]}}` nests 3 levels.
pub const MAX_EVENT_DEPTH: usize = PARSER_DEPTH_LIMIT - WRAPPER_DEPTH - OPERATION_DEPTH_HEADROOM;

/// Bytes a message costs in a Kafka record batch besides its key, value and headers (the batch
/// header, 61 bytes, and the record's own framing), rounded up.
pub const RECORD_OVERHEAD: usize = 128;

/// Bytes reserved around an event's wire form for what the pipeline adds before it reaches the
/// output topic: the notice's wrapper (source and id again), the record's provenance and the
/// incoming headers it keeps, the Kafka key and headers (event id, source, `traceparent`,
/// `tracestate`), and small operations such as `add_timestamp`. An id is at most 256
/// characters (1 KiB as UTF-8, or 512 bytes of escaped quotes) and appears four to five times;
/// the rest is under 2 KiB. The test below keeps the allowance twice the worst case.
pub const ENVELOPE_ALLOWANCE: usize = 12 * 1024;

/// The longest error text a dead letter's header carries; longer ones are cut (at a character
/// boundary) and end with `…`.
pub const MAX_ERROR_HEADER: usize = 1024;

/// The largest message (key + value + headers) each topic of the pipeline takes: the topic's
/// `max.message.bytes` (or the producer's `message.max.bytes`, when smaller) less
/// [`RECORD_OVERHEAD`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicLimits {
    pub ingest: usize,
    pub processed: usize,
    pub output: usize,
    pub dead_letter: usize,
}

impl TopicLimits {
    /// Limits from each topic's `max.message.bytes` and the producer's `message.max.bytes`.
    pub fn from_max_message_bytes(ingest: usize, processed: usize, output: usize, dead_letter: usize, producer_max: usize) -> Self {
        let usable = |topic: usize| topic.min(producer_max).saturating_sub(RECORD_OVERHEAD);
        TopicLimits { ingest: usable(ingest), processed: usable(processed), output: usable(output), dead_letter: usable(dead_letter) }
    }

    /// The largest event the gateway accepts, measured as its wire form (what it writes to the
    /// ingest topic): whatever the stages add around it still fits every topic it passes.
    pub fn max_event_bytes(&self) -> usize {
        self.ingest.min(self.processed).min(self.output).saturating_sub(ENVELOPE_ALLOWANCE)
    }

    /// The limit of `topic` when it is one of the pipeline's; `None` for another topic (one an
    /// operation routed to), whose limit only the broker knows.
    pub fn of(&self, topics: &Topics, topic: &str) -> Option<usize> {
        if topic == topics.ingest {
            Some(self.ingest)
        } else if topic == topics.processed {
            Some(self.processed)
        } else if topic == topics.output {
            Some(self.output)
        } else if topic == topics.dead_letter {
            Some(self.dead_letter)
        } else {
            None
        }
    }

    /// The smallest limit: the largest record batch a producer may build for these topics.
    pub fn smallest(&self) -> usize {
        self.ingest.min(self.processed).min(self.output).min(self.dead_letter)
    }
}

/// What a message counts against a topic's limit: key, value, and each header's name and value
/// with their framing.
pub fn message_size<'a>(key: Option<&[u8]>, value: &[u8], headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> usize {
    const HEADER_FRAMING: usize = 10;
    key.map_or(0, <[u8]>::len)
        + value.len()
        + headers.into_iter().map(|(name, value)| name.len() + value.map_or(0, <[u8]>::len) + HEADER_FRAMING).sum::<usize>()
}

/// How deep `json` nests (an object or array is a level; scalars add none). Scans bytes,
/// skipping strings; meant for text a JSON parser has already accepted.
pub fn json_depth(json: &[u8]) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `text` cut to at most `max` bytes at a character boundary, marked with `…` when cut.
pub fn truncate(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if text.len() <= max {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!("{}…", &text[..end]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_objects_and_arrays_not_brackets_in_strings() {
        assert_eq!(json_depth(br#"{}"#), 1);
        assert_eq!(json_depth(br#"{"payload":{"a":[1,{"b":2}]}}"#), 4);
        assert_eq!(json_depth(br#"{"s":"[[[{{{\"[[["}"#), 1);
        assert_eq!(json_depth(br#"{"s":"\\","t":[[]]}"#), 3);
        assert_eq!(json_depth(b"1"), 0);
    }

    #[test]
    fn the_depth_limit_leaves_room_for_the_notice_wrapper_within_the_parser_limit() {
        // An event at the limit, wrapped as a notice, still parses.
        let event = format!(r#"{{"id":"1","source":"s","payload":{{"d":{}1{}}}}}"#, "[".repeat(MAX_EVENT_DEPTH - 2), "]".repeat(MAX_EVENT_DEPTH - 2));
        assert_eq!(json_depth(event.as_bytes()), MAX_EVENT_DEPTH);
        let mut notice = format!(r#"{{"source":"s","id":"1","record":{event}}}"#);
        for _ in 0..OPERATION_DEPTH_HEADROOM {
            notice = format!("[{notice}]");
        }
        assert!(serde_json::from_str::<serde_json::Value>(&notice).is_ok());
        // One level more than the parser allows is refused, so the limit is not too generous.
        let too_deep = format!("{}1{}", "[".repeat(PARSER_DEPTH_LIMIT + 1), "]".repeat(PARSER_DEPTH_LIMIT + 1));
        assert!(serde_json::from_str::<serde_json::Value>(&too_deep).is_err());
        let deepest = format!("{}1{}", "[".repeat(PARSER_DEPTH_LIMIT), "]".repeat(PARSER_DEPTH_LIMIT));
        assert!(serde_json::from_str::<serde_json::Value>(&deepest).is_ok());
    }

    #[test]
    fn the_event_budget_is_the_smallest_topic_less_the_envelope() {
        let limits = TopicLimits::from_max_message_bytes(1_048_588, 1_048_588, 2_000_000, 500_000, 1_000_000);
        assert_eq!(limits.ingest, 1_000_000 - RECORD_OVERHEAD);
        assert_eq!(limits.output, 1_000_000 - RECORD_OVERHEAD);
        assert_eq!(limits.dead_letter, 500_000 - RECORD_OVERHEAD);
        assert_eq!(limits.max_event_bytes(), 1_000_000 - RECORD_OVERHEAD - ENVELOPE_ALLOWANCE);
        assert_eq!(limits.smallest(), 500_000 - RECORD_OVERHEAD);
        let topics = Topics::default();
        assert_eq!(limits.of(&topics, &topics.dead_letter), Some(limits.dead_letter));
        assert_eq!(limits.of(&topics, "elsewhere"), None);
    }

    #[test]
    fn the_envelope_allowance_covers_the_largest_wrapper() {
        // The longest id (its characters 4 bytes each, or every one escaped: whichever is
        // longer written), the longest source, the largest trace headers.
        let escaped_id = ["\"", "\u{1D11E}"]
            .iter()
            .map(|c| serde_json::to_string(&c.repeat(crate::event::MAX_ID_LEN)).unwrap())
            .max_by_key(String::len)
            .unwrap();
        let id = "\u{1D11E}".repeat(crate::event::MAX_ID_LEN);
        let source = "s".repeat(crate::event::MAX_SOURCE_LEN);
        let trace = [("traceparent", 55), ("tracestate", 512)];
        let notice_wrapper = format!(r#"{{"source":"{source}","id":{escaped_id},"record":}}"#).len();
        let provenance = r#""provenance":{"ingest_partition":2147483647,"ingest_offset":9223372036854775807,"pre_config_version":18446744073709551615},"#.len();
        let routing = format!(r#","routing":{{"headers":[["metastream-event-id",{escaped_id}],["metastream-source","{source}"],["traceparent","{}"],["tracestate","{}"]]}}"#, "x".repeat(55), "x".repeat(512)).len();
        let key = source.len() + 1 + id.len();
        let headers = message_size(None, b"", [("metastream-event-id", Some(id.as_bytes())), ("metastream-source", Some(source.as_bytes()))])
            + trace.iter().map(|(n, v)| n.len() + v + 10).sum::<usize>();
        let added = notice_wrapper + provenance + routing + key + headers;
        assert!(added * 2 < ENVELOPE_ALLOWANCE, "the pipeline adds up to {added} bytes; keep the allowance well above");
    }

    #[test]
    fn truncation_keeps_characters_whole() {
        assert_eq!(truncate("short", 10), "short");
        let cut = truncate("ééééé", 6);
        assert!(cut.len() <= 6, "{cut}");
        assert!(cut.ends_with('…'));
    }
}

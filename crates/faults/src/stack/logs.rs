//! The lines of the services' logs worth reading after a failed scenario: warnings and errors
//! without the reconnect noise, each distinct message once, the most telling files first.

use std::path::PathBuf;

/// Lines of a service log that say what went wrong — warnings and errors without the reconnect
/// noise a broker outage repeats many times a second — and the few INFO lines that say where a
/// stage's partitions went.
fn telling(line: &str) -> bool {
    const NOISE: &[&str] = &["Global error", "kafka consumer error", "Connect to ipv4", "dead-lettering message", "client error (at most"];
    const MOVES: &[&str] = &["partitions assigned", "partitions revoked", "rewound to the committed offset", "aborted the open transaction"];
    ((line.contains(" WARN ") || line.contains(" ERROR ")) && !NOISE.iter().any(|n| line.contains(n)))
        || (line.contains(" INFO ") && MOVES.iter().any(|m| line.contains(m)))
}

/// What makes two log lines "the same": the level, target and message, without the timestamp,
/// the span's fields, the event's `key=value` fields, and with every number as `#`.
fn message_of(line: &str) -> String {
    let mut rest = line.split_once(char::is_whitespace).map_or(line, |(_, r)| r).trim_start();
    let mut out = String::new();
    // Span fields: `name{...}:` prefixes.
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find("}:").map(|c| open + c + 2) else { break };
        if rest[..open].contains(": ") {
            break;
        }
        out.push_str(&rest[..open]);
        out.push(':');
        rest = &rest[close..];
    }
    out.push_str(rest);
    // Event fields start at the first ` key=`.
    let bytes = out.as_bytes();
    let cut = (0..bytes.len()).find(|&i| {
        bytes[i] == b' '
            && bytes.get(i + 1).is_some_and(|b| b.is_ascii_lowercase() || *b == b'_')
            && out[i + 1..].find('=').is_some_and(|eq| out[i + 1..i + 1 + eq].bytes().all(|b| b.is_ascii_lowercase() || b == b'_' || b == b'.'))
    });
    let message = cut.map_or(out.as_str(), |c| &out[..c]);
    // Numbers (durations, offsets, partitions) do not make a message another one.
    let mut key = String::with_capacity(message.len());
    for c in message.chars() {
        if !(c.is_ascii_digit() && key.ends_with('#')) {
            key.push(if c.is_ascii_digit() { '#' } else { c });
        }
    }
    key
}

/// The order a stalled pipeline is best read in: the stages first, the gateway's (long, and
/// only the echo of a broker outage) last.
fn log_rank(file: &std::path::Path) -> usize {
    let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("");
    ["pre-transformer", "post-transformer", "consumer-api", "gateway"].iter().position(|s| name.starts_with(s)).unwrap_or(4)
}

/// For a failed scenario: of each service log in `dir`, the last `per_file` distinct telling
/// messages (each with how often it came and its last full line), so a run whose logs are gone
/// (CI, which shows only part of the output) still shows where a stage stopped.
pub fn print_log_excerpts(dir: &std::path::Path, per_file: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "log")).collect();
    files.sort_by_key(|f| (log_rank(f), f.clone()));
    for file in files {
        let Ok(text) = std::fs::read(&file) else { continue };
        let text = strip_ansi(&String::from_utf8_lossy(&text));
        let excerpt = distinct_last(text.lines().filter(|l| telling(l)), per_file);
        eprintln!("   -- {} (the last {} distinct of its warnings, errors and moves):", file.display(), excerpt.len());
        for (count, line) in &excerpt {
            eprintln!("   | {:>4}× {}", count, line.chars().take(300).collect::<String>());
        }
    }
}

/// The last `n` distinct messages of `lines` (by [`message_of`]), in the order of their last
/// occurrence, each with how many lines it had and its last line.
fn distinct_last<'a>(lines: impl Iterator<Item = &'a str>, n: usize) -> Vec<(usize, &'a str)> {
    let mut seen: Vec<(String, usize, &'a str)> = Vec::new();
    for line in lines {
        let key = message_of(line);
        match seen.iter().position(|(k, _, _)| *k == key) {
            Some(i) => {
                let (k, count, _) = seen.remove(i);
                seen.push((k, count + 1, line));
            }
            None => seen.push((key, 1, line)),
        }
    }
    seen.into_iter().rev().take(n).rev().map(|(_, count, line)| (count, line)).collect()
}

/// `text` without the terminal colour codes tracing writes.
pub(super) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ ... letter
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn log_excerpts_keep_warnings_without_colour_or_reconnect_noise() {
        let line = "\x1b[2m2026-12-01T23:24:02Z\x1b[0m \x1b[33m WARN\x1b[0m stage: the transaction was aborted";
        let plain = super::strip_ansi(line);
        assert_eq!(plain, "2026-12-01T23:24:02Z  WARN stage: the transaction was aborted");
        assert!(super::telling(&plain));
        assert!(!super::telling("2026-12-01T23:24:05Z  WARN adapters::stage::runner: kafka consumer error error=AllBrokersDown"));
        assert!(!super::telling("2026-12-01T23:24:05Z  INFO consuming"));
        assert!(super::telling("2026-12-01T23:24:05Z  INFO adapters::kafka: partitions assigned partitions=t[0],t[1]"));
    }

    #[test]
    fn excerpts_count_repeated_messages_once_each_in_the_order_they_last_came() {
        let lines = [
            "2026-12-02T01:59:08.541366Z  WARN ingest{otel.name=\"POST /ingest\" metastream.event.id=\"e81\"}: gateway::routes: kafka ack timed out event_id=e81 source=faults",
            "2026-12-02T01:59:08.6Z  WARN adapters::stage::transaction: a transactional call failed; retrying error=Transaction error: Broker: Coordinator not available what=committing",
            "2026-12-02T01:59:08.7Z  WARN ingest{otel.name=\"POST /ingest\" metastream.event.id=\"e82\"}: gateway::routes: kafka ack timed out event_id=e82 source=faults",
        ];
        assert_eq!(super::message_of(lines[0]), "WARN ingest: gateway::routes: kafka ack timed out");
        assert_eq!(super::message_of(lines[1]), "WARN adapters::stage::transaction: a transactional call failed; retrying");
        assert_eq!(
            super::message_of("2026-12-02T02:26:23Z  WARN librdkafka: librdkafka: FAIL [thrd:127.0.0.1:9092/1]: Disconnected (after 1700ms in state UP)"),
            "WARN librdkafka: librdkafka: FAIL [thrd:#.#.#.#:#/#]: Disconnected (after #ms in state UP)"
        );
        let excerpt = super::distinct_last(lines.into_iter(), 10);
        assert_eq!(excerpt, vec![(1, lines[1]), (2, lines[2])]);
        assert_eq!(super::distinct_last(lines.into_iter(), 1), vec![(2, lines[2])]);
        let mut files = [std::path::PathBuf::from("x/gateway-0.log"), "x/post-transformer-0.log".into(), "x/pre-transformer-1.log".into()];
        files.sort_by_key(|f| super::log_rank(f));
        assert_eq!(files[0], std::path::PathBuf::from("x/pre-transformer-1.log"));
    }
}

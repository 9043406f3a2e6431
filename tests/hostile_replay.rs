//! Hostile lines mixed into a recorded conversation: each is reported with its line
//! number and skipped, and the conversation around it gives the clean transcript, on
//! the memory store and on SQLite, through the library and through the demo binary.
//! Also: the replay clock and the demo's counter saturate instead of wrapping.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use stagecraft::Pipeline;
use stagecraft::clock::{Clock, ManualClock};
use stagecraft::replay::{Limits, REPLAY_EPOCH_S, ReplaySummary, error_chain, replay, replay_with};
use stagecraft::store::{MemoryStore, SessionStore};
use stagecraft::transport::{Outgoing, RecordingTransport};

fn scenario(name: &str) -> (Vec<u8>, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let input = std::fs::read(dir.join(format!("{name}.jsonl"))).unwrap();
    let transcript =
        std::fs::read_to_string(dir.join(format!("{name}.full.transcript.jsonl"))).unwrap();
    (input, transcript)
}

/// A message from user 1001 in chat 1001 (the scenarios' user).
fn msg(id: i64, text: &str) -> String {
    format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":1001,"type":"private"}},"from":{{"id":1001,"is_bot":false,"first_name":"U"}},"text":"{text}"}}}}"#
    )
}

/// The hostile lines, each with what its error must say. A line that is `None` must be
/// accepted silently (a blank line).
fn hostile_lines() -> Vec<(Vec<u8>, Option<&'static str>)> {
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let deep_update = format!(
        r#"{{"update_id":99,"message":{}1{}}}"#,
        "{\"a\":".repeat(10_000),
        "}".repeat(10_000)
    );
    let huge = format!("{{\"comment\":\"{}\"}}", "x".repeat(2 << 20));
    let lines: Vec<(Vec<u8>, Option<&str>)> = vec![
        (b"not json".to_vec(), Some("not JSON: expected ident")),
        (b"[1,2,3]".to_vec(), Some("a JSON array, not an object")),
        (b"[]".to_vec(), Some("a JSON array, not an object")),
        (b"\"hello\"".to_vec(), Some("a JSON string, not an object")),
        (b"42".to_vec(), Some("a JSON number, not an object")),
        (b"-1.5e300".to_vec(), Some("a JSON number, not an object")),
        (b"null".to_vec(), Some("a JSON null, not an object")),
        (b"true".to_vec(), Some("a JSON boolean, not an object")),
        (
            b"{\"kind\":\"unknown\"}".to_vec(),
            Some("not an update, parallel, advance_clock_s or comment line"),
        ),
        (
            b"{}".to_vec(),
            Some("not an update, parallel, advance_clock_s or comment line"),
        ),
        (
            msg(7, "x")
                .replacen("\"update_id\":7", "\"update_id\":\"7\"", 1)
                .into_bytes(),
            Some("not a Telegram update: invalid type: string \"7\", expected i64"),
        ),
        (
            br#"{"update_id":8,"message":{"text":"no chat"}}"#.to_vec(),
            Some("not a Telegram update: missing field `chat`"),
        ),
        (
            br#"{"update_id":9,"message":7}"#.to_vec(),
            Some("not a Telegram update: invalid type: integer `7`"),
        ),
        (
            br#"{"update_id":1e999}"#.to_vec(),
            Some("not a Telegram update: number out of range"),
        ),
        (
            br#"{"update_id":18446744073709551616}"#.to_vec(),
            Some("not a Telegram update"),
        ),
        (
            br#"{"update_id":10,"message":{"chat":{"id":1},"text":"\ud800"}}"#.to_vec(),
            Some("not a Telegram update: unexpected end of hex escape"),
        ),
        (
            b"{\"update_id\":11,\"message\":{".to_vec(),
            Some("not JSON: EOF while parsing"),
        ),
        (
            b"\xef\xbb\xbf{\"comment\":\"a byte order mark\"}".to_vec(),
            Some("not JSON"),
        ),
        (b"\0".to_vec(), Some("not JSON")),
        // Deep nesting is skipped (in bounded memory) where nothing is read: what is
        // wrong is what is left.
        (deep_array.into_bytes(), Some("a JSON array, not an object")),
        (
            deep_object.into_bytes(),
            Some("not an update, parallel, advance_clock_s or comment line"),
        ),
        (
            deep_update.into_bytes(),
            Some("not a Telegram update: missing field `chat`"),
        ),
        (
            "[".repeat(10_000).into_bytes(),
            Some("not JSON: EOF while parsing a list"),
        ),
        (
            br#"{"comment":"a","comment":"b"}"#.to_vec(),
            Some("not a replay line: duplicate field `comment`"),
        ),
        (
            b"\xff\xfe{\"update_id\":12}".to_vec(),
            Some("not UTF-8 (invalid byte at column 1)"),
        ),
        (
            b"{\"comment\":\"caf\xc3\"}".to_vec(),
            Some("not UTF-8 (invalid byte at column 16)"),
        ),
        (huge.into_bytes(), Some("longer than 1048576 bytes")),
        (
            br#"{"advance_clock_s":-5}"#.to_vec(),
            Some("advance_clock_s must be a whole number of seconds, 0 or more"),
        ),
        (
            br#"{"advance_clock_s":"5"}"#.to_vec(),
            Some("advance_clock_s must be a whole number of seconds, 0 or more"),
        ),
        (
            br#"{"parallel":"not a list"}"#.to_vec(),
            Some("parallel must be an array of updates"),
        ),
        (b"   \t  ".to_vec(), None),
        (b"\r".to_vec(), None),
        (Vec::new(), None),
    ];
    lines
}

/// Bad items for a `parallel` batch, with what their errors must say.
const BAD_ITEMS: [(&str, &str); 4] = [
    (
        r#"{"update_id":"x"}"#,
        "not a Telegram update: invalid type: string \"x\"",
    ),
    ("[1]", "a JSON array, not an object"),
    ("null", "a JSON null, not an object"),
    (
        r#"{"comment":"in a batch"}"#,
        "not a Telegram update: missing field `update_id`",
    ),
];

/// What a bad line must look like in the summary.
#[derive(Debug)]
struct Expected {
    line: usize,
    item: Option<usize>,
    says: &'static str,
}

/// The scenario `name` with every hostile line mixed in (one after each line of the
/// recording, round the list), and one of its updates sent inside a `parallel` batch
/// with bad items around it.
fn hostile_mix(name: &str) -> (Vec<u8>, String, Vec<Expected>, usize) {
    let (clean, transcript) = scenario(name);
    let good: Vec<&[u8]> = clean
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    let updates = good
        .iter()
        .filter(|l| l.windows(9).any(|w| w == b"update_id"))
        .count();
    let hostile = hostile_lines();
    let mut input = Vec::new();
    let mut expected = Vec::new();
    let mut line = 0;
    let mut push = |input: &mut Vec<u8>, bytes: &[u8]| {
        input.extend_from_slice(bytes);
        input.push(b'\n');
        line += 1;
        line
    };
    let mut batch_done = false;
    for (i, good_line) in good.iter().enumerate() {
        let is_update = good_line.windows(9).any(|w| w == b"update_id");
        if is_update && !batch_done && i >= 2 {
            // This update goes in a batch, between bad items.
            let good_line = std::str::from_utf8(good_line).unwrap();
            let items: Vec<&str> = vec![
                BAD_ITEMS[0].0,
                BAD_ITEMS[1].0,
                good_line,
                BAD_ITEMS[2].0,
                BAD_ITEMS[3].0,
            ];
            let n = push(
                &mut input,
                format!("{{\"parallel\":[{}]}}", items.join(",")).as_bytes(),
            );
            for (item, (_, says)) in [1, 2, 4, 5].into_iter().zip(BAD_ITEMS) {
                expected.push(Expected {
                    line: n,
                    item: Some(item),
                    says,
                });
            }
            batch_done = true;
        } else {
            push(&mut input, good_line);
        }
        // Two hostile lines after each good one, round the list, until all are in.
        for k in 0..2 {
            let idx = 2 * i + k;
            if idx >= hostile.len() {
                continue;
            }
            let (bytes, says) = &hostile[idx];
            let n = push(&mut input, bytes);
            if let Some(says) = says {
                expected.push(Expected {
                    line: n,
                    item: None,
                    says,
                });
            }
        }
    }
    // Whatever did not fit between the good lines goes at the end.
    for (bytes, says) in hostile.iter().skip(2 * good.len()) {
        let n = push(&mut input, bytes);
        if let Some(says) = says {
            expected.push(Expected {
                line: n,
                item: None,
                says,
            });
        }
    }
    // The last line has no line break.
    input.extend_from_slice(b"{\"kind\":\"last\"}");
    expected.push(Expected {
        line: line + 1,
        item: None,
        says: "not an update, parallel, advance_clock_s or comment line",
    });
    (input, transcript, expected, updates)
}

/// Transcript lines grouped by chat, in order within each chat.
fn by_chat<'a>(lines: impl IntoIterator<Item = &'a str>) -> BTreeMap<i64, Vec<serde_json::Value>> {
    let mut map: BTreeMap<i64, Vec<serde_json::Value>> = BTreeMap::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(line).expect("transcript line is JSON");
        map.entry(v["chat_id"].as_i64().expect("chat_id"))
            .or_default()
            .push(v);
    }
    map
}

async fn run(store: Arc<dyn SessionStore>, input: &[u8]) -> (ReplaySummary, Vec<String>) {
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let replies = RecordingTransport::new();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store_arc(store)
            .clock(clock.clone())
            .transport(replies.clone()),
    )
    .unwrap();
    let summary = replay(&bot, &clock, input).await.unwrap();
    (
        summary,
        replies.sent().iter().map(Outgoing::to_json_line).collect(),
    )
}

fn check_summary(summary: &ReplaySummary, expected: &[Expected], lines: usize, updates: usize) {
    assert_eq!(summary.lines, lines, "lines read");
    assert_eq!(summary.updates, updates, "updates handled");
    assert_eq!(summary.failed_updates, 0);
    assert_eq!(summary.bad_lines_total, expected.len());
    assert_eq!(summary.bad_lines.len(), expected.len());
    for (bad, want) in summary.bad_lines.iter().zip(expected) {
        let chain = error_chain(bad);
        assert_eq!((bad.line, bad.item), (want.line, want.item), "{chain}");
        let place = match want.item {
            Some(item) => format!("line {}, parallel item {item}: ", want.line),
            None => format!("line {}: ", want.line),
        };
        assert!(
            chain.starts_with(&format!("{place}{}", want.says)),
            "{chain:?} should start with {place}{}",
            want.says
        );
        // No part of the message says the same thing twice.
        let parts: Vec<&str> = chain.split(": ").collect();
        for (i, p) in parts.iter().enumerate() {
            assert!(!parts[i + 1..].contains(p), "{chain:?} repeats {p:?}");
        }
        assert!(chain.len() < 300, "{chain:?}");
    }
}

fn every_scenario() -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".jsonl") && !n.ends_with(".transcript.jsonl"))
        .map(|n| n.trim_end_matches(".jsonl").to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_cost_only_themselves_on_the_memory_store() {
    for name in every_scenario() {
        let (input, transcript, expected, updates) = hostile_mix(&name);
        let lines = input.split(|&b| b == b'\n').count();
        let (summary, sent) = run(Arc::new(MemoryStore::new()), &input).await;
        check_summary(&summary, &expected, lines, updates);
        assert_eq!(
            by_chat(sent.iter().map(String::as_str)),
            by_chat(transcript.lines()),
            "transcript of {name} with hostile lines"
        );
    }
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_lines_cost_only_themselves_on_sqlite() {
    for name in every_scenario() {
        let (input, transcript, expected, updates) = hostile_mix(&name);
        let lines = input.split(|&b| b == b'\n').count();
        let store = stagecraft::store::SqliteStore::open("sqlite::memory:")
            .await
            .unwrap();
        let (summary, sent) = run(Arc::new(store), &input).await;
        check_summary(&summary, &expected, lines, updates);
        assert_eq!(
            by_chat(sent.iter().map(String::as_str)),
            by_chat(transcript.lines()),
            "transcript of {name} with hostile lines"
        );
    }
}

/// Only the first `max_kept_bad_lines` are kept with their errors; all are counted.
#[tokio::test]
async fn the_summary_keeps_a_bounded_number_of_bad_lines() {
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let replies = RecordingTransport::new();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .clock(clock.clone())
            .transport(replies.clone()),
    )
    .unwrap();
    let mut input = "x\n".repeat(5000);
    input.push_str(&msg(1, "/where"));
    let limits = Limits::default().max_kept_bad_lines(10);
    let summary = replay_with(&bot, &clock, input.as_bytes(), limits)
        .await
        .unwrap();
    assert_eq!(
        (summary.bad_lines.len(), summary.bad_lines_total),
        (10, 5000)
    );
    assert_eq!(summary.bad_lines[9].line, 10);
    assert_eq!(replies.texts(), ["scene=none cursor=-"]);
    // The update line is longer than 64 bytes.
    let limits = limits.max_line_bytes(64);
    let summary = replay_with(&bot, &clock, msg(2, "/where").as_bytes(), limits)
        .await
        .unwrap();
    assert_eq!(
        error_chain(&summary.bad_lines[0]),
        "line 1: longer than 64 bytes"
    );
}

/// A huge `advance_clock_s` saturates the clock: the profile scene's TTL still expires
/// (a wrapped clock would stand before the epoch, and the scene would never expire).
#[tokio::test]
async fn a_huge_clock_advance_saturates_and_ttls_still_expire() {
    for advance in [
        "18446744073709551615",
        "9223372036854775807",
        "9223372036854776",
    ] {
        let input = [
            msg(1, "/profile"),
            format!("{{\"advance_clock_s\":{advance}}}"),
            msg(2, "still here?"),
            format!("{{\"advance_clock_s\":{advance}}}"),
            msg(3, "/where"),
        ]
        .join("\n");
        let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
        let replies = RecordingTransport::new();
        let bot = demo_bot::build(
            Pipeline::<demo_bot::Demo>::builder()
                .clock(clock.clone())
                .transport(replies.clone()),
        )
        .unwrap();
        let summary = replay(&bot, &clock, input.as_bytes()).await.unwrap();
        assert!(summary.is_clean(), "{summary:?}");
        assert_eq!(summary.failed_updates, 0, "{advance}");
        assert_eq!(clock.now_ms(), i64::MAX, "{advance}");
        assert_eq!(
            replies.texts(),
            [
                "Profile scene (no profile). Commands: /whoami /signup /back",
                "Outside scenes (2 updates). Send /start or /profile.",
                "scene=none cursor=-",
            ],
            "{advance}"
        );
    }
}

/// The demo's update counter stays at `u64::MAX` instead of wrapping (or panicking).
#[tokio::test]
async fn the_demo_counter_saturates() {
    let store = MemoryStore::new();
    store
        .save(
            "1001:1001",
            format!("{{\"v\":1,\"data\":{{\"updates\":{}}}}}", u64::MAX).as_bytes(),
            None,
        )
        .await
        .unwrap();
    let replies = RecordingTransport::new();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store(store.clone())
            .transport(replies.clone()),
    )
    .unwrap();
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let input = [msg(1, "hello"), msg(2, "again")].join("\n");
    let summary = replay(&bot, &clock, input.as_bytes()).await.unwrap();
    assert_eq!(summary.failed_updates, 0);
    let n = u64::MAX;
    assert_eq!(
        replies.texts(),
        [
            format!("Outside scenes ({n} updates). Send /start or /profile."),
            format!("Outside scenes ({n} updates). Send /start or /profile."),
        ]
    );
}

fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{}_{name}", common::unique_name("hostile")));
    std::fs::write(&path, bytes).unwrap();
    path
}

/// The demo prints the transcript on stdout and nothing else, the bad lines on stderr
/// with their numbers, and exits with status 1.
#[test]
fn the_demo_reports_bad_lines_on_stderr_and_fails() {
    let demo = common::example_binary("demo");
    let (input, transcript, expected, _) = hostile_mix("01_happy_path");
    let file = temp_file("01.jsonl", &input);
    for from_stdin in [false, true] {
        let mut cmd = std::process::Command::new(&demo);
        cmd.args(["--store", "memory", "--replay"]);
        if from_stdin {
            cmd.arg("-").stdin(std::fs::File::open(&file).unwrap());
        } else {
            cmd.arg(&file);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            transcript,
            "stdout is the clean transcript"
        );
        let reported: Vec<&str> = stderr.lines().filter(|l| l.starts_with("line ")).collect();
        assert_eq!(reported.len(), expected.len(), "{stderr}");
        for (line, want) in reported.iter().zip(&expected) {
            let place = match want.item {
                Some(item) => format!("line {}, parallel item {item}: ", want.line),
                None => format!("line {}: ", want.line),
            };
            assert!(line.starts_with(&place), "{line} / {place}");
            assert!(line.contains(want.says), "{line} / {}", want.says);
        }
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("error: {} of ", expected.len())),
            "{stderr}"
        );
    }
    let _ = std::fs::remove_file(&file);

    // A clean file still exits 0 with nothing on stderr.
    let (clean, transcript) = scenario("03_cancel_mid_wizard");
    let file = temp_file("03.jsonl", &clean);
    let out = std::process::Command::new(&demo)
        .args(["--store", "memory", "--replay"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8(out.stdout).unwrap(), transcript);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    let _ = std::fs::remove_file(&file);
}

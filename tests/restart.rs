//! Conversations that survive a restart (and a SIGKILL), and replicas that share a store,
//! run as real processes of the demo binary.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The stores to run against: SQLite always; Redis (one server, a cluster), PostgreSQL,
/// MySQL and MongoDB when their URL is set.
fn stores(test: &str) -> Vec<(String, Vec<String>)> {
    let mut v = Vec::new();
    let path = std::env::temp_dir().join(format!("{}.db", common::unique_name(test)));
    v.push((format!("sqlite:{}", path.display()), Vec::new()));
    for var in [
        "STAGECRAFT_REDIS_URL",
        "STAGECRAFT_REDIS_CLUSTER_URL",
        "STAGECRAFT_POSTGRES_URL",
        "STAGECRAFT_MYSQL_URL",
        "STAGECRAFT_MONGODB_URL",
    ] {
        if let Some(url) = common::server_url(var) {
            v.push((
                url,
                vec!["--namespace".to_owned(), common::unique_name(test)],
            ));
        }
    }
    v
}

/// Drops what a test left in a store: the SQLite file, the SQL table, the Redis keys, the
/// MongoDB collections.
fn cleanup(store: &(String, Vec<String>)) {
    let (spec, extra) = store;
    if let Some(path) = spec.strip_prefix("sqlite:") {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{path}{suffix}"));
        }
        return;
    }
    let Some(ns) = extra.get(1).cloned() else {
        return;
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(common::drop_namespace(spec, &ns));
}

fn replay(store: &(String, Vec<String>), extra: &[&str], input: &str) -> String {
    let mut child = Command::new(common::example_binary("demo"))
        .args(["--store", &store.0])
        .args(&store.1)
        .args(extra)
        .args(["--replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "demo failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn scenario(name: &str) -> (Vec<String>, String) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let input = std::fs::read_to_string(dir.join(format!("{name}.jsonl"))).unwrap();
    let lines = input
        .lines()
        .filter(|l| l.contains("update_id"))
        .map(str::to_owned)
        .collect();
    (
        lines,
        std::fs::read_to_string(dir.join(format!("{name}.full.transcript.jsonl"))).unwrap(),
    )
}

#[test]
fn a_conversation_continues_in_a_second_process() {
    let (updates, expected) = scenario("01_happy_path");
    for store in stores("restart") {
        // Stop in the middle of the wizard (after the name), and again inside the profile scene.
        let first = replay(&store, &[], &updates[..2].join("\n"));
        let second = replay(&store, &[], &updates[2..7].join("\n"));
        let third = replay(&store, &[], &updates[7..].join("\n"));
        assert_eq!(
            format!("{first}{second}{third}"),
            expected,
            "store {}",
            store.0
        );
        cleanup(&store);
    }
}

#[test]
fn a_conversation_survives_sigkill_between_two_updates() {
    let (updates, expected) = scenario("02_invalid_age_reask");
    let expected: Vec<&str> = expected.lines().collect();
    for store in stores("sigkill") {
        let mut child = Command::new(common::example_binary("demo"))
            .args(["--store", &store.0])
            .args(&store.1)
            .args(["--replay", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        // Feed four updates (/start, Bob, abc, 0): four replies, each sent after its commit.
        let mut seen = Vec::new();
        for u in &updates[..4] {
            writeln!(stdin, "{u}").unwrap();
            stdin.flush().unwrap();
            let mut line = String::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            while line.is_empty() && Instant::now() < deadline {
                stdout.read_line(&mut line).unwrap();
            }
            seen.push(line.trim_end().to_owned());
        }
        // SIGKILL: no chance to flush or clean up.
        child.kill().unwrap();
        child.wait().unwrap();
        let rest = replay(&store, &[], &updates[4..].join("\n"));
        let mut all = seen;
        all.extend(rest.lines().map(str::to_owned));
        assert_eq!(all, expected, "store {}", store.0);
        cleanup(&store);
    }
}

#[test]
fn four_replicas_incrementing_one_session_lose_nothing() {
    const PER_PROCESS: usize = 40;
    for store in stores("replicas") {
        // Create the store's schema once, then start four processes at once.
        let _ = replay(&store, &[], "");
        // Each process gets updates of its own (distinct ids: the same update delivered
        // to several processes would be handled once).
        let inputs: Vec<String> = (0..4)
            .map(|p| {
                (0..PER_PROCESS)
                    .map(|i| {
                        let id = p * 1000 + i;
                        format!(
                            r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":77}},"from":{{"id":77}},"text":"hello"}}}}"#
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect();
        let children: Vec<_> = inputs
            .iter()
            .map(|input| {
                let mut c = Command::new(common::example_binary("demo"))
                    .args(["--store", &store.0])
                    .args(&store.1)
                    .args(["--replay", "-"])
                    .stdin(Stdio::piped())
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
                c
            })
            .collect();
        let mut counts = Vec::new();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            for line in String::from_utf8(out.stdout).unwrap().lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                let text = v["text"].as_str().unwrap();
                let n: usize = text
                    .strip_prefix("Outside scenes (")
                    .and_then(|t| t.split(' ').next())
                    .and_then(|n| n.parse().ok())
                    .unwrap_or_else(|| panic!("unexpected reply {text}"));
                counts.push(n);
            }
        }
        // Every update was counted exactly once, and each committed value announced once.
        assert_eq!(counts.len(), 4 * PER_PROCESS, "store {}", store.0);
        let distinct: BTreeSet<usize> = counts.iter().copied().collect();
        assert_eq!(
            distinct,
            (1..=4 * PER_PROCESS).collect(),
            "store {}",
            store.0
        );
        cleanup(&store);
    }
}

/// A deadline stored by one process fires in a later one, once its clock passes it:
/// each run of the demo is a new process on the same store (SQLite file, Redis, the SQL
/// servers, MongoDB when set), its replay clock starting from the same instant.
#[test]
fn a_reminder_deadline_stored_by_one_process_fires_in_the_next() {
    let start = r#"{"update_id":1,"message":{"message_id":1,"date":1700000000,"chat":{"id":3001,"type":"private"},"from":{"id":3001,"is_bot":false,"first_name":"U"},"text":"/start","entities":[{"type":"bot_command","offset":0,"length":6}]}}"#;
    let reminder =
        r#"{"method":"sendMessage","chat_id":3001,"text":"Still there? Send /cancel to stop."}"#;
    for store in stores("remind_restart") {
        let remind = ["--remind"];
        let first = replay(&store, &remind, &format!("{start}\n"));
        assert_eq!(
            first.lines().count(),
            1,
            "{}: {first}",
            stagecraft::store::redact_url(&store.0)
        );
        // The process is gone; the deadline (600 s after /start) is in the store.
        let early = replay(&store, &remind, "{\"advance_clock_s\":599}\n");
        assert_eq!(early, "", "{}: fired early", store.0);
        let due = replay(&store, &remind, "{\"advance_clock_s\":600}\n");
        assert_eq!(due.lines().collect::<Vec<_>>(), [reminder], "{}", store.0);
        let again = replay(&store, &remind, "{\"advance_clock_s\":100000}\n");
        assert_eq!(again, "", "{}: fired twice", store.0);
        cleanup(&store);
    }
}

//! The recorded Telegraf conversations, replayed through the reference bot.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use stagecraft::Pipeline;
use stagecraft::clock::ManualClock;
use stagecraft::replay::{REPLAY_EPOCH_S, replay};
use stagecraft::store::MemoryStore;
use stagecraft::transport::RecordingTransport;

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

/// Transcript lines grouped by chat, in order within each chat.
fn by_chat(lines: impl IntoIterator<Item = String>) -> BTreeMap<i64, Vec<serde_json::Value>> {
    let mut map: BTreeMap<i64, Vec<serde_json::Value>> = BTreeMap::new();
    for line in lines {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line).expect("transcript line is JSON");
        let chat = v["chat_id"].as_i64().expect("chat_id");
        map.entry(chat).or_default().push(v);
    }
    map
}

async fn run_replay(input: &str) -> BTreeMap<i64, Vec<serde_json::Value>> {
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let replies = RecordingTransport::new();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store(MemoryStore::new())
            .clock(clock.clone())
            .transport(replies.clone()),
    )
    .unwrap();
    replay(&bot, &clock, input.as_bytes()).await.unwrap();
    by_chat(
        replies
            .sent()
            .iter()
            .map(stagecraft::transport::Outgoing::to_json_line),
    )
}

fn scenario_files() -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".jsonl") && !name.ends_with(".transcript.jsonl")
        })
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_recorded_scenario_gives_telegrafs_transcript() {
    let files = scenario_files();
    assert!(files.len() >= 4, "scenario files are missing: {files:?}");
    for file in files {
        let input = std::fs::read_to_string(&file).unwrap();
        let expected_file = file.with_extension("transcript.jsonl");
        let expected = by_chat(
            std::fs::read_to_string(&expected_file)
                .unwrap()
                .lines()
                .map(str::to_owned),
        );
        let got = run_replay(&input).await;
        assert_eq!(got, expected, "transcript of {}", file.display());
    }
}

/// A `parallel` batch of one chat gives the same transcript as the same updates sent one
/// after another: stagecraft's deliberate difference from Telegraf, where they interleave.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_batch_of_one_chat_equals_the_sequential_conversation() {
    let input = std::fs::read_to_string(scenarios_dir().join("01_happy_path.jsonl")).unwrap();
    let updates: Vec<&str> = input.lines().filter(|l| l.contains("update_id")).collect();
    let sequential = run_replay(&updates.join("\n")).await;
    let parallel = format!("{{\"parallel\":[{}]}}", updates.join(","));
    for _ in 0..20 {
        assert_eq!(run_replay(&parallel).await, sequential);
    }
}

/// Several chats at once in one batch: each chat's transcript is its own conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parallel_batch_of_many_chats_keeps_each_chat_in_order() {
    let files = scenario_files();
    let mut inputs = Vec::new();
    let mut expected = BTreeMap::new();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        inputs.push(
            text.lines()
                .filter(|l| l.contains("update_id"))
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        );
        expected.append(&mut by_chat(
            std::fs::read_to_string(f.with_extension("transcript.jsonl"))
                .unwrap()
                .lines()
                .map(str::to_owned),
        ));
    }
    // Interleave the conversations round-robin into one batch.
    let longest = inputs.iter().map(Vec::len).max().unwrap_or(0);
    let mut batch = Vec::new();
    for i in 0..longest {
        for conv in &inputs {
            if let Some(u) = conv.get(i) {
                batch.push(u.clone());
            }
        }
    }
    let got = run_replay(&format!("{{\"parallel\":[{}]}}", batch.join(","))).await;
    assert_eq!(got, expected);
}

#[tokio::test]
async fn the_profile_ttl_expires_silently_after_300_seconds() {
    let msg = |id: u32, text: &str| {
        format!(
            r#"{{"update_id":{id},"message":{{"message_id":{id},"date":0,"chat":{{"id":7}},"from":{{"id":7}},"text":"{text}"}}}}"#
        )
    };
    let input = [
        msg(1, "/profile"),
        r#"{"advance_clock_s":300}"#.to_owned(),
        msg(2, "still here"),
        r#"{"advance_clock_s":1}"#.to_owned(),
        msg(3, "gone"),
    ]
    .join("\n");
    let got = run_replay(&input).await;
    let texts: Vec<_> = got[&7]
        .iter()
        .map(|v| v["text"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        texts,
        [
            "Profile scene (no profile). Commands: /whoami /signup /back",
            "profile echo: still here",
            "Outside scenes (3 updates). Send /start or /profile.",
        ]
    );
}

#[tokio::test]
async fn a_malformed_replay_line_is_reported_with_its_line_number_and_skipped() {
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let bot = demo_bot::build(Pipeline::<demo_bot::Demo>::builder()).unwrap();
    for (bad, why) in [
        ("{\"comment\":\"ok\"}\nnot json", "not JSON"),
        (
            "{\"comment\":\"ok\"}\n{\"update_id\":\"x\"}",
            "not a Telegram update",
        ),
        ("\n[1,2]", "a JSON array, not an object"),
    ] {
        let summary = replay(&bot, &clock, bad.as_bytes()).await.unwrap();
        assert_eq!((summary.lines, summary.bad_lines_total), (2, 1), "{bad:?}");
        let chain = stagecraft::replay::error_chain(&summary.bad_lines[0]);
        assert!(
            chain.starts_with(&format!("line 2: {why}")),
            "{bad:?}: {chain}"
        );
    }
}

/// The README's demo command, run as a process: `demo --replay FILE` prints exactly the transcript.
#[test]
fn the_demo_binary_replays_a_file_to_stdout() {
    let demo = common::example_binary("demo");
    let file = scenarios_dir().join("02_invalid_age_reask.jsonl");
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
    let expected = std::fs::read_to_string(file.with_extension("transcript.jsonl")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
}

/// The README's main command: each line typed is a message from user 1001 in chat 1001,
/// each reply a line of output; the SQLite file keeps the conversation between runs.
#[cfg(feature = "sqlite")]
#[test]
fn the_console_demo_chats_and_remembers_across_runs() {
    use std::io::Write;
    let demo = common::example_binary("demo");
    let db = std::env::temp_dir().join(format!("console_{}.db", std::process::id()));
    let run = |input: &str| {
        let mut child = std::process::Command::new(&demo)
            .args(["--store", &format!("sqlite:{}", db.display())])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
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
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        run("/start\nAlice\n"),
        "What is your name?\nHow old are you, Alice?\n"
    );
    assert_eq!(
        run("30\nyes\n"),
        "Confirm: Alice, 30. Reply yes or no.\nSaved Alice, 30.\nLeft signup.\n"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
}

/// `--remind`: the signup wizard's durable timeout fires when `advance_clock_s` lines
/// move the clock past it, once per silence, re-armed by the user's updates and
/// cancelled by leaving; the exact lines, in order, on memory and SQLite.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signup_reminder_fires_as_the_replay_clock_passes_it() {
    let dir = scenarios_dir().join("remind");
    let input = std::fs::read_to_string(dir.join("signup_reminder.jsonl")).unwrap();
    let expected: Vec<String> =
        std::fs::read_to_string(dir.join("signup_reminder.transcript.jsonl"))
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
    let reminders = expected
        .iter()
        .filter(|l| l.contains(demo_bot::REMINDER))
        .count();
    assert_eq!(reminders, 3, "the recorded transcript has three reminders");
    let path = std::env::temp_dir().join(format!("{}.db", common::unique_name("remind")));
    let stores: Vec<(&str, std::sync::Arc<dyn stagecraft::store::SessionStore>)> = vec![
        ("memory", std::sync::Arc::new(MemoryStore::new())),
        (
            "sqlite",
            std::sync::Arc::new(stagecraft::store::SqliteStore::open(&path).await.unwrap()),
        ),
    ];
    for (name, store) in stores {
        let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
        let replies = RecordingTransport::new();
        let bot = demo_bot::build_with(
            Pipeline::<demo_bot::Demo>::builder()
                .store_arc(store)
                .clock(clock.clone())
                .transport(replies.clone()),
            demo_bot::Options { remind: true },
        )
        .unwrap();
        let summary = replay(&bot, &clock, input.as_bytes()).await.unwrap();
        assert!(summary.is_clean(), "{summary:?}");
        assert_eq!(summary.timers, 3, "{name}");
        let got: Vec<String> = replies
            .sent()
            .iter()
            .map(stagecraft::transport::Outgoing::to_json_line)
            .collect();
        assert_eq!(got, expected, "{name}");
    }
    let _ = std::fs::remove_file(&path);
}

/// Without `--remind` the same input never reminds anyone (the recorded Telegraf
/// transcripts stay exact: see the test above them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_remind_nobody_is_reminded() {
    let input =
        std::fs::read_to_string(scenarios_dir().join("remind/signup_reminder.jsonl")).unwrap();
    let got = run_replay(&input).await;
    let all: Vec<_> = got.values().flatten().collect();
    assert!(!all.is_empty());
    assert!(
        all.iter()
            .all(|l| l["text"].as_str() != Some(demo_bot::REMINDER)),
        "{all:?}"
    );
}

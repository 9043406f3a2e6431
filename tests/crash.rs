//! A bot process killed with SIGKILL in the middle of a burst loses no reply of a
//! committed step: after a restart on the same store, with the outbox on, every chat's
//! replies (both processes' together) are the transcript of the same updates handled by
//! one process that never crashed, except that the one reply in flight at the kill may
//! come twice.
//!
//! The restarted process gets every update again (as Telegram redelivers updates whose
//! offset was never confirmed, and as a webhook retries): de-duplication skips the ones
//! the first process committed; start-up delivery sends what it left pending.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const CHATS: i64 = 2_000;
const UPDATES_PER_CHAT: i64 = 3;
/// Short leases: the killed process's leases block its keys this long after the kill.
const LEASE_TTL_MS: &str = "1500";

/// The burst: every chat's updates, interleaved (update 1 of every chat, then update 2...).
fn burst() -> String {
    let mut out = String::new();
    for k in 0..UPDATES_PER_CHAT {
        for chat in 1..=CHATS {
            out.push_str(&format!("{} {chat} go\n", chat * 100 + k));
        }
    }
    out
}

fn replica(store: &str, extra: &[String]) -> Child {
    Command::new(common::example_binary("replica"))
        .args(["--store", store, "--ids", "--outbox", "--await-ms", "0"])
        .args(["--lease-ttl-ms", LEASE_TTL_MS])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Feeds `input` to a replica and collects its reply lines; with `kill_after`, kills it
/// with SIGKILL once that many replies came out. Returns the replies and stderr.
fn run(
    store: &str,
    extra: &[String],
    input: &str,
    kill_after: Option<usize>,
) -> (Vec<String>, String) {
    let mut child = replica(store, extra);
    let mut stdin = child.stdin.take().unwrap();
    let input = input.to_owned();
    let feeder = std::thread::spawn(move || {
        // A broken pipe (the process was killed) ends the feeding.
        let _ = stdin.write_all(input.as_bytes());
    });
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let mut killed = false;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(120)) {
        lines.push(line);
        if !killed && kill_after.is_some_and(|n| lines.len() >= n) {
            child.kill().unwrap(); // SIGKILL
            killed = true;
        }
    }
    reader.join().unwrap();
    feeder.join().unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if kill_after.is_none() {
        assert!(out.status.success(), "{store}: {stderr}");
    } else {
        assert!(
            killed,
            "{store}: the replica ended before the kill: {stderr}"
        );
    }
    (lines, stderr)
}

fn by_chat(lines: &[String]) -> BTreeMap<i64, Vec<String>> {
    let mut map: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        map.entry(v["chat_id"].as_i64().unwrap())
            .or_default()
            .push(v["text"].as_str().unwrap().to_owned());
    }
    map
}

/// `got` is `expected`, or `expected` with one reply repeated right after itself or
/// after the replies that followed it in flight (`got = expected[..j] + expected[i..]`,
/// `j - i == 1`).
fn same_but_one_repeat(got: &[String], expected: &[String]) -> bool {
    if got == expected {
        return true;
    }
    if got.len() != expected.len() + 1 {
        return false;
    }
    (1..=expected.len()).any(|j| got[..j] == expected[..j] && got[j..] == expected[j - 1..])
}

struct Target {
    spec: String,
    extra: Vec<String>,
    dir: Option<PathBuf>,
    ns: String,
}

fn targets() -> Vec<Target> {
    let ns = common::unique_name("crash");
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let mut v = vec![Target {
        spec: format!("sqlite:{}", dir.join("bot.db").display()),
        extra: Vec::new(),
        dir: Some(dir),
        ns: ns.clone(),
    }];
    if let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") {
        v.push(Target {
            spec: url,
            extra: vec!["--namespace".to_owned(), ns.clone()],
            dir: None,
            ns,
        });
    }
    v
}

#[test]
fn a_process_killed_during_a_burst_loses_no_committed_reply() {
    let input = burst();
    // The transcript of one process that never crashed.
    let (reference, _) = run("memory", &[], &input, None);
    let expected = by_chat(&reference);
    assert_eq!(expected.len(), CHATS as usize);
    let total = reference.len();
    for t in targets() {
        // Killed a third of the way through its replies.
        let (first, _) = run(&t.spec, &t.extra, &input, Some(total / 3));
        let (second, stderr) = run(&t.spec, &t.extra, &input, None);
        let pending = stderr
            .lines()
            .find(|l| l.starts_with("pending "))
            .unwrap_or_else(|| panic!("{}: no start-up delivery line in {stderr}", t.spec));
        let mut all = first.clone();
        all.extend(second.iter().cloned());
        let got = by_chat(&all);
        let mut repeats = 0;
        for (chat, want) in &expected {
            let have = got.get(chat).map_or(&[][..], Vec::as_slice);
            assert!(
                same_but_one_repeat(have, want),
                "{}: chat {chat}: got {have:?}, expected {want:?}",
                t.spec
            );
            repeats += have.len() - want.len();
        }
        eprintln!(
            "{}: killed after {} of {total} replies; restart: {pending}; {} replies after; {repeats} repeated",
            t.spec,
            first.len(),
            second.len()
        );
        if let Some(dir) = &t.dir {
            let _ = std::fs::remove_dir_all(dir);
        } else if let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(common::drop_namespace(&url, &t.ns));
        }
    }
}

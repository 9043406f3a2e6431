//! Several processes of the demo binary on one store, with its default settings: the
//! updates of one key, sent to all of them at once, are each counted exactly once, on
//! SQLite (one file) as on Redis, PostgreSQL, MySQL and MongoDB.
//!
//! Each test uses its own SQLite file (in a temporary folder), table, key prefix or
//! collection, and removes it at the end. A server whose URL is unset is skipped with one
//! `skipped:` line.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use stagecraft::session::inspect;
use stagecraft::store::{ListFilter, SessionStore, SqliteStore};

/// A store the processes share: the demo's `--store` and `--namespace` arguments.
struct Target {
    spec: String,
    args: Vec<String>,
    /// The SQLite file's folder, removed at the end.
    dir: Option<PathBuf>,
    ns: String,
}

/// SQLite in a fresh folder, then each server whose URL is set.
fn targets(test: &str) -> Vec<Target> {
    let ns = common::unique_name(test);
    let dir = std::env::temp_dir().join(&ns);
    std::fs::create_dir_all(&dir).unwrap();
    let mut v = vec![Target {
        spec: format!("sqlite:{}", dir.join("bot.db").display()),
        args: Vec::new(),
        dir: Some(dir),
        ns: ns.clone(),
    }];
    for var in [
        "STAGECRAFT_REDIS_URL",
        "STAGECRAFT_REDIS_CLUSTER_URL",
        "STAGECRAFT_POSTGRES_URL",
        "STAGECRAFT_MYSQL_URL",
        "STAGECRAFT_MONGODB_URL",
    ] {
        if let Some(url) = common::server_url(var) {
            v.push(Target {
                spec: url,
                args: vec!["--namespace".to_owned(), ns.clone()],
                dir: None,
                ns: ns.clone(),
            });
        }
    }
    v
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// The store of `t`, opened the way the demo opens it.
async fn open(t: &Target) -> Box<dyn SessionStore> {
    match t.spec.strip_prefix("sqlite:") {
        Some(path) => Box::new(SqliteStore::open(path).await.unwrap()),
        None => common::open_namespaced(&t.spec, &t.ns).await,
    }
}

/// The `updates` counter of the one session in the store.
fn stored_updates(t: &Target) -> u64 {
    rt().block_on(async {
        let store = open(t).await;
        let keys = store.list(&ListFilter::default()).await.unwrap();
        assert_eq!(keys.len(), 1, "{}: one session, found {keys:?}", t.spec);
        let rec = store.load(&keys[0]).await.unwrap().expect("a session");
        inspect(&rec.bytes).unwrap().data["updates"]
            .as_u64()
            .expect("an update count")
    })
}

/// Removes the SQLite folder, the table and its leases' table, the Redis keys, or the
/// collections.
fn cleanup(t: &Target) {
    if let Some(dir) = &t.dir {
        let _ = std::fs::remove_dir_all(dir);
        return;
    }
    rt().block_on(common::drop_namespace(&t.spec, &t.ns));
}

/// `n` updates of user 77 in chat 77, in the replay format, with ids from `first` (each
/// process gets updates of its own: the same update sent to several processes would be
/// handled once).
fn one_key_updates(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| {
            format!(
                r#"{{"update_id":{i},"message":{{"message_id":{i},"date":0,"chat":{{"id":77}},"from":{{"id":77}},"text":"hello"}}}}"#
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A demo process replaying `input` on `t`, with the default settings.
fn spawn(t: &Target, input: &str) -> Child {
    let mut child = Command::new(common::example_binary("demo"))
        .args(["--store", &t.spec])
        .args(&t.args)
        .args(["--replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    child
}

/// Runs `processes` demo processes at once on `t`, each replaying `per_process` updates
/// of one key, and checks that every one exited 0, that the replies announce each count
/// from 1 to the total exactly once, and that the stored session holds the total.
fn run_one_key(t: &Target, processes: usize, per_process: usize) {
    let started = Instant::now();
    let children: Vec<Child> = (0..processes)
        .map(|p| spawn(t, &one_key_updates(p * 100_000, per_process)))
        .collect();
    let mut counts = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}: process {i} failed ({}): {}",
            t.spec,
            out.status,
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
    let total = processes * per_process;
    assert_eq!(counts.len(), total, "{}: one reply per update", t.spec);
    let distinct: BTreeSet<usize> = counts.iter().copied().collect();
    assert_eq!(
        distinct,
        (1..=total).collect(),
        "{}: each count announced once",
        t.spec
    );
    assert_eq!(stored_updates(t), total as u64, "{}: updates lost", t.spec);
    eprintln!(
        "{}: {processes} processes x {per_process} updates of one key in {:?}",
        stagecraft::store::redact_url(&t.spec),
        started.elapsed()
    );
}

/// Creates the store's schema (one process, no update) before several start together.
fn prepare(t: &Target) {
    let out = spawn(t, "").wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An upper bound for the run on one store, so that a stuck hand-off fails instead of
/// hanging. (Generous: on SecantusDB, a server in Python, 8 x 250 updates of one key take
/// about a minute on an idle machine, and more while the other tests run.)
const DEADLINE: Duration = Duration::from_secs(300);

/// Runs `f` on each target of `test`, each within [`DEADLINE`].
fn on_each_target(test: &str, what: &str, f: fn(&Target)) {
    for t in targets(test) {
        let label = format!("{what} on {}", stagecraft::store::redact_url(&t.spec));
        within_deadline(&label, move || f(&t));
    }
}

fn within_deadline(what: &str, f: impl FnOnce() + Send + 'static) {
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(()) => handle.join().unwrap(),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            // The run panicked: show its message.
            if let Err(panic) = handle.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what} took longer than {DEADLINE:?}")
        }
    }
}

#[test]
fn four_processes_one_key() {
    on_each_target("mp4", "4 x 250", |t| {
        prepare(t);
        run_one_key(t, 4, 250);
        cleanup(t);
    });
}

#[test]
fn eight_processes_one_key() {
    on_each_target("mp8", "8 x 250", |t| {
        prepare(t);
        run_one_key(t, 8, 250);
        cleanup(t);
    });
}

/// Eight processes starting together on a fresh file or table: each creates the schema
/// as it starts (racing the others), and none loses an update.
#[test]
fn eight_processes_start_at_once_on_a_fresh_store() {
    on_each_target("mpfresh", "8 at once on a fresh store", |t| {
        run_one_key(t, 8, 25);
        cleanup(t);
    });
}

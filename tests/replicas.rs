//! Bot replicas as separate processes (the `replica` example) sharing Redis, PostgreSQL or
//! MySQL: leases make them take turns per key; compare-and-set stays the last guard.
//!
//! Each test uses its own table or key prefix and removes it at the end. A store whose
//! URL is unset is skipped with one `skipped:` line.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use stagecraft::session::inspect;
use stagecraft::store::SessionStore;

/// A store a test runs against: its URL and its own namespace (table or key prefix).
struct Target {
    url: String,
    ns: String,
}

fn target(var: &str, test: &str) -> Option<Target> {
    let url = common::server_url(var)?;
    Some(Target {
        url,
        ns: common::unique_name(test),
    })
}

const REDIS: &str = "STAGECRAFT_REDIS_URL";
const POSTGRES: &str = "STAGECRAFT_POSTGRES_URL";
const MYSQL: &str = "STAGECRAFT_MYSQL_URL";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn open(t: &Target) -> Box<dyn SessionStore> {
    common::open_namespaced(&t.url, &t.ns).await
}

/// The counter stored for `chat`.
fn stored_count(t: &Target, chat: i64) -> u64 {
    rt().block_on(async {
        let store = open(t).await;
        let rec = store
            .load(&format!("{chat}:{chat}"))
            .await
            .unwrap()
            .expect("a session");
        inspect(&rec.bytes).unwrap().data["count"].as_u64().unwrap()
    })
}

/// Drops the test's table (and leases' table) or deletes its Redis keys.
fn cleanup(t: &Target) {
    rt().block_on(common::drop_namespace(&t.url, &t.ns));
}

fn spawn(t: &Target, extra: &[&str]) -> Child {
    Command::new(common::example_binary("replica"))
        .args(["--store", &t.url, "--namespace", &t.ns])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Creates the schema once, before several processes start at the same time.
fn prepare(t: &Target) {
    let mut c = spawn(t, &[]);
    drop(c.stdin.take());
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What one replica said: its replies' texts and its stats line.
#[derive(Debug)]
struct Said {
    texts: Vec<String>,
    handled: u64,
    errors: u64,
    runs: u64,
    stderr: String,
}

fn said(out: Output) -> Said {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "a replica failed: {stderr}");
    let texts = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap().to_owned()
        })
        .collect();
    let stats = stderr
        .lines()
        .find_map(|l| l.strip_prefix("stats "))
        .unwrap_or_else(|| panic!("no stats line: {stderr}"));
    let field = |name: &str| -> u64 {
        stats
            .split(' ')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .unwrap()
            .parse()
            .unwrap()
    };
    Said {
        texts,
        handled: field("handled"),
        errors: field("errors"),
        runs: field("runs"),
        stderr,
    }
}

/// `procs` replicas each get `per` updates of one chat, all delivered at once; returns
/// what each said.
fn run_replicas(t: &Target, procs: usize, per: usize, extra: &[&str]) -> Vec<Said> {
    let input: String = (0..per).map(|_| "77 x\n").collect();
    let children: Vec<Child> = (0..procs)
        .map(|_| {
            let mut c = spawn(t, extra);
            let mut stdin = c.stdin.take().unwrap();
            let input = input.clone();
            // Written from a thread so that the replicas all start handling at once.
            std::thread::spawn(move || stdin.write_all(input.as_bytes()).unwrap());
            c
        })
        .collect();
    // Drained all at once: a replica blocked on a full stdout pipe would hold its lease.
    let waits: Vec<_> = children
        .into_iter()
        .map(|c| std::thread::spawn(move || c.wait_with_output().unwrap()))
        .collect();
    waits.into_iter().map(|w| said(w.join().unwrap())).collect()
}

/// The replies of all replicas: every counter value 1..=total exactly once, and the
/// wizard's steps A and B alternating, each run exactly once per update.
fn check_replies(store: &str, all: &[Said], total: usize) {
    let texts: Vec<&str> = all
        .iter()
        .flat_map(|s| s.texts.iter().map(String::as_str))
        .collect();
    assert_eq!(texts.len(), total, "[{store}] one reply per update");
    let distinct: BTreeSet<&str> = texts.iter().copied().collect();
    assert_eq!(distinct.len(), total, "[{store}] a reply was sent twice");
    let mut counts = BTreeSet::new();
    let mut steps = BTreeSet::new();
    for t in &texts {
        let (step, n) = t.split_once(" n=").unwrap_or_else(|| panic!("reply {t}"));
        let n: usize = n.parse().unwrap();
        counts.insert(n);
        steps.insert(step.to_owned());
        // Step A runs on odd counts, B on even: the wizard saw every update once, in order.
        let expected = if n % 2 == 1 {
            format!("A{}", n.div_ceil(2))
        } else {
            format!("B{}", n / 2)
        };
        assert_eq!(step, expected, "[{store}] update #{n} ran the wrong step");
    }
    assert_eq!(counts, (1..=total).collect(), "[{store}] counter values");
    assert_eq!(steps.len(), total, "[{store}] wizard steps");
}

/// Telegraf's rule 5 (no stale write after an await) with 2 and then 4 processes: each
/// update reads the counter, awaits 1 ms, writes what it read + 1.
fn stale_write_after_await(var: &str) {
    const PER: usize = 100;
    for procs in [2, 4] {
        let Some(t) = target(var, "stale") else {
            return;
        };
        prepare(&t);
        let all = run_replicas(&t, procs, PER, &["--await-ms", "1"]);
        check_replies(&t.url, &all, procs * PER);
        assert_eq!(stored_count(&t, 77), (procs * PER) as u64);
        // With leases, replicas took turns: no update had to run twice.
        for s in &all {
            assert_eq!(s.errors, 0, "{}", s.stderr);
            assert_eq!(s.runs, s.handled, "reruns with leases: {}", s.stderr);
        }
        cleanup(&t);
    }
}

#[test]
fn stale_write_after_await_2_and_4_processes_redis() {
    stale_write_after_await(REDIS);
}

#[test]
fn stale_write_after_await_2_and_4_processes_postgres() {
    stale_write_after_await(POSTGRES);
}

/// Load (correctness, not speed): 4 processes × 2,500 updates of one key, delivered
/// concurrently. The counter ends at exactly 10,000, each wizard step ran once per update,
/// no reply was sent twice.
fn load_one_key(var: &str) {
    const PROCS: usize = 4;
    const PER: usize = 2500;
    let Some(t) = target(var, "load") else { return };
    prepare(&t);
    let started = Instant::now();
    let all = run_replicas(
        &t,
        PROCS,
        PER,
        &["--await-ms", "0", "--lease-wait-ms", "120000"],
    );
    println!("{var}: {} updates in {:?}", PROCS * PER, started.elapsed());
    check_replies(&t.url, &all, PROCS * PER);
    assert_eq!(stored_count(&t, 77), (PROCS * PER) as u64);
    for s in &all {
        assert_eq!(s.errors, 0, "{}", s.stderr);
        assert_eq!(s.handled, PER as u64);
    }
    cleanup(&t);
}

#[test]
fn load_4_processes_x_2500_updates_one_key_redis() {
    load_one_key(REDIS);
}

#[test]
fn load_4_processes_x_2500_updates_one_key_postgres() {
    load_one_key(POSTGRES);
}

#[test]
fn load_4_processes_x_2500_updates_one_key_mysql() {
    load_one_key(MYSQL);
}

/// Reads lines from a child's pipe on a thread, so that waits can be bounded.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("waiting for {what}: {e}"))
}

/// A replica is SIGKILLed while it holds a key's lease (inside a handler, with a reply
/// held back). Another replica waiting for the key continues once the lease expired:
/// nothing committed is lost, the killed update's change and reply never appear.
fn sigkill_while_holding_a_lease(var: &str) {
    let Some(t) = target(var, "killed") else {
        return;
    };
    prepare(&t);
    let lease = ["--lease-ttl-ms", "1500"];
    let mut a = spawn(&t, &lease);
    let mut a_in = a.stdin.take().unwrap();
    let a_out = lines(a.stdout.take().unwrap());
    let a_err = lines(a.stderr.take().unwrap());
    for _ in 0..3 {
        writeln!(a_in, "77 x").unwrap();
    }
    a_in.flush().unwrap();
    let mut seen: Vec<String> = (0..3).map(|_| next_line(&a_out, "a reply of A")).collect();
    writeln!(a_in, "77 hang").unwrap();
    a_in.flush().unwrap();
    loop {
        if next_line(&a_err, "A holding the lease") == "holding the lease" {
            break;
        }
    }
    // B's updates arrive while A holds the lease; then A dies without a word.
    let mut b = spawn(&t, &lease);
    let mut b_in = b.stdin.take().unwrap();
    for _ in 0..2 {
        writeln!(b_in, "77 x").unwrap();
    }
    b_in.flush().unwrap();
    a.kill().unwrap();
    a.wait().unwrap();
    drop(b_in);
    let b = said(b.wait_with_output().unwrap());
    assert_eq!(b.errors, 0, "{}", b.stderr);
    // A's replies that were sent before the kill, and nothing else of A.
    while let Ok(line) = a_out.try_recv() {
        seen.push(line);
    }
    let seen: Vec<String> = seen
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(seen, ["A1 n=1", "B1 n=2", "A2 n=3"], "[{var}] A's replies");
    assert_eq!(
        b.texts,
        ["B2 n=4", "A3 n=5"],
        "[{var}] B continued where A's commits ended"
    );
    assert_eq!(stored_count(&t, 77), 5);
    cleanup(&t);
}

#[test]
fn sigkill_while_holding_a_lease_redis() {
    sigkill_while_holding_a_lease(REDIS);
}

#[test]
fn sigkill_while_holding_a_lease_postgres() {
    sigkill_while_holding_a_lease(POSTGRES);
}

#[test]
fn sigkill_while_holding_a_lease_mysql() {
    sigkill_while_holding_a_lease(MYSQL);
}

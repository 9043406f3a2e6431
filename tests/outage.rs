//! Server outages under load, on servers the tests start themselves (each on a free port
//! and a data folder of its own, never the shared ones): a stream of updates over many
//! keys runs while the server is killed (SIGKILL of the pid the test started), stays
//! down for a while, and is started again on the same port and data folder.
//!
//! What each test shows: updates fail while the server is down, nothing panics; no key
//! stays stuck (none in flight once the stream ends, and every key's next update runs);
//! service comes back by itself, the first update succeeding within 2 s of the server
//! answering again. Every server is stopped by its pid when the test ends, also when it
//! fails (`Server`'s `Drop`).

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use stagecraft::prelude::*;
use stagecraft::store::SessionStore;

/// Keys in the stream, each updated in a loop of its own.
const KEYS: i64 = 12;
/// How long a lease lives: one left behind by the crash blocks its key at most this long.
const LEASE_TTL: Duration = Duration::from_secs(2);
/// How long the server stays down.
const DOWN: Duration = Duration::from_secs(2);
/// The bound on the return of service after the server answers again.
const BACK_WITHIN: Duration = Duration::from_secs(2);

/// A server process the test started, stopped by its pid on drop.
struct Server {
    name: &'static str,
    /// The command line that starts it (again).
    command: Vec<String>,
    child: Option<Child>,
    port: u16,
    /// Removed on drop.
    dir: PathBuf,
    /// Signal that stops it for good at the end.
    stop_signal: &'static str,
}

impl Server {
    fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        let child = Command::new(&self.command[0])
            .args(&self.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("server.log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL to the pid started, and its exit collected.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log so far (for failure messages).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // A clean stop first (PostgreSQL's immediate shutdown also ends its
            // backends), then SIGKILL if it does not go within 5 s.
            let pid = child.id().to_string();
            let _ = Command::new("kill").args([self.stop_signal, &pid]).status();
            let until = Instant::now() + Duration::from_secs(5);
            while Instant::now() < until {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(common::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Waits until `answers` (polled every 20 ms) says yes; the instant it did. A server
/// that exited while starting (PostgreSQL refuses to start while the backends of the
/// killed one still hold its shared memory) is started again.
async fn wait_until_answering(
    server: &mut Server,
    answers: impl AsyncFn() -> bool,
    within: Duration,
) -> Instant {
    let until = Instant::now() + within;
    loop {
        if server
            .child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
        {
            server.child = None;
            server.start();
        }
        if answers().await {
            return Instant::now();
        }
        assert!(
            Instant::now() < until,
            "{} did not answer within {within:?}: {}",
            server.name,
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Redis on a free port, with its data folder (append-only file, fsync on every
/// write), started.
fn redis_server() -> Server {
    let port = free_port();
    let dir = temp_dir("outage_redis");
    let command = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--dir",
        dir.to_str().unwrap(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--save",
        "",
        "--daemonize",
        "no",
    ]
    .map(str::to_owned)
    .to_vec();
    let mut server = Server {
        name: "redis-server",
        command,
        child: None,
        port,
        dir,
        stop_signal: "-TERM",
    };
    server.start();
    server
}

/// Whether a Redis on `port` answers `PING`.
fn redis_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").is_ok()
        && s.read(&mut buf)
            .is_ok_and(|n| buf[..n].starts_with(b"+PONG"))
}

/// The newest PostgreSQL server binaries installed, if any.
fn postgres_bin() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, bin)| bin)
}

/// `program args...`, run as the `postgres` OS user when the test runs as root
/// (PostgreSQL refuses to run as root). `setpriv` executes the program in its own
/// process, so the pid started is the server's.
fn as_postgres(program: &Path, args: &[&str]) -> Vec<String> {
    let mut v = Vec::new();
    if is_root() {
        v.extend(
            [
                "setpriv",
                "--reuid=postgres",
                "--regid=postgres",
                "--clear-groups",
                "--",
            ]
            .map(str::to_owned),
        );
    }
    v.push(program.display().to_string());
    v.extend(args.iter().map(|a| (*a).to_owned()));
    v
}

/// A PostgreSQL cluster made by `initdb` in a folder of its own, its server on a free
/// port, started; `None` (after a `skipped:` line) when no server binaries are installed.
fn postgres_server() -> Option<Server> {
    let Some(bin) = postgres_bin() else {
        eprintln!("skipped: no PostgreSQL server binaries under /usr/lib/postgresql");
        return None;
    };
    let port = free_port();
    let dir = temp_dir("outage_pg");
    let data = dir.join("data");
    let sockets = dir.join("sockets");
    std::fs::create_dir_all(&sockets).unwrap();
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres", dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success(), "chown of the data folder failed");
    }
    let initdb = as_postgres(
        &bin.join("initdb"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
    );
    let out = Command::new(&initdb[0])
        .args(&initdb[1..])
        .output()
        .expect("initdb runs");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let port_text = port.to_string();
    let command = as_postgres(
        &bin.join("postgres"),
        &[
            "-D",
            data.to_str().unwrap(),
            "-p",
            &port_text,
            "-k",
            sockets.to_str().unwrap(),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
        ],
    );
    let mut server = Server {
        name: "postgres",
        command,
        child: None,
        port,
        dir,
        stop_signal: "-QUIT",
    };
    server.start();
    Some(server)
}

/// Whether a PostgreSQL at `url` accepts a connection.
async fn postgres_answers(url: &str) -> bool {
    use stagecraft::store::sqlx::Connection as _;
    match tokio::time::timeout(
        Duration::from_secs(1),
        stagecraft::store::sqlx::postgres::PgConnection::connect(url),
    )
    .await
    {
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            true
        }
        _ => false,
    }
}

/// One result of the stream: when the update ended, and whether it succeeded.
type Outcomes = Arc<std::sync::Mutex<Vec<(Instant, std::result::Result<(), String>)>>>;

/// Updates every key in a loop of its own until `stop`.
fn stream(
    pipeline: &Arc<Pipeline<u64>>,
    stop: &Arc<AtomicBool>,
    outcomes: &Outcomes,
) -> Vec<tokio::task::JoinHandle<()>> {
    (1..=KEYS)
        .map(|user| {
            let (pipeline, stop, outcomes) =
                (Arc::clone(pipeline), Arc::clone(stop), Arc::clone(outcomes));
            tokio::spawn(async move {
                let mut id = user * 1_000_000;
                while !stop.load(Ordering::Relaxed) {
                    id += 1;
                    let result = pipeline.handle(common::counting_message(user, id)).await;
                    let result = result
                        .map(|_| ())
                        .map_err(|e| stagecraft::error::error_chain(&e));
                    outcomes.lock().unwrap().push((Instant::now(), result));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            })
        })
        .collect()
}

/// The outage itself, against `server` whose store is `store`: load, kill, down for
/// [`DOWN`], start again, check the return of service and that no key is stuck.
async fn outage<F>(mut server: Server, store: Arc<dyn SessionStore>, answers: F)
where
    F: AsyncFn() -> bool,
{
    let name = server.name;
    let pipeline = Arc::new(common::counting_bot(
        store,
        LEASE_TTL,
        Duration::from_secs(20),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes: Outcomes = Arc::default();
    let workers = stream(&pipeline, &stop, &outcomes);

    tokio::time::sleep(Duration::from_secs(1)).await;
    let ok_before = outcomes
        .lock()
        .unwrap()
        .iter()
        .filter(|o| o.1.is_ok())
        .count();
    assert!(ok_before > 0, "{name}: updates succeed before the outage");

    let killed_at = Instant::now();
    server.kill();
    tokio::time::sleep(DOWN).await;
    server.start();
    let answering = wait_until_answering(&mut server, &answers, Duration::from_secs(30)).await;
    // Keep the stream going for a while after the server is back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .unwrap_or_else(|_| panic!("{name}: a stream worker is stuck"))
            .unwrap_or_else(|e| panic!("{name}: a stream worker panicked: {e}"));
    }
    assert_eq!(pipeline.keys_in_flight(), 0, "{name}: no key in flight");

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let down: Vec<&String> = outcomes
        .iter()
        .filter(|(at, _)| *at > killed_at && *at < answering)
        .filter_map(|(_, r)| r.as_ref().err())
        .collect();
    assert!(!down.is_empty(), "{name}: updates failed while it was down");
    eprintln!(
        "{name}: {} updates, {} failed while down, e.g. {}",
        outcomes.len(),
        down.len(),
        down[0]
    );
    let first_ok = outcomes
        .iter()
        .filter(|(at, r)| *at > killed_at && r.is_ok())
        .map(|(at, _)| *at)
        .min()
        .unwrap_or_else(|| panic!("{name}: no update succeeded after the restart"));
    let back_after = first_ok.saturating_duration_since(answering);
    eprintln!(
        "{name}: killed, answering again {:?} later; the first update succeeded {:?} after the kill",
        answering - killed_at,
        first_ok - killed_at
    );
    assert!(
        back_after <= BACK_WITHIN,
        "{name}: service came back {back_after:?} after the server answered"
    );
    // No key is stuck: each one's next update runs.
    common::each_key_served(
        &pipeline,
        1..=KEYS,
        LEASE_TTL + Duration::from_secs(5),
        &format!("{name}: after the restart, key"),
    )
    .await;
    assert_eq!(pipeline.keys_in_flight(), 0, "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_under_load_comes_back() {
    let mut server = redis_server();
    let port = server.port;
    wait_until_answering(
        &mut server,
        async || redis_answers(port),
        Duration::from_secs(15),
    )
    .await;
    let url = format!("redis://127.0.0.1:{port}");
    let store = stagecraft::store::RedisStore::connect(&url).await.unwrap();
    stagecraft::store::check(&store).await.unwrap();
    outage(server, Arc::new(store), async || redis_answers(port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_killed_under_load_comes_back() {
    let Some(mut server) = postgres_server() else {
        return;
    };
    let url = format!("postgres://postgres@127.0.0.1:{}/postgres", server.port);
    wait_until_answering(
        &mut server,
        async || postgres_answers(&url).await,
        Duration::from_secs(30),
    )
    .await;
    let store = stagecraft::store::PostgresStore::connect(&url)
        .await
        .unwrap();
    stagecraft::store::check(&store).await.unwrap();
    outage(server, Arc::new(store), async || {
        postgres_answers(&url).await
    })
    .await;
}

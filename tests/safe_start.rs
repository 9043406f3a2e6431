//! The demo refuses to start on a store it cannot use: it checks the store at start
//! (`stagecraft::store::check`) and exits non-zero within seconds with a message naming
//! the cause, instead of starting and then failing every update. Each case runs the demo
//! binary in replay mode with one update on stdin.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const LINE: &str = r#"{"update_id":1,"message":{"message_id":1,"date":1700000000,"chat":{"id":1001,"type":"private"},"from":{"id":1001,"is_bot":false,"first_name":"U"},"text":"/start"}}"#;

/// Runs the demo on `store` (as the user and group of id `user` when given) with one update on stdin; fails the
/// test if it takes 15 s or more.
fn demo(store: &str, user: Option<&str>) -> Output {
    let binary = common::example_binary("demo");
    let mut command = match user {
        Some(user) => {
            let mut c = Command::new("setpriv");
            c.args([
                &format!("--reuid={user}"),
                &format!("--regid={user}"),
                "--clear-groups",
                "--",
            ])
            .arg(&binary);
            c
        }
        None => Command::new(&binary),
    };
    let started = Instant::now();
    let mut child = command
        .args(["--store", store, "--replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The demo may exit before it reads its input: a closed pipe is fine.
    let _ = child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{LINE}\n").as_bytes());
    let out = wait_at_most(child, Duration::from_secs(15));
    assert!(started.elapsed() < Duration::from_secs(15));
    out
}

/// The child's output, or a failed test (the child killed) after `limit`.
fn wait_at_most(mut child: Child, limit: Duration) -> Output {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    panic!(
        "the demo did not exit within {limit:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The demo failed at start, before handling anything, saying one of `causes`.
fn assert_refused_to_start(out: &Output, case: &str, causes: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{case}: the demo started: {stderr}");
    assert!(
        out.stdout.is_empty(),
        "{case}: it handled the update: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lower = stderr.to_lowercase();
    assert!(
        causes.iter().any(|c| lower.contains(c)),
        "{case}: the message names none of {causes:?}: {stderr}"
    );
    eprintln!("{case}: {}", stderr.trim());
}

/// The demo handled the update and printed its reply.
fn assert_started(out: &Output, case: &str) {
    assert!(
        out.status.success(),
        "{case}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.stdout.is_empty(), "{case}: no reply");
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(common::unique_name(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Removes the folder on drop.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A SQLite file the demo wrote a session into.
#[cfg(feature = "sqlite")]
fn sqlite_file(dir: &Path) -> PathBuf {
    let path = dir.join("demo.db");
    assert_started(
        &demo(&format!("sqlite:{}", path.display()), None),
        "a fresh file",
    );
    path
}

/// Moves what the write-ahead log holds into the file itself, and empties the log.
#[cfg(feature = "sqlite")]
fn checkpoint(path: &Path) {
    use stagecraft::store::sqlx::{self, Connection as _};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}", path.display());
        let mut conn = sqlx::sqlite::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
    });
}

#[cfg(feature = "sqlite")]
#[test]
fn a_corrupt_sqlite_file_stops_the_demo() {
    use std::io::{Seek, SeekFrom};
    let dir = TempDir(temp_dir("safe_start_corrupt"));
    // Every page after the header page overwritten with garbage (the pages of the
    // sessions table and its index among them).
    let path = sqlite_file(&dir.0);
    checkpoint(&path);
    let len = std::fs::metadata(&path).unwrap().len();
    assert!(len >= 8192, "the file has pages past the first: {len}");
    let mut file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.seek(SeekFrom::Start(4096)).unwrap();
    let garbage: Vec<u8> = (0..len - 4096).map(|i| (i * 7 + 13) as u8).collect();
    file.write_all(&garbage).unwrap();
    drop(file);
    let out = demo(&format!("sqlite:{}", path.display()), None);
    assert_refused_to_start(
        &out,
        "garbage pages",
        &["malformed", "corrupt", "not a database"],
    );

    // A file that is garbage from its first byte.
    let path = dir.0.join("garbage.db");
    std::fs::write(&path, vec![0x5a_u8; 16384]).unwrap();
    let out = demo(&format!("sqlite:{}", path.display()), None);
    assert_refused_to_start(
        &out,
        "a garbage file",
        &["malformed", "corrupt", "not a database"],
    );
}

#[cfg(feature = "sqlite")]
#[test]
fn a_read_only_sqlite_file_stops_the_demo() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir(temp_dir("safe_start_readonly"));
    let path = sqlite_file(&dir.0);
    // Readable by all, writable by none; root ignores modes, so the demo runs as
    // `nobody` then (the folder stays the owner's: no journal can be made beside it).
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(&dir.0).unwrap() {
        let p = entry.unwrap().path();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
    }
    let user = is_root().then_some("65534"); // nobody
    let out = demo(&format!("sqlite:{}", path.display()), user);
    assert_refused_to_start(
        &out,
        "a read-only file",
        &["readonly", "read-only", "unable to open"],
    );

    // Opened read-only by its URL: the same refusal.
    let url = format!("sqlite:sqlite://{}?mode=ro", path.display());
    let out = demo(&url, None);
    assert_refused_to_start(&out, "a read-only connection", &["readonly", "read-only"]);
}

#[cfg(feature = "redis")]
#[test]
fn a_redis_that_needs_a_password_stops_the_demo() {
    let dir = TempDir(temp_dir("safe_start_auth"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = Command::new("redis-server")
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--dir",
            dir.0.to_str().unwrap(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--requirepass", "s3cret"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server is on PATH");
    let server = Killed(server);
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = demo(&format!("redis://127.0.0.1:{port}"), None);
    assert_refused_to_start(&out, "no password", &["auth"]);
    let out = demo(&format!("redis://:wrong@127.0.0.1:{port}"), None);
    assert_refused_to_start(&out, "a wrong password", &["auth", "password"]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("wrong"),
        "the password is not shown"
    );
    // With the password, the same server is fine.
    let out = demo(&format!("redis://:s3cret@127.0.0.1:{port}"), None);
    assert_started(&out, "the right password");
    drop(server);
}

/// A child process killed by its pid on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_refused_connection_stops_the_demo() {
    // Nothing listens on port 1.
    let mut urls: Vec<&str> = Vec::new();
    if cfg!(feature = "redis") {
        urls.push("redis://127.0.0.1:1");
    }
    if cfg!(feature = "postgres") {
        urls.push("postgres://postgres@127.0.0.1:1/test");
    }
    if cfg!(feature = "mysql") {
        urls.push("mysql://root@127.0.0.1:1/test");
    }
    if cfg!(feature = "mongodb") {
        urls.push("mongodb://127.0.0.1:1/test");
    }
    for url in urls {
        let out = demo(url, None);
        assert_refused_to_start(&out, url, &["refused"]);
    }
}

//! The `stagecraft` command-line tool on records written by the demo binary, on SQLite
//! and on each server whose URL is set (Redis, PostgreSQL, MySQL): `list`, `stats`,
//! `show`, `reset` and `delete`, a key whose lease is held, and the errors of a store
//! that cannot be opened.
//!
//! Each test uses its own SQLite file (in a temporary folder), table or key prefix, and
//! removes it at the end. A server whose URL is unset is skipped with one `skipped:`
//! line; a server whose URL is set and that does not answer fails the test.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use stagecraft::store::{LeaseAttempt, OpenOptions, SessionStore};

/// A store the demo writes and the tool reads: its URL, namespace and SQLite folder.
struct Target {
    url: String,
    ns: String,
    dir: Option<PathBuf>,
}

impl Target {
    fn sqlite(test: &str) -> Self {
        let ns = common::unique_name(test);
        let dir = std::env::temp_dir().join(&ns);
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            url: format!("sqlite:{}", dir.join("bot.db").display()),
            ns,
            dir: Some(dir),
        }
    }

    fn server(var: &str, test: &str) -> Option<Self> {
        Some(Self {
            url: common::server_url(var)?,
            ns: common::unique_name(test),
            dir: None,
        })
    }

    fn store_args(&self) -> [&str; 4] {
        ["--store", &self.url, "--namespace", &self.ns]
    }

    async fn open(&self) -> std::sync::Arc<dyn SessionStore> {
        stagecraft::store::open_with(&self.url, &OpenOptions::new().namespace(&self.ns))
            .await
            .unwrap()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        } else if !std::thread::panicking() {
            rt().block_on(common::drop_namespace(&self.url, &self.ns));
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One update of user (and chat) `user` saying `text`.
fn update(id: i64, user: i64, text: &str) -> String {
    serde_json::json!({
        "update_id": id,
        "message": {"message_id": id, "date": 0, "chat": {"id": user, "type": "private"},
            "from": {"id": user, "is_bot": false, "first_name": "U"}, "text": text}
    })
    .to_string()
}

/// The demo replaying `lines` on `t`; its transcript's reply texts.
fn demo(t: &Target, lines: &[String]) -> Vec<String> {
    let mut child = Command::new(common::example_binary("demo"))
        .args(t.store_args())
        .args(["--replay", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = lines.join("\n");
    input.push('\n');
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the demo failed on {}: {}",
        stagecraft::store::redact_url(&t.url),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            v["text"].as_str().unwrap_or_default().to_owned()
        })
        .collect()
}

/// The tool with `args`.
fn tool(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stagecraft"))
        .args(args)
        .env_remove("STAGECRAFT_STORE")
        .output()
        .unwrap()
}

/// The tool with `args` on `t`, which must succeed; its stdout.
fn ok(t: &Target, args: &[&str]) -> String {
    let out = tool(&[args, &t.store_args()[..]].concat());
    assert!(
        out.status.success(),
        "stagecraft {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The tool with `args` on `t`, which must fail with status 1; its stderr.
fn fails(t: &Target, args: &[&str]) -> String {
    let out = tool(&[args, &t.store_args()[..]].concat());
    assert_eq!(
        out.status.code(),
        Some(1),
        "stagecraft {args:?}: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).unwrap()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `(key, scene, step, depth)` of each object of a `list --json` array.
fn rows(list: &Value) -> Vec<(String, Option<String>, Option<i64>, u64)> {
    list.as_array()
        .expect("one JSON array")
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().to_owned(),
                c["scene"].as_str().map(str::to_owned),
                c["step"].as_i64(),
                c["depth"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(key: &str, scene: &str, step: Option<i64>) -> (String, Option<String>, Option<i64>, u64) {
    (key.to_owned(), Some(scene.to_owned()), step, 1)
}

/// The whole tour on `t`.
fn exercise(t: &Target) {
    // Five users: two in the signup wizard (steps 2 and 1), one in the poll, one in the
    // profile scene (whose 300 s TTL has run out by the system clock: the replay's clock
    // starts in 2023), one outside any scene.
    let mut id = 0;
    let mut say = |user: i64, text: &str| {
        id += 1;
        update(id, user, text)
    };
    let lines = vec![
        say(1, "/start"),
        say(1, "Ann"),
        say(2, "/start"),
        say(3, "/poll"),
        say(4, "/profile"),
        say(5, "hello"),
    ];
    let replies = demo(t, &lines);
    assert!(
        replies.contains(&"How old are you, Ann?".to_owned()),
        "{replies:?}"
    );

    let list = json(&ok(t, &["list", "--json"]));
    let got = rows(&list);
    assert_eq!(
        got,
        [
            row("1:1", "signup", Some(2)),
            row("2:2", "signup", Some(1)),
            row("3:3", "poll", Some(1)),
        ],
        "{list}"
    );
    let first = &list[0];
    assert_eq!(first["entered_at"], stagecraft::replay::REPLAY_EPOCH_S);
    assert!(first["expires"].is_null(), "{first}");

    let all = rows(&json(&ok(t, &["list", "--all", "--json"])));
    assert!(all.contains(&row("4:4", "profile", None)), "{all:?}");
    assert!(all.contains(&("5:5".to_owned(), None, None, 0)), "{all:?}");

    let filtered = rows(&json(&ok(
        t,
        &["list", "--scene", "signup", "--step", "1", "--json"],
    )));
    assert_eq!(filtered, [row("2:2", "signup", Some(1))]);
    let table = ok(t, &["list", "--scene", "signup"]);
    assert!(table.starts_with("KEY"), "{table}");
    assert!(table.contains("1:1") && !table.contains("3:3"), "{table}");
    assert!(table.contains("2023-11-14T22:13:20Z"), "{table}");

    let stats = json(&ok(t, &["stats", "--json"]));
    let counts: Vec<(String, Option<i64>, u64)> = stats
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["scene"].as_str().unwrap().to_owned(),
                c["step"].as_i64(),
                c["users"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(counts.len(), 3, "{stats}");
    for want in [
        ("signup".to_owned(), Some(2), 1),
        ("signup".to_owned(), Some(1), 1),
        ("poll".to_owned(), Some(1), 1),
    ] {
        assert!(counts.contains(&want), "{stats}");
    }
    assert!(ok(t, &["stats"]).contains("3 user(s) in a scene"));

    // `show`: the whole record, pretty.
    let shown = ok(t, &["show", "1:1"]);
    assert!(shown.contains("\n  \"data\""), "pretty: {shown}");
    let record = json(&shown);
    assert_eq!(record["data"]["updates"], 2);
    assert_eq!(
        record["scenes"][0]["state"]["demo.signup.v1"]["name"],
        "Ann"
    );

    // `reset`: out of the wizard, data kept; the bot carries on from there.
    assert!(ok(t, &["reset", "1:1"]).contains("reset `1:1`"));
    let record = json(&ok(t, &["show", "1:1"]));
    assert!(record.get("scenes").is_none(), "{record}");
    assert_eq!(record["data"]["updates"], 2);
    let replies = demo(t, &[update(100, 1, "/where")]);
    assert_eq!(replies, ["scene=none cursor=-"]);
    assert_eq!(json(&ok(t, &["show", "1:1"]))["data"]["updates"], 3);

    // `delete`: gone; the user starts afresh.
    assert!(ok(t, &["delete", "2:2"]).contains("deleted `2:2`"));
    assert!(fails(t, &["show", "2:2"]).contains("no session `2:2`"));
    assert!(fails(t, &["reset", "2:2"]).contains("no session"));
    assert!(fails(t, &["delete", "2:2"]).contains("no session"));
    let keys: Vec<String> = rows(&json(&ok(t, &["list", "--json"])))
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(keys, ["3:3"]);

    // A key whose lease a running update holds is left alone.
    rt().block_on(async {
        let store = t.open().await;
        let leases = store.leases().expect("this store has leases");
        let LeaseAttempt::Acquired(lease) = leases
            .acquire_lease("3:3", Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!("the lease of 3:3 is free");
        };
        let before = store.load("3:3").await.unwrap().unwrap();
        for command in ["reset", "delete"] {
            let err = fails(t, &[command, "3:3", "--wait", "0"]);
            assert!(err.contains("leased by a running update"), "{err}");
        }
        assert_eq!(store.load("3:3").await.unwrap(), Some(before));
        assert!(leases.release_lease(&lease).await.unwrap());
    });
    assert!(ok(t, &["reset", "3:3", "--wait", "0"]).contains("reset"));

    // A mistyped namespace of an SQL store is an error, and creates nothing (the
    // second try fails the same way).
    if !t.url.starts_with("redis") {
        let typo = format!("{}_typo", t.ns);
        for _ in 0..2 {
            let out = tool(&["list", "--store", &t.url, "--namespace", &typo]);
            let err = String::from_utf8(out.stderr).unwrap();
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(
                err.contains(&format!("no sessions table `{typo}`")),
                "{err}"
            );
        }
    }
}

#[test]
fn on_sqlite() {
    let t = Target::sqlite("cli_sqlite");
    exercise(&t);
}

#[test]
fn on_redis() {
    if let Some(t) = Target::server("STAGECRAFT_REDIS_URL", "cli_redis") {
        exercise(&t);
    }
}

#[test]
fn on_redis_cluster() {
    if let Some(t) = Target::server("STAGECRAFT_REDIS_CLUSTER_URL", "cli_redis_cluster") {
        exercise(&t);
    }
}

#[test]
fn on_postgres() {
    if let Some(t) = Target::server("STAGECRAFT_POSTGRES_URL", "cli_pg") {
        exercise(&t);
    }
}

#[test]
fn on_mysql() {
    if let Some(t) = Target::server("STAGECRAFT_MYSQL_URL", "cli_mysql") {
        exercise(&t);
    }
}

/// A store that cannot be opened: a clear message on stderr, status 1, no password.
#[test]
fn stores_that_cannot_be_opened() {
    let dir = std::env::temp_dir().join(common::unique_name("cli_missing"));
    let missing = format!("sqlite:{}", dir.join("typo.db").display());
    let cases = [
        ("ftp://bot:hunter2@example.org/x", "unsupported store"),
        ("postgres://bot:hunter2@127.0.0.1:1/x", "refused"),
        ("mysql://bot:hunter2@127.0.0.1:1/x", "refused"),
        ("redis://:hunter2@127.0.0.1:1", "refused"),
        (
            "redis-cluster://:hunter2@127.0.0.1:1,127.0.0.1:2",
            "refused",
        ),
        (
            "redis-cluster://:hunter2@127.0.0.1:1/0",
            "invalid redis cluster url",
        ),
        (missing.as_str(), "no database file"),
    ];
    for (url, why) in cases {
        let out = tool(&["list", "--store", url]);
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{url}: {err}");
        assert!(err.contains("cannot open the store"), "{url}: {err}");
        assert!(err.to_lowercase().contains(why), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
    assert!(!dir.exists(), "a missing SQLite file is not created");
}

/// Bad arguments: status 2 and a pointer to `--help`; `--help` itself: status 0.
#[test]
fn arguments_and_help() {
    let help = tool(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8(help.stdout).unwrap();
    for word in [
        "list",
        "stats",
        "show KEY",
        "reset KEY",
        "delete KEY",
        "--store",
        "--json",
    ] {
        assert!(text.contains(word), "{word}: {text}");
    }
    for args in [
        &["list"][..],
        &["nope", "--store", "memory"],
        &["show", "--store", "memory"],
    ] {
        let out = tool(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("stagecraft:"));
    }
    // The memory store opens (empty: a new process has its own).
    let out = tool(&["list", "--json", "--store", "memory"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), "[]");
}

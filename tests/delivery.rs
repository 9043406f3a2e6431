//! Delivery guarantees of the session cycle: updates delivered twice are handled once
//! (de-duplication), committed replies survive a failed delivery (the outbox), a
//! handler that never returns is stopped at the update's deadline, and an update whose
//! writes keep conflicting is handed back, not dropped.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use stagecraft::clock::ManualClock;
use stagecraft::error::BoxError;
use stagecraft::pipeline::Dispatch;
use stagecraft::prelude::*;
use stagecraft::replay::{REPLAY_EPOCH_S, replay};
use stagecraft::session::ErrorPolicy;
use stagecraft::store::{MemoryStore, RedisStore, SessionStore, SqliteStore};
use stagecraft::transport::{Outgoing, Transport};

fn scenarios() -> Vec<(String, String)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.to_string_lossy();
            n.ends_with(".jsonl") && !n.ends_with(".transcript.jsonl")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "scenarios missing in {}", dir.display());
    files
        .into_iter()
        .map(|f| {
            let input = std::fs::read_to_string(&f).unwrap();
            let transcript = std::fs::read_to_string(f.with_extension("transcript.jsonl")).unwrap();
            (input, transcript)
        })
        .collect()
}

fn by_chat(lines: impl IntoIterator<Item = String>) -> BTreeMap<i64, Vec<serde_json::Value>> {
    let mut map: BTreeMap<i64, Vec<serde_json::Value>> = BTreeMap::new();
    for line in lines.into_iter().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        map.entry(v["chat_id"].as_i64().unwrap())
            .or_default()
            .push(v);
    }
    map
}

/// Every update line twice: at once, and again after the next update (a webhook retry,
/// and a redelivery after a crash before the offset was confirmed).
fn delivered_twice(input: &str) -> String {
    let lines: Vec<&str> = input.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        out.push(*line);
        if line.contains("update_id") {
            out.push(*line);
        }
        if i > 0 && lines[i - 1].contains("update_id") {
            out.push(lines[i - 1]);
        }
    }
    out.join("\n")
}

async fn transcript_on(
    store: Arc<dyn SessionStore>,
    input: &str,
) -> BTreeMap<i64, Vec<serde_json::Value>> {
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let replies = RecordingTransport::new();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store_arc(store)
            .clock(clock.clone())
            .transport(replies.clone()),
    )
    .unwrap();
    let summary = replay(&bot, &clock, input.as_bytes()).await.unwrap();
    assert!(summary.is_clean(), "{summary:?}");
    by_chat(replies.sent().iter().map(Outgoing::to_json_line))
}

async fn stores(test: &str) -> Vec<(String, Arc<dyn SessionStore>)> {
    let mut out: Vec<(String, Arc<dyn SessionStore>)> =
        vec![("memory".into(), Arc::new(MemoryStore::new()))];
    let path = std::env::temp_dir().join(format!("{}.db", common::unique_name(test)));
    out.push((
        format!("sqlite {}", path.display()),
        Arc::new(SqliteStore::open(&path).await.unwrap()),
    ));
    if let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") {
        let prefix = format!("{}:", common::unique_name(test));
        out.push((
            "redis".into(),
            Arc::new(
                RedisStore::connect(&url)
                    .await
                    .unwrap()
                    .with_prefix(&prefix)
                    .unwrap(),
            ),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_delivered_twice_gives_the_transcript_of_once() {
    for (i, (input, transcript)) in scenarios().into_iter().enumerate() {
        let expected = by_chat(transcript.lines().map(str::to_owned));
        for (name, store) in stores(&format!("twice{i}")).await {
            let got = transcript_on(store, &delivered_twice(&input)).await;
            assert_eq!(got, expected, "scenario {i} on {name}");
        }
    }
}

fn text(id: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_value(serde_json::json!({"update_id": id, "message": {
        "message_id": id, "date": 0, "chat": {"id": 5, "type": "private"},
        "from": {"id": 5, "is_bot": false}, "text": text}}))
    .unwrap()
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Answers {
    list: Vec<String>,
}

fn answering_bot(store: Arc<dyn SessionStore>, replies: RecordingTransport) -> Pipeline<Answers> {
    Pipeline::<Answers>::builder()
        .store_arc(store)
        .transport(replies)
        .on_text(|cx: Cx<Answers>| async move {
            let text = cx.update().text().unwrap_or_default().to_owned();
            let n = cx.session_mut(|a| {
                a.list.push(text);
                a.list.len()
            })?;
            cx.reply(format!("answer #{n}"));
            Ok(Outcome::Handled)
        })
        .build()
}

/// A second update with the id of one handled before, even with other content, is
/// skipped: the answer stays, nothing is sent, the caller hears `Duplicate`.
#[tokio::test]
async fn an_update_id_seen_before_is_skipped_and_said_so() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let replies = RecordingTransport::new();
    let bot = answering_bot(Arc::clone(&store), replies.clone());
    assert_eq!(
        bot.handle(text(10, "Ann")).await.unwrap(),
        Dispatch::Handled
    );
    assert_eq!(
        bot.handle(text(10, "Bob")).await.unwrap(),
        Dispatch::Duplicate
    );
    // Another replica (a second pipeline on the store) skips it too.
    let other = answering_bot(Arc::clone(&store), replies.clone());
    assert_eq!(
        other.handle(text(10, "Eve")).await.unwrap(),
        Dispatch::Duplicate
    );
    assert_eq!(
        other.handle(text(11, "Cy")).await.unwrap(),
        Dispatch::Handled
    );
    assert_eq!(replies.texts(), ["answer #1", "answer #2"]);
    let info =
        stagecraft::record::inspect(&store.load("5:5").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(info.data["list"], serde_json::json!(["Ann", "Cy"]));
    assert_eq!(info.seen, [10, 11]);
    // The window is bounded.
    for id in 12..60 {
        bot.handle(text(id, "x")).await.unwrap();
    }
    let info =
        stagecraft::record::inspect(&store.load("5:5").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(info.seen, (44..60).collect::<Vec<_>>());
}

/// A transport that is down until switched on.
#[derive(Debug, Clone, Default)]
struct Flaky {
    up: Arc<AtomicBool>,
    sent: RecordingTransport,
}

#[async_trait]
impl Transport for Flaky {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        if !self.up.load(Ordering::SeqCst) {
            return Err("transport down".into());
        }
        self.sent.send(msg).await
    }
}

/// With the outbox, the replies of a committed step whose delivery failed (the
/// transport down, or a crash between commit and delivery) stay in the record and go
/// out before the key's next update runs, in order, once.
#[tokio::test]
async fn committed_replies_not_delivered_go_out_before_the_next_update() {
    for (name, store) in stores("outbox").await {
        let transport = Flaky::default();
        let bot = Pipeline::<Answers>::builder()
            .store_arc(Arc::clone(&store))
            .outbox(true)
            .transport(transport.clone())
            .on_text(|cx: Cx<Answers>| async move {
                let t = cx.update().text().unwrap_or_default().to_owned();
                let n = cx.session_mut(|a| {
                    a.list.push(t.clone());
                    a.list.len()
                })?;
                cx.reply(format!("got {t}"));
                cx.reply(format!("that makes {n}"));
                Ok(Outcome::Handled)
            })
            .build();
        let err = bot.handle(text(1, "a")).await.unwrap_err();
        assert!(
            matches!(err, stagecraft::Error::Transport(_)),
            "{name}: {err:?}"
        );
        let stored = store.load("5:5").await.unwrap().unwrap();
        let info = stagecraft::record::inspect(&stored.bytes).unwrap();
        assert_eq!(
            info.data["list"],
            serde_json::json!(["a"]),
            "{name}: committed"
        );
        assert_eq!(
            info.outbox.len(),
            2,
            "{name}: the replies wait in the record"
        );

        transport.up.store(true, Ordering::SeqCst);
        bot.handle(text(2, "b")).await.unwrap();
        assert_eq!(
            transport.sent.texts(),
            ["got a", "that makes 1", "got b", "that makes 2"],
            "{name}"
        );
        let info =
            stagecraft::record::inspect(&store.load("5:5").await.unwrap().unwrap().bytes).unwrap();
        assert!(info.outbox.is_empty(), "{name}: marked delivered");
        // A fresh process (pipeline) finds nothing left to send.
        let again = answering_bot(Arc::clone(&store), transport.sent.clone());
        again.handle(text(3, "c")).await.unwrap();
        assert_eq!(transport.sent.texts().len(), 5, "{name}");
    }
}

fn sleeper(
    store: Arc<dyn SessionStore>,
    policy: ErrorPolicy,
    deadline: Duration,
) -> Pipeline<Answers> {
    Pipeline::<Answers>::builder()
        .store_arc(store)
        .error_policy(policy)
        .deadline(Some(deadline))
        .command("sleep", |cx: Cx<Answers>| async move {
            cx.session_mut(|a| a.list.push("slept".into()))?;
            std::future::pending::<()>().await;
            Ok(Outcome::Handled)
        })
        .on_text(|cx: Cx<Answers>| async move {
            let n = cx.session_mut(|a| {
                a.list.push("text".into());
                a.list.len()
            })?;
            cx.reply(format!("{n}"));
            Ok(Outcome::Handled)
        })
        .build()
}

/// A handler that never returns: the update fails at its deadline, the session follows
/// the error policy, and the next update of the same user runs.
#[tokio::test]
async fn a_handler_that_never_returns_is_stopped_at_the_deadline() {
    for (policy, kept) in [
        (ErrorPolicy::RollBack, vec!["text"]),
        (ErrorPolicy::WriteAnyway, vec!["slept", "text"]),
    ] {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        let bot = sleeper(Arc::clone(&store), policy, Duration::from_millis(200));
        let started = Instant::now();
        let err = bot.handle(text(1, "/sleep")).await.unwrap_err();
        assert!(
            matches!(err, stagecraft::Error::Deadline { ref key, .. } if key.as_deref() == Some("5:5")),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        assert_eq!(bot.keys_in_flight(), 0);
        assert_eq!(bot.handle(text(2, "hi")).await.unwrap(), Dispatch::Handled);
        let info =
            stagecraft::record::inspect(&store.load("5:5").await.unwrap().unwrap().bytes).unwrap();
        assert_eq!(info.data["list"], serde_json::json!(kept), "{policy:?}");
    }
}

/// Across two replicas on Redis: the one whose handler hangs holds the key's lease
/// until its deadline, then releases it, and the other replica's update of that user
/// runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_handler_on_one_replica_frees_the_user_for_the_other() {
    let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") else {
        return;
    };
    let prefix = format!("{}:", common::unique_name("deadline"));
    let open = || async {
        let s: Arc<dyn SessionStore> = Arc::new(
            RedisStore::connect(&url)
                .await
                .unwrap()
                .with_prefix(&prefix)
                .unwrap(),
        );
        s
    };
    let a = sleeper(
        open().await,
        ErrorPolicy::RollBack,
        Duration::from_millis(500),
    );
    let b = sleeper(open().await, ErrorPolicy::RollBack, Duration::from_secs(20));
    let hung = tokio::spawn(a.handle(text(1, "/sleep")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    assert_eq!(b.handle(text(2, "hi")).await.unwrap(), Dispatch::Handled);
    assert!(
        started.elapsed() >= Duration::from_millis(200),
        "waited for the lease"
    );
    let err = hung.await.unwrap().unwrap_err();
    assert!(matches!(err, stagecraft::Error::Deadline { .. }), "{err:?}");
    let store = open().await;
    let info =
        stagecraft::record::inspect(&store.load("5:5").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(info.data["list"], serde_json::json!(["text"]));
    store
        .delete("5:5", store.load("5:5").await.unwrap().unwrap().version)
        .await
        .unwrap();
}

/// An update whose every write loses to another writer is not dropped: the caller gets
/// `NotHandled` with the update inside, and nothing of it was written or sent.
#[tokio::test]
async fn an_update_whose_writes_keep_conflicting_is_handed_back() {
    let store = MemoryStore::new();
    let rival = store.clone();
    let replies = RecordingTransport::new();
    let bot = Pipeline::<Answers>::builder()
        .store(store.clone())
        .max_attempts(3)
        .transport(replies.clone())
        .on_text(move |cx: Cx<Answers>| {
            let rival = rival.clone();
            async move {
                cx.session_mut(|a| a.list.push("mine".into()))?;
                // Someone else writes the record while this handler runs.
                let current = rival.load("5:5").await?.map(|r| r.version);
                rival
                    .save("5:5", br#"{"v":1,"data":{"list":["theirs"]}}"#, current)
                    .await?;
                cx.reply("never sent");
                Ok(Outcome::Handled)
            }
        })
        .build();
    let mut err = bot.handle(text(7, "hello")).await.unwrap_err();
    assert!(err.is_conflict(), "{err:?}");
    assert!(
        matches!(err, stagecraft::Error::NotHandled { attempts: 3, .. }),
        "{err:?}"
    );
    let update = err
        .take_update::<TelegramUpdate>()
        .expect("the update comes back");
    assert_eq!(update.update_id, 7);
    assert!(err.take_update::<TelegramUpdate>().is_none(), "taken once");
    assert!(replies.sent().is_empty());
    assert_eq!(bot.keys_in_flight(), 0);
    let info =
        stagecraft::record::inspect(&store.load("5:5").await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(info.data["list"], serde_json::json!(["theirs"]));
}

/// Every store that outlives the process: SQLite, and each server whose URL is set
/// (each in its own namespace, dropped by `drop_namespaces`).
async fn lasting_stores(test: &str) -> Vec<(String, Arc<dyn SessionStore>)> {
    let path = std::env::temp_dir().join(format!("{}.db", common::unique_name(test)));
    let mut out: Vec<(String, Arc<dyn SessionStore>)> = vec![(
        "sqlite".into(),
        Arc::new(SqliteStore::open(&path).await.unwrap()),
    )];
    for var in [
        "STAGECRAFT_REDIS_URL",
        "STAGECRAFT_POSTGRES_URL",
        "STAGECRAFT_MYSQL_URL",
    ] {
        if let Some(url) = common::server_url(var) {
            let ns = common::unique_name(test);
            let store = common::open_namespaced(&url, &ns).await;
            out.push((format!("{var} {ns}"), Arc::from(store)));
        }
    }
    out
}

async fn drop_namespaces(stores: &[(String, Arc<dyn SessionStore>)]) {
    for (name, _) in stores {
        if let Some((var, ns)) = name.split_once(' ') {
            if let Some(url) = common::server_url(var) {
                common::drop_namespace(&url, ns).await;
            }
        }
    }
}

fn text_in(chat: i64, id: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_value(serde_json::json!({"update_id": id, "message": {
        "message_id": id, "date": 0, "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": false}, "text": text}}))
    .unwrap()
}

fn outbox_bot(store: Arc<dyn SessionStore>, transport: Flaky) -> Pipeline<Answers> {
    Pipeline::<Answers>::builder()
        .store_arc(store)
        .outbox(true)
        .transport(transport)
        .on_text(|cx: Cx<Answers>| async move {
            let t = cx.update().text().unwrap_or_default().to_owned();
            let n = cx.session_mut(|a| {
                a.list.push(t.clone());
                a.list.len()
            })?;
            cx.reply(format!("got {t}"));
            cx.reply(format!("that makes {n}"));
            Ok(Outcome::Handled)
        })
        .build()
}

/// After a crash between commit and delivery, a new process finds the records holding
/// undelivered replies through the store's pending index (no scan of the sessions) and
/// delivers them at start-up, before any user writes again: every reply once, in order
/// per chat; delivered records leave the index; a second run finds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_delivers_what_a_crashed_one_left_pending() {
    let stores = lasting_stores("pending").await;
    for (name, store) in &stores {
        let index = store.pending().expect("every built-in store has the index");
        // The first process commits 40 chats' steps, and its transport is down (as good
        // as a crash before delivery: the replies stay in the records).
        let down = Flaky::default();
        let first = outbox_bot(Arc::clone(store), down.clone());
        for chat in 1..=40 {
            let err = first
                .handle(text_in(chat, chat * 10, "hello"))
                .await
                .unwrap_err();
            assert!(
                matches!(err, stagecraft::Error::Transport(_)),
                "{name}: {err:?}"
            );
        }
        // One chat whose pending replies a later update of its own already delivered.
        down.up.store(true, Ordering::SeqCst);
        first.handle(text_in(40, 401, "again")).await.unwrap();
        assert_eq!(down.sent.texts().len(), 4, "{name}");
        let mut marked = index.pending_keys(i64::MAX, 1000).await.unwrap();
        marked.sort();
        let mut expected: Vec<String> = (1..40).map(|c| format!("{c}:{c}")).collect();
        expected.sort();
        assert_eq!(
            marked, expected,
            "{name}: the index lists the chats left pending"
        );
        drop(first);

        // A new process, transport up: everything goes out at start-up, once.
        let up = Flaky::default();
        up.up.store(true, Ordering::SeqCst);
        let second = outbox_bot(Arc::clone(store), up.clone());
        let done = second.deliver_pending().await.unwrap();
        assert_eq!(
            (done.keys, done.replies, done.failed),
            (39, 78, 0),
            "{name}: {done:?}"
        );
        let sent = by_chat(up.sent.sent().iter().map(Outgoing::to_json_line));
        assert_eq!(sent.len(), 39, "{name}");
        for (chat, msgs) in &sent {
            let texts: Vec<&str> = msgs.iter().map(|m| m["text"].as_str().unwrap()).collect();
            assert_eq!(texts, ["got hello", "that makes 1"], "{name}: chat {chat}");
        }
        assert!(
            index.pending_keys(i64::MAX, 1000).await.unwrap().is_empty(),
            "{name}: index emptied"
        );
        for chat in 1..40 {
            let key = format!("{chat}:{chat}");
            let rec = store.load(&key).await.unwrap().unwrap();
            let info = stagecraft::record::inspect(&rec.bytes).unwrap();
            assert!(info.outbox.is_empty(), "{name}: {key} marked delivered");
            assert_eq!(
                info.data["list"],
                serde_json::json!(["hello"]),
                "{name}: {key}"
            );
        }
        // Nothing is sent twice: not by a second run, not by the users' next updates.
        assert_eq!(second.deliver_pending().await.unwrap().keys, 0, "{name}");
        second.handle(text_in(7, 71, "more")).await.unwrap();
        assert_eq!(up.sent.texts().len(), 78 + 2, "{name}");
    }
    drop_namespaces(&stores).await;
}

/// A transport that is still down at start-up: the sessions are counted as failed and
/// stay pending, for the next try.
#[tokio::test]
async fn pending_replies_that_cannot_be_delivered_stay_pending() {
    let stores = lasting_stores("pending_down").await;
    for (name, store) in &stores {
        let down = Flaky::default();
        let bot = outbox_bot(Arc::clone(store), down.clone());
        for chat in 1..=3 {
            bot.handle(text_in(chat, chat, "hi")).await.unwrap_err();
        }
        let done = bot.deliver_pending().await.unwrap();
        assert_eq!((done.keys, done.failed), (0, 3), "{name}: {done:?}");
        let index = store.pending().unwrap();
        assert_eq!(
            index.pending_keys(i64::MAX, 10).await.unwrap().len(),
            3,
            "{name}"
        );
        down.up.store(true, Ordering::SeqCst);
        let done = bot.deliver_pending().await.unwrap();
        assert_eq!((done.keys, done.replies), (3, 6), "{name}: {done:?}");
    }
    drop_namespaces(&stores).await;
}

/// A table made before the pending index existed (no `pending` column) is upgraded by
/// `migrate`: its records load as before, and marking works on them.
#[tokio::test]
async fn a_table_from_before_the_pending_index_is_upgraded() {
    use stagecraft::store::sqlx;
    let old_sqlite = r#"CREATE TABLE "old_sessions" (session_key TEXT NOT NULL PRIMARY KEY,
        data BLOB NOT NULL, version INTEGER NOT NULL, expires_at INTEGER)"#;
    let insert = "INSERT INTO old_sessions (session_key, data, version, expires_at) VALUES ('1:1', x'7b7d', 7, NULL)";
    let path = std::env::temp_dir().join(format!("{}.db", common::unique_name("upgrade")));
    {
        let url = format!("sqlite:{}?mode=rwc", path.display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(old_sqlite).execute(&pool).await.unwrap();
        sqlx::query(insert).execute(&pool).await.unwrap();
        pool.close().await;
    }
    let options = stagecraft::store::SqliteOptions::new().table("old_sessions");
    let store = SqliteStore::open_with(&path, options).await.unwrap();
    check_upgraded("sqlite", &store).await;
    // Two processes' migrations at once, on a second old table, both succeed.
    let url = format!("sqlite:{}", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query(&old_sqlite.replace("old_sessions", "old_two"))
        .execute(&pool)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        SqliteStore::open_with(
            &path,
            stagecraft::store::SqliteOptions::new().table("old_two")
        ),
        SqliteStore::open_with(
            &path,
            stagecraft::store::SqliteOptions::new().table("old_two")
        ),
    );
    a.unwrap();
    b.unwrap();

    if let Some(url) = common::server_url("STAGECRAFT_POSTGRES_URL") {
        let table = common::unique_name("upgrade").replace(['-', '.'], "_");
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        sqlx::query(&format!(
            r#"CREATE TABLE "{table}" (session_key TEXT COLLATE "C" NOT NULL PRIMARY KEY,
            data BYTEA NOT NULL, version BIGINT NOT NULL, expires_at BIGINT)"#
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            r#"INSERT INTO "{table}" VALUES ('1:1', '\x7b7d', 7, NULL)"#
        ))
        .execute(&pool)
        .await
        .unwrap();
        let options = stagecraft::store::ServerOptions::new().table(&table);
        let store = stagecraft::store::PostgresStore::connect_with(&url, options)
            .await
            .unwrap();
        check_upgraded("postgres", &store).await;
        common::drop_namespace(&url, &table).await;
    }
    if let Some(url) = common::server_url("STAGECRAFT_MYSQL_URL") {
        let table = common::unique_name("upgrade").replace(['-', '.'], "_");
        let pool = sqlx::MySqlPool::connect(&url).await.unwrap();
        sqlx::query(&format!(
            "CREATE TABLE `{table}` (session_key VARBINARY(1024) NOT NULL PRIMARY KEY,
            data LONGBLOB NOT NULL, version BIGINT NOT NULL, expires_at BIGINT NULL,
            INDEX expires_at_idx (expires_at)) ENGINE = InnoDB"
        ))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query(&format!(
            "INSERT INTO `{table}` VALUES ('1:1', x'7b7d', 7, NULL)"
        ))
        .execute(&pool)
        .await
        .unwrap();
        let options = stagecraft::store::ServerOptions::new().table(&table);
        let store = stagecraft::store::MySqlStore::connect_with(&url, options)
            .await
            .unwrap();
        check_upgraded("mysql", &store).await;
        common::drop_namespace(&url, &table).await;
    }
}

async fn check_upgraded(name: &str, store: &dyn SessionStore) {
    let rec = store.load("1:1").await.unwrap().expect(name);
    assert_eq!(
        (rec.bytes.as_slice(), rec.version.0),
        (&b"{}"[..], 7),
        "{name}"
    );
    let index = store.pending().unwrap();
    assert!(
        index.pending_keys(i64::MAX, 10).await.unwrap().is_empty(),
        "{name}"
    );
    let v = index
        .save_pending("1:1", b"{\"a\":1}", Some(rec.version), 0)
        .await
        .unwrap();
    assert_eq!(
        index.pending_keys(i64::MAX, 10).await.unwrap(),
        ["1:1"],
        "{name}"
    );
    store.save("1:1", b"{}", Some(v)).await.unwrap();
    assert!(
        index.pending_keys(i64::MAX, 10).await.unwrap().is_empty(),
        "{name}"
    );
}

/// In a burst of one user's updates, the write that marks a step's replies delivered
/// rides on the next update's write (the lease goes straight to it): about one write per
/// update instead of two; every reply is sent once, in order, and the last step's mark is
/// written before the lease is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_burst_the_delivered_mark_rides_on_the_next_write() {
    let path = std::env::temp_dir().join(format!("{}.db", common::unique_name("fold")));
    let sqlite: Arc<dyn SessionStore> = Arc::new(SqliteStore::open(&path).await.unwrap());
    let counting = common::CountingStore::over(Arc::clone(&sqlite));
    let up = Flaky::default();
    up.up.store(true, Ordering::SeqCst);
    let bot = outbox_bot(counting.clone(), up.clone());
    const N: i64 = 60;
    let burst: Vec<_> = (1..=N)
        .map(|i| tokio::spawn(bot.handle(text_in(9, i, &i.to_string()))))
        .collect();
    for t in burst {
        t.await.unwrap().unwrap();
    }
    let texts = up.sent.texts();
    let expected: Vec<String> = (1..=N)
        .flat_map(|i| [format!("got {i}"), format!("that makes {i}")])
        .collect();
    assert_eq!(texts, expected, "every reply once, in order");
    let (_, saves, _) = counting.calls();
    assert!(
        saves < (N as usize) * 3 / 2,
        "{saves} writes for {N} updates (two each without folding)"
    );
    let rec = sqlite.load("9:9").await.unwrap().unwrap();
    let info = stagecraft::record::inspect(&rec.bytes).unwrap();
    assert!(info.outbox.is_empty(), "the last step is marked delivered");
    assert!(
        sqlite
            .pending()
            .unwrap()
            .pending_keys(i64::MAX, 10)
            .await
            .unwrap()
            .is_empty()
    );
    eprintln!("{saves} writes for {N} updates");
}

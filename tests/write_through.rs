//! Write-through caching: an update of a key this pipeline wrote last skips the read,
//! and stays correct when someone else wrote the record meanwhile.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::CountingStore;
use serde::{Deserialize, Serialize};
use stagecraft::clock::ManualClock;
use stagecraft::pipeline::CacheMode;
use stagecraft::prelude::*;
use stagecraft::session::inspect;
use stagecraft::store::{MemoryStore, SessionStore};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Count {
    count: u64,
}

type C = Cx<Count>;

fn msg(id: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":7}},"from":{{"id":7}},"text":"{text}"}}}}"#
    ))
    .unwrap()
}

/// `/peek` answers the count without writing; any other text adds one and answers it.
/// `runs` counts handler runs (reruns included).
fn bot(
    store: Arc<dyn SessionStore>,
    mode: CacheMode,
    replies: RecordingTransport,
    runs: Arc<AtomicUsize>,
    clock: Option<ManualClock>,
) -> Pipeline<Count> {
    let mut b = Pipeline::<Count>::builder()
        .store_arc(store)
        .cache_mode(mode)
        .max_attempts(1)
        .transport(replies);
    if let Some(clock) = clock {
        b = b.clock(clock);
    }
    b.command("peek", |cx: C| async move {
        let n = cx.session(|s| s.count)?;
        cx.reply(format!("peek {n}"));
        Ok(Outcome::Handled)
    })
    .on_text(move |cx: C| {
        let runs = Arc::clone(&runs);
        async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let n = cx.session_mut(|s| {
                s.count += 1;
                s.count
            })?;
            cx.reply(n.to_string());
            Ok(Outcome::Handled)
        }
    })
    .build()
}

async fn stored(store: &dyn SessionStore) -> u64 {
    let rec = store.load("7:7").await.unwrap().expect("a stored session");
    inspect(&rec.bytes).unwrap().data["count"].as_u64().unwrap()
}

#[tokio::test]
async fn a_key_this_pipeline_wrote_last_is_not_read_again() {
    let store = CountingStore::write_through(MemoryStore::new());
    let replies = RecordingTransport::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let b = bot(store.clone(), CacheMode::Auto, replies.clone(), runs, None);
    for i in 0..5 {
        b.handle(msg(i, "x")).await.unwrap();
    }
    b.handle(msg(5, "/peek")).await.unwrap();
    b.handle(msg(6, "x")).await.unwrap();
    // One read (the first update, of a key never seen); every change written.
    assert_eq!(store.calls(), (1, 6, 0));
    assert_eq!(replies.texts(), ["1", "2", "3", "4", "5", "peek 5", "6"]);
    assert_eq!(stored(store.inner().as_ref()).await, 6);
}

#[tokio::test]
async fn validate_mode_reads_every_update() {
    let store = CountingStore::write_through(MemoryStore::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let b = bot(
        store.clone(),
        CacheMode::Validate,
        RecordingTransport::new(),
        runs,
        None,
    );
    for i in 0..5 {
        b.handle(msg(i, "x")).await.unwrap();
    }
    assert_eq!(store.calls(), (5, 5, 0));
}

#[tokio::test]
async fn stores_that_give_no_hint_are_read_every_update() {
    let store = CountingStore::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let b = bot(
        store.clone(),
        CacheMode::Auto,
        RecordingTransport::new(),
        runs,
        None,
    );
    for i in 0..3 {
        b.handle(msg(i, "x")).await.unwrap();
    }
    assert_eq!(store.calls(), (3, 3, 0));
}

/// Someone else (another replica, an operator) changed the record after this pipeline
/// wrote it: the cached copy is stale, the write's compare-and-set fails, the update runs
/// again on a fresh read, and only the rerun's reply goes out. The stale attempt does not
/// count against `max_attempts` (1 here).
#[tokio::test]
async fn a_record_changed_elsewhere_is_read_and_the_update_runs_again() {
    let store = CountingStore::write_through(MemoryStore::new());
    let replies = RecordingTransport::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let b = bot(
        store.clone(),
        CacheMode::Auto,
        replies.clone(),
        Arc::clone(&runs),
        None,
    );
    b.handle(msg(1, "x")).await.unwrap();
    let rec = store.inner().load("7:7").await.unwrap().unwrap();
    store
        .inner()
        .save("7:7", br#"{"data":{"count":100}}"#, Some(rec.version))
        .await
        .unwrap();
    b.handle(msg(2, "x")).await.unwrap();
    assert_eq!(stored(store.inner().as_ref()).await, 101);
    assert_eq!(replies.texts(), ["1", "101"]);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        3,
        "the stale attempt ran, then the rerun"
    );
    // Deleted elsewhere: the same, on a new session.
    let rec = store.inner().load("7:7").await.unwrap().unwrap();
    store.inner().delete("7:7", rec.version).await.unwrap();
    b.handle(msg(3, "x")).await.unwrap();
    assert_eq!(stored(store.inner().as_ref()).await, 1);
    assert_eq!(replies.texts(), ["1", "101", "1"]);
}

/// The documented trade-off: an update that writes nothing answers from this pipeline's
/// last write, whatever was written elsewhere since; `CacheMode::Validate` reads.
#[tokio::test]
async fn read_only_updates_answer_from_the_last_own_write_unless_validating() {
    for (mode, expected) in [
        (CacheMode::WriteThrough, "peek 1"),
        (CacheMode::Validate, "peek 50"),
    ] {
        let store = CountingStore::write_through(MemoryStore::new());
        let replies = RecordingTransport::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let b = bot(store.clone(), mode, replies.clone(), runs, None);
        b.handle(msg(1, "x")).await.unwrap();
        let rec = store.inner().load("7:7").await.unwrap().unwrap();
        store
            .inner()
            .save("7:7", br#"{"data":{"count":50}}"#, Some(rec.version))
            .await
            .unwrap();
        b.handle(msg(2, "/peek")).await.unwrap();
        assert_eq!(replies.texts(), ["1", expected], "{mode:?}");
    }
}

/// With a store TTL, the cached copy is trusted only while the stored record would still
/// be alive (by the store's clock): after that the update reads, and finds nothing.
#[tokio::test]
async fn a_cached_session_is_not_used_past_the_store_ttl() {
    let clock = ManualClock::at_secs(1_700_000_000);
    let inner = MemoryStore::new()
        .with_ttl(Duration::from_secs(10))
        .with_clock(Arc::new(clock.clone()));
    let store = CountingStore::write_through(inner);
    let replies = RecordingTransport::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let b = bot(
        store.clone(),
        CacheMode::Auto,
        replies.clone(),
        Arc::clone(&runs),
        Some(clock.clone()),
    );
    b.handle(msg(1, "x")).await.unwrap();
    clock.advance(Duration::from_secs(9));
    b.handle(msg(2, "x")).await.unwrap();
    assert_eq!(store.calls().0, 1, "within the TTL: no read");
    clock.advance(Duration::from_secs(11));
    b.handle(msg(3, "x")).await.unwrap();
    assert_eq!(store.calls().0, 2, "past the TTL: read");
    assert_eq!(replies.texts(), ["1", "2", "1"]);
    assert_eq!(runs.load(Ordering::SeqCst), 3, "no stale attempt");
}

/// An update that fails under `ErrorPolicy::RollBack` leaves no cached copy behind: the
/// next update reads what is stored.
#[tokio::test]
async fn a_rolled_back_update_leaves_no_cached_copy() {
    let store = CountingStore::write_through(MemoryStore::new());
    let replies = RecordingTransport::new();
    let b = Pipeline::<Count>::builder()
        .store_arc(Arc::clone(&store) as Arc<dyn SessionStore>)
        .error_policy(ErrorPolicy::RollBack)
        .transport(replies.clone())
        .command("fail", |cx: C| async move {
            cx.session_mut(|s| s.count = 1000)?;
            Err("boom".into())
        })
        .on_text(|cx: C| async move {
            let n = cx.session_mut(|s| {
                s.count += 1;
                s.count
            })?;
            cx.reply(n.to_string());
            Ok(Outcome::Handled)
        })
        .build();
    b.handle(msg(1, "x")).await.unwrap();
    assert!(b.handle(msg(2, "/fail")).await.is_err());
    b.handle(msg(3, "x")).await.unwrap();
    assert_eq!(replies.texts(), ["1", "2"]);
    assert_eq!(store.calls().0, 2, "the update after the rollback read");
}

/// Two replicas with leases and forced write-through, taking turns on one key: every
/// increment counts once and is announced once.
#[cfg(any(feature = "redis", feature = "mysql"))]
async fn two_replicas_with_leases_and_write_through(store: Arc<dyn SessionStore>) {
    use stagecraft::pipeline::LeaseConfig;
    let replies = RecordingTransport::new();
    let replica = || {
        Pipeline::<Count>::builder()
            .store_arc(Arc::clone(&store))
            .leases(LeaseConfig::new())
            .cache_mode(CacheMode::WriteThrough)
            .transport(replies.clone())
            .on_text(|cx: C| async move {
                let n = cx.session_mut(|s| {
                    s.count += 1;
                    s.count
                })?;
                cx.reply(n.to_string());
                Ok(Outcome::Handled)
            })
            .build()
    };
    let (a, b) = (replica(), replica());
    for i in 0..20 {
        let bot = if i % 3 == 0 { &b } else { &a };
        bot.handle(msg(i, "x")).await.unwrap();
    }
    let expected: Vec<String> = (1..=20).map(|n| n.to_string()).collect();
    assert_eq!(replies.texts(), expected, "[{}]", store.backend());
    let rec = store.load("7:7").await.unwrap().unwrap();
    assert_eq!(inspect(&rec.bytes).unwrap().data["count"], 20);
    store.delete("7:7", rec.version).await.unwrap();
}

/// On Redis the lease comes with the record (one script), which then wins over the
/// cached copy.
#[cfg(feature = "redis")]
#[tokio::test]
async fn forced_write_through_with_leases_on_redis_loses_nothing() {
    let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") else {
        return;
    };
    let prefix = format!("{}:", common::unique_name("wt"));
    let store = stagecraft::store::RedisStore::connect(&url)
        .await
        .unwrap()
        .with_prefix(&prefix)
        .unwrap();
    two_replicas_with_leases_and_write_through(Arc::new(store)).await;
}

/// On MySQL the lease does not bring the record, so a replica uses its cached copy: it is
/// stale whenever the other replica wrote last, the compare-and-set catches it, and the
/// update reruns on a fresh read.
#[cfg(feature = "mysql")]
#[tokio::test]
async fn forced_write_through_with_leases_on_mysql_loses_nothing() {
    let Some(url) = common::server_url("STAGECRAFT_MYSQL_URL") else {
        return;
    };
    let table = common::unique_name("wt");
    let store = stagecraft::store::MySqlStore::connect(&url)
        .await
        .unwrap()
        .with_table(&table)
        .unwrap();
    store.migrate().await.unwrap();
    two_replicas_with_leases_and_write_through(Arc::new(store.clone())).await;
    stagecraft::store::sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS `{table}`, `{table}_lease`; DROP PROCEDURE IF EXISTS `{table}_take_v1`; DROP PROCEDURE IF EXISTS `{table}_save_v1`"
    ))
    .execute(store.pool())
    .await
    .unwrap();
}

/// Two pipelines with write-through caches and an outside writer change one key in a
/// random order (a fixed-seed generator, so a failure replays): every increment counts
/// exactly once, whoever made it, and every pipeline reply announces the value its own
/// increment produced.
async fn random_interleavings(a_store: Arc<dyn SessionStore>, b_store: Arc<dyn SessionStore>) {
    let replies = RecordingTransport::new();
    let runs = Arc::new(AtomicUsize::new(0));
    let a = bot(
        Arc::clone(&a_store),
        CacheMode::WriteThrough,
        replies.clone(),
        Arc::clone(&runs),
        None,
    );
    let b = bot(
        Arc::clone(&b_store),
        CacheMode::WriteThrough,
        replies.clone(),
        Arc::clone(&runs),
        None,
    );
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut expected = 0u64;
    let mut announced = Vec::new();
    for i in 0..300 {
        match next() % 4 {
            0 | 1 => {
                let bot = if next() % 2 == 0 { &a } else { &b };
                bot.handle(msg(i, "x")).await.unwrap();
                expected += 1;
                announced.push(expected.to_string());
            }
            2 => {
                // Another process: read, add one, compare-and-set.
                let rec = a_store.load("7:7").await.unwrap();
                let (n, version) = match rec {
                    Some(r) => (
                        inspect(&r.bytes).unwrap().data["count"].as_u64().unwrap(),
                        Some(r.version),
                    ),
                    None => (0, None),
                };
                let bytes = format!(r#"{{"data":{{"count":{}}}}}"#, n + 1);
                b_store
                    .save("7:7", bytes.as_bytes(), version)
                    .await
                    .unwrap();
                expected += 1;
            }
            _ => {
                // A read-only update: it may answer from a stale cache, but writes nothing.
                let bot = if next() % 2 == 0 { &a } else { &b };
                bot.handle(msg(i, "/peek")).await.unwrap();
            }
        }
    }
    let rec = a_store.load("7:7").await.unwrap().unwrap();
    assert_eq!(
        inspect(&rec.bytes).unwrap().data["count"].as_u64().unwrap(),
        expected,
        "[{}] increments lost or doubled",
        a_store.backend()
    );
    let said: Vec<String> = replies
        .texts()
        .into_iter()
        .filter(|t| !t.starts_with("peek"))
        .collect();
    assert_eq!(said, announced, "[{}] replies", a_store.backend());
}

#[tokio::test]
async fn random_interleavings_lose_nothing_on_the_memory_store() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    random_interleavings(Arc::clone(&store), store).await;
}

/// Two stores on one SQLite file: two processes, as far as the pipelines can tell.
#[cfg(feature = "sqlite")]
#[tokio::test]
async fn random_interleavings_lose_nothing_on_one_sqlite_file_shared_by_two_stores() {
    use stagecraft::store::SqliteStore;
    let dir = std::env::temp_dir().join(common::unique_name("wt"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bot.db");
    let a = SqliteStore::open(&path).await.unwrap();
    let b = SqliteStore::open(&path).await.unwrap();
    random_interleavings(Arc::new(a), Arc::new(b)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

//! After many distinct keys have passed through, the pipeline's per-key tables are back
//! at their idle size: no entry without a cached session, no lease streak, nothing in
//! flight; also after failed, rolled-back, refused and timed-out updates. (Resident
//! memory over a million keys is measured by `examples/bench.rs --churn`, see
//! docs/performance.md.)

use std::sync::Arc;
use std::time::Duration;

use stagecraft::pipeline::Footprint;
use stagecraft::prelude::*;
use stagecraft::session::ErrorPolicy;
use stagecraft::store::SessionStore;

const KEYS: i64 = 2_000;

fn message(id: i64, key: i64, text: &str) -> TelegramUpdate {
    let json = serde_json::json!({"update_id": id, "message": {"message_id": id,
        "chat": {"id": key}, "from": {"id": key}, "text": text}});
    TelegramUpdate::from_json(&json.to_string()).unwrap()
}

/// `hi` stores a session, `bye` ends it, `fail` fails after changing it, `slow` runs
/// past the deadline.
fn bot(store: Arc<dyn SessionStore>, cache: usize) -> Pipeline<u64> {
    Pipeline::<u64>::builder()
        .store_arc(store)
        .session_cache(cache)
        .error_policy(ErrorPolicy::RollBack)
        .deadline(Some(Duration::from_millis(200)))
        .max_queue_per_key(2)
        .on_text(|cx: Cx<u64>| async move {
            match cx.update().message_text().unwrap_or_default() {
                "bye" => cx.clear_session()?,
                "fail" => {
                    cx.session_mut(|n| *n += 1)?;
                    return Err("failed on purpose".into());
                }
                "slow" => tokio::time::sleep(Duration::from_secs(5)).await,
                _ => cx.session_mut(|n| *n += 1)?,
            }
            cx.reply("ok");
            Ok(Outcome::Handled)
        })
        .build()
}

/// Every key sends `words` one after another, 500 keys at a time; then a burst of 8
/// updates of one key at once (2 may wait, the rest are refused).
async fn churn(bot: &Pipeline<u64>, words: &[&'static str]) {
    let mut tasks = tokio::task::JoinSet::new();
    for key in 1..=KEYS {
        while tasks.len() >= 500 {
            tasks.join_next().await.unwrap().unwrap();
        }
        let bot = bot.clone();
        let words = words.to_vec();
        tasks.spawn(async move {
            for (i, w) in words.iter().enumerate() {
                let id = key * 10 + i as i64;
                // Failures are the point of some words; the tables are checked below.
                let _ = bot.handle(message(id, key, w)).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let burst: Vec<_> = (0..8)
        .map(|i| bot.handle(message(1_000_000 + i, KEYS + 1, "hi")))
        .collect();
    let results = futures_util::future::join_all(burst).await;
    let refused = results
        .iter()
        .filter(|r| matches!(r, Err(Error::Overloaded { .. })))
        .count();
    assert_eq!(refused, 5, "{results:?}");
}

async fn check(store: Arc<dyn SessionStore>) {
    let backend = store.backend();
    // Sessions that end: nothing is left per key.
    let b = bot(Arc::clone(&store), 1_000);
    churn(&b, &["hi", "fail", "hi", "bye"]).await;
    churn(&b, &["hi", "slow", "bye"]).await;
    let f = b.footprint();
    assert_eq!(b.keys_in_flight(), 0, "[{backend}]");
    // The burst's key keeps its session (cached).
    assert_eq!(
        (f.keys, f.cached_sessions, f.lease_streaks),
        (1, 1, 0),
        "[{backend}] {f:?}"
    );
    // Sessions that stay: at most the cache's capacity is held.
    let b = bot(Arc::clone(&store), 100);
    churn(&b, &["hi", "fail", "hi"]).await;
    let f: Footprint = b.footprint();
    assert_eq!(b.keys_in_flight(), 0, "[{backend}]");
    assert_eq!(
        (f.keys, f.cached_sessions, f.lease_streaks),
        (100, 100, 0),
        "[{backend}] {f:?}"
    );
    // Without a cache, nothing.
    let b = bot(Arc::clone(&store), 0);
    churn(&b, &["hi", "slow", "hi"]).await;
    assert_eq!(b.footprint(), Footprint::default(), "[{backend}]");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_key_tables_return_to_their_idle_size_on_the_memory_store() {
    check(Arc::new(stagecraft::store::MemoryStore::new())).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_per_key_tables_return_to_their_idle_size_on_sqlite() {
    let store = stagecraft::store::SqliteStore::open("sqlite::memory:")
        .await
        .unwrap();
    assert!(store.leases().is_some(), "leases on: streaks are kept");
    check(Arc::new(store)).await;
}

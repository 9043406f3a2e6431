//! Durations, times and versions at their extremes: a deadline, lease or TTL of
//! `Duration::MAX` means "never", and a record at the last version takes one more save.
//! On the memory store, SQLite and Redis (when `STAGECRAFT_REDIS_URL` is set).

mod common;

use std::sync::Arc;
use std::time::Duration;

use stagecraft::pipeline::LeaseConfig;
use stagecraft::prelude::*;
use stagecraft::store::{SessionStore, Version};

fn message(id: i64) -> TelegramUpdate {
    let json = serde_json::json!({"update_id": id, "message": {"message_id": id,
        "chat": {"id": 5}, "from": {"id": 5}, "text": "x"}});
    TelegramUpdate::from_json(&json.to_string()).unwrap()
}

/// Counts updates in the session, through the whole cycle (lease, load, commit).
async fn three_updates(store: Arc<dyn SessionStore>, leases: LeaseConfig, deadline: Duration) {
    let bot = Pipeline::<u64>::builder()
        .store_arc(Arc::clone(&store))
        .deadline(Some(deadline))
        .leases(leases)
        .on_text(|cx: Cx<u64>| async move {
            let n = cx.session_mut(|n| {
                *n = n.saturating_add(1);
                *n
            })?;
            cx.reply(n.to_string());
            Ok(Outcome::Handled)
        })
        .build();
    for id in 1..=3 {
        bot.handle(message(id)).await.unwrap();
    }
    assert_eq!(bot.keys_in_flight(), 0);
    let stored = store.load("5:5").await.unwrap().expect("stored");
    let info = stagecraft::session::inspect(&stored.bytes).unwrap();
    assert_eq!(info.data, serde_json::json!(3), "[{}]", store.backend());
    store.delete("5:5", stored.version).await.unwrap();
}

fn longest_leases() -> LeaseConfig {
    LeaseConfig::new().ttl(Duration::MAX).wait(Duration::MAX)
}

#[tokio::test]
async fn the_longest_deadline_is_no_deadline() {
    let store = Arc::new(stagecraft::store::MemoryStore::new());
    three_updates(store, LeaseConfig::new(), Duration::MAX).await;
}

#[tokio::test]
async fn the_longest_ttl_on_the_memory_store_never_expires() {
    let store = Arc::new(stagecraft::store::MemoryStore::new().with_ttl(Duration::MAX));
    three_updates(store, LeaseConfig::new(), Duration::MAX).await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn sqlite_with_the_longest_ttl_lease_and_deadline() {
    use stagecraft::store::SqliteStore;
    let store = SqliteStore::open("sqlite::memory:").await.unwrap();
    let ttl = store.clone().with_ttl(Duration::MAX);
    three_updates(Arc::new(ttl), longest_leases(), Duration::MAX).await;

    // A record at the last version a `BIGINT` holds takes one more save.
    let v = store.save("k", b"a", None).await.unwrap();
    let table = store.table().to_owned();
    stagecraft::store::sqlx::query(&format!(
        "UPDATE \"{table}\" SET version = ? WHERE session_key = 'k'"
    ))
    .bind(i64::MAX)
    .execute(store.pool())
    .await
    .unwrap();
    assert!(
        store
            .save("k", b"b", Some(v))
            .await
            .unwrap_err()
            .is_conflict()
    );
    let last = Version(i64::MAX.unsigned_abs());
    assert_eq!(store.load("k").await.unwrap().unwrap().version, last);
    let next = store.save("k", b"b", Some(last)).await.unwrap();
    assert_eq!(next, last.next());
    assert_eq!(next, Version(0), "versions stay within BIGINT");
    let loaded = store.load("k").await.unwrap().unwrap();
    assert_eq!((loaded.bytes.as_slice(), loaded.version), (&b"b"[..], next));
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_with_the_longest_ttl_lease_and_deadline() {
    let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") else {
        return;
    };
    let prefix = format!("{}:", common::unique_name("stagecraft_saturation"));
    let store = stagecraft::store::RedisStore::connect(&url)
        .await
        .unwrap()
        .with_prefix(&prefix)
        .unwrap();
    three_updates(
        Arc::new(store.clone().with_ttl(Duration::MAX)),
        longest_leases(),
        Duration::MAX,
    )
    .await;
    three_updates(Arc::new(store.clone()), longest_leases(), Duration::MAX).await;
    let left = store
        .list(&stagecraft::store::ListFilter::default())
        .await
        .unwrap();
    assert!(left.is_empty(), "{left:?}");
}

#[cfg(feature = "postgres")]
#[tokio::test]
async fn postgres_with_the_longest_ttl_lease_and_deadline() {
    use stagecraft::store::PostgresStore;
    let Some(url) = common::server_url("STAGECRAFT_POSTGRES_URL") else {
        return;
    };
    let pool = stagecraft::store::sqlx::postgres::PgPoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    let table = common::unique_name("stagecraft_saturation");
    let store = PostgresStore::new(pool.clone()).with_table(&table).unwrap();
    store.migrate().await.unwrap();
    let ttl = Arc::new(store.clone().with_ttl(Duration::MAX));
    let run = async move {
        three_updates(ttl, longest_leases(), Duration::MAX).await;
    };
    let result = tokio::spawn(run).await;
    stagecraft::store::sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS \"{table}\", \"{table}_lease\"; \
         DROP FUNCTION IF EXISTS \"{table}_take_v1\"(text, text, bigint)"
    ))
    .execute(&pool)
    .await
    .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_with_the_longest_ttl_lease_and_deadline() {
    use stagecraft::store::MySqlStore;
    let Some(url) = common::server_url("STAGECRAFT_MYSQL_URL") else {
        return;
    };
    let pool = stagecraft::store::sqlx::mysql::MySqlPoolOptions::new()
        .connect(&url)
        .await
        .unwrap();
    let table = common::unique_name("stagecraft_saturation");
    let store = MySqlStore::new(pool.clone()).with_table(&table).unwrap();
    store.migrate().await.unwrap();
    let ttl = Arc::new(store.clone().with_ttl(Duration::MAX));
    let run = async move {
        three_updates(ttl, longest_leases(), Duration::MAX).await;
    };
    let result = tokio::spawn(run).await;
    stagecraft::store::sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS `{table}`, `{table}_lease`; DROP PROCEDURE IF EXISTS `{table}_take_v1`; DROP PROCEDURE IF EXISTS `{table}_save_v1`"
    ))
        .execute(&pool)
        .await
        .unwrap();
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

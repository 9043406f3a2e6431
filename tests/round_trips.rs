//! Round trips per update on the server stores, counted from the servers' own statistics
//! (Redis `MONITOR`, MySQL `Questions`). One test per binary run, so no other
//! test's traffic is counted; the servers must not be serving anything else meanwhile.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

mod common;

use std::sync::Arc;

use stagecraft::Pipeline;
use stagecraft::pipeline::LeaseConfig;
use stagecraft::store::SessionStore;
use stagecraft::transport::RecordingTransport;
use stagecraft::update::TelegramUpdate;

const CYCLE: [&str; 10] = [
    "/start", "Alice", "abc", "30", "yes", "/profile", "/whoami", "hello", "/back", "outside",
];
const ROUNDS: usize = 5;

fn updates() -> Vec<TelegramUpdate> {
    (0..ROUNDS)
        .flat_map(|_| CYCLE.iter())
        .enumerate()
        .map(|(i, t)| {
            TelegramUpdate::from_json(&format!(
                r#"{{"update_id":{i},"message":{{"message_id":{i},"chat":{{"id":42}},"from":{{"id":42}},"text":"{t}"}}}}"#
            ))
            .unwrap()
        })
        .collect()
}

/// Runs the reference conversation and returns the commands the server counted per update.
async fn per_update<F, Fut>(store: Arc<dyn SessionStore>, leases: LeaseConfig, count: F) -> f64
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = u64>,
{
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store_arc(store)
            .leases(leases)
            .transport(RecordingTransport::new()),
    )
    .unwrap();
    let updates = updates();
    let n = updates.len();
    let before = count().await;
    for u in updates {
        bot.handle(u).await.unwrap();
    }
    let after = count().await;
    // The second count's own command is not the updates'.
    (after - before - 1) as f64 / n as f64
}

/// Runs the conversation while the server's `MONITOR` reports every command it runs,
/// and counts the ones a client sent (commands a Lua script runs come as `[n lua]`).
#[cfg(feature = "redis")]
async fn redis_round_trips(url: &str, store: Arc<dyn SessionStore>, leases: LeaseConfig) -> f64 {
    use futures_util::StreamExt;
    let client = stagecraft::store::redis::Client::open(url).unwrap();
    // The monitor sends MONITOR itself before it is handed over.
    let monitor = client.get_async_monitor().await.unwrap();
    let mut lines = monitor.into_on_message::<String>();
    let sentinel = common::unique_name("sentinel");
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store_arc(store)
            .leases(leases)
            .transport(RecordingTransport::new()),
    )
    .unwrap();
    let updates = updates();
    let n = updates.len();
    for u in updates {
        bot.handle(u).await.unwrap();
    }
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: String = stagecraft::store::redis::cmd("ECHO")
        .arg(&sentinel)
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut sent = 0usize;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let line = tokio::time::timeout_at(deadline, lines.next())
            .await
            .expect("MONITOR went quiet")
            .unwrap();
        if line.contains(&sentinel) {
            break;
        }
        if !line.contains(" lua]") {
            sent += 1;
        }
    }
    sent as f64 / n as f64
}

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_two_round_trips_per_update_without_leases() {
    let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") else {
        return;
    };

    let ns = common::unique_name("rt");
    let store = stagecraft::store::RedisStore::connect(&url)
        .await
        .unwrap()
        .with_prefix(&format!("{ns}:"))
        .unwrap();
    let without = redis_round_trips(
        &url,
        Arc::new(store.clone().with_leases(false)),
        LeaseConfig::off(),
    )
    .await;
    let with = redis_round_trips(&url, Arc::new(store.clone()), LeaseConfig::new()).await;
    println!("redis round trips per update: {without:.2} without leases, {with:.2} with leases");
    // Load (HMGET) and compare-and-set save (EVALSHA); an update that changes nothing saves nothing.
    assert!(
        without <= 2.0,
        "{without} round trips per update without leases"
    );
    // With leases: take the lease and read the record (one script), save, release.
    assert!(with <= 3.0, "{with} round trips per update with leases");
    let client = stagecraft::store::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = store
        .list(&stagecraft::store::ListFilter::default())
        .await
        .unwrap();
    for k in keys {
        let _: () = stagecraft::store::redis::cmd("DEL")
            .arg(format!("{ns}:{k}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

#[cfg(feature = "mysql")]
#[tokio::test]
async fn mysql_two_statements_per_update_without_leases() {
    let Some(url) = common::server_url("STAGECRAFT_MYSQL_URL") else {
        return;
    };

    use stagecraft::store::sqlx::{self, Row};
    let ns = common::unique_name("rt");
    let store = stagecraft::store::MySqlStore::connect(&url)
        .await
        .unwrap()
        .with_table(&ns)
        .unwrap();
    store.migrate().await.unwrap();
    let pool = sqlx::mysql::MySqlPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let count = || {
        let pool = pool.clone();
        async move {
            let row = sqlx::query("SHOW GLOBAL STATUS LIKE 'Questions'")
                .fetch_one(&pool)
                .await
                .unwrap();
            let v: String = row.try_get(1).unwrap();
            v.parse::<u64>().unwrap()
        }
    };
    let without = per_update(
        Arc::new(store.clone().with_leases(false)),
        LeaseConfig::off(),
        &count,
    )
    .await;
    println!("mysql statements per update without leases: {without:.2}");
    // The first update of a new key costs one statement more (an expired row in the way
    // is removed before the insert); every other update costs a load and a save.
    assert!(
        without <= 2.1,
        "{without} statements per update without leases"
    );
    sqlx::query(&format!("DROP TABLE IF EXISTS `{ns}`, `{ns}_lease`"))
        .execute(&pool)
        .await
        .unwrap();
}

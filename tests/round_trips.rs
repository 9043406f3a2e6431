//! Round trips per update on the server stores, counted from the servers' own statistics
//! (Redis `INFO commandstats`, MySQL `Questions`). One test per binary run, so no other
//! test's traffic is counted; the servers must not be serving anything else meanwhile.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

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

fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
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

#[cfg(feature = "redis")]
#[tokio::test]
async fn redis_two_round_trips_per_update_without_leases() {
    let Ok(url) = std::env::var("STAGECRAFT_REDIS_URL") else {
        {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: STAGECRAFT_REDIS_URL is not set (tests of this server do not run)"
            );
        };
        return;
    };
    let ns = unique("rt");
    let store = stagecraft::store::RedisStore::connect(&url)
        .await
        .unwrap()
        .with_prefix(&format!("{ns}:"))
        .unwrap();
    let client = stagecraft::store::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let count = || {
        let mut conn = conn.clone();
        async move {
            // The commands a client sends: HMGET (load), EVALSHA/EVAL (save, lease release),
            // SET (lease acquire), SCRIPT. Redis counts the commands a script runs inside
            // (HGET, HSET, GET, DEL, PEXPIRE...) as well, but those are no round trips.
            let info: String = stagecraft::store::redis::cmd("INFO")
                .arg("commandstats")
                .query_async(&mut conn)
                .await
                .unwrap();
            info.lines()
                .filter_map(|l| {
                    let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
                    let top_level = matches!(name, "hmget" | "evalsha" | "eval" | "set" | "info")
                        || name.starts_with("script");
                    top_level
                        .then(|| rest.split(',').next()?.parse::<u64>().ok())
                        .flatten()
                })
                .sum()
        }
    };
    let without = per_update(
        Arc::new(store.clone().with_leases(false)),
        LeaseConfig::off(),
        &count,
    )
    .await;
    let with = per_update(Arc::new(store.clone()), LeaseConfig::new(), &count).await;
    println!("redis commands per update: {without:.2} without leases, {with:.2} with leases");
    // Load (HMGET) and compare-and-set save (EVALSHA); an update that changes nothing saves nothing.
    assert!(
        without <= 2.0,
        "{without} commands per update without leases"
    );
    // Plus acquire (SET NX PX) and release (EVALSHA) of the lease.
    assert!(with <= 4.0, "{with} commands per update with leases");
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
    let Ok(url) = std::env::var("STAGECRAFT_MYSQL_URL") else {
        {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: STAGECRAFT_MYSQL_URL is not set (tests of this server do not run)"
            );
        };
        return;
    };
    use stagecraft::store::sqlx::{self, Row};
    let ns = unique("rt");
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

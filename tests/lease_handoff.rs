//! Passing a key's lease from one update to the next update of the key waiting in the
//! same process: a burst of updates of one key takes the lease once and gives it back
//! once, within the fair share; a passed lease whose update was cancelled is given back.
//! Against the real servers of `STAGECRAFT_REDIS_URL`, `STAGECRAFT_POSTGRES_URL` and
//! `STAGECRAFT_MYSQL_URL` (each test skips a server whose variable is unset).

mod common;

use common::CountingStore;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stagecraft::pipeline::{CacheMode, LeaseConfig, LeaseMode};
use stagecraft::prelude::*;
use stagecraft::session::inspect;
use stagecraft::store::{LeaseAttempt, ListFilter, SessionStore};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Count {
    count: u64,
}

type C = Cx<Count>;

fn msg(id: i64, chat: i64) -> TelegramUpdate {
    TelegramUpdate::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{chat}}},"from":{{"id":{chat}}},"text":"x"}}}}"#
    ))
    .unwrap()
}

/// A server store on a table or prefix of its own.
struct Server {
    name: &'static str,
    store: Arc<dyn SessionStore>,
    /// Drops the SQL store's tables when awaited.
    drop_tables: Option<futures_util::future::BoxFuture<'static, ()>>,
}

impl Server {
    /// Removes what the test stored.
    async fn remove(self) {
        match self.drop_tables {
            Some(drop_tables) => drop_tables.await,
            None => {
                for k in self.store.list(&ListFilter::default()).await.unwrap() {
                    if let Some(rec) = self.store.load(&k).await.unwrap() {
                        self.store.delete(&k, rec.version).await.unwrap();
                    }
                }
            }
        }
    }
}

/// The servers whose variables are set.
async fn servers() -> Vec<Server> {
    use futures_util::FutureExt;
    let mut out = Vec::new();
    if let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") {
        let ns = common::unique_name("handoff");
        let store = stagecraft::store::RedisStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("STAGECRAFT_REDIS_URL is set but: {e}"))
            .with_prefix(&format!("{ns}:"))
            .unwrap();
        out.push(Server {
            name: "redis",
            store: Arc::new(store),
            drop_tables: None,
        });
    }
    if let Some(url) = common::server_url("STAGECRAFT_POSTGRES_URL") {
        let table = common::unique_name("handoff");
        let store = stagecraft::store::PostgresStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("STAGECRAFT_POSTGRES_URL is set but: {e}"))
            .with_table(&table)
            .unwrap();
        store.migrate().await.unwrap();
        let pool = store.pool().clone();
        let sql = format!(
            r#"DROP TABLE IF EXISTS "{table}", "{table}_lease"; DROP FUNCTION IF EXISTS "{table}_take_v1"(text, text, bigint)"#
        );
        let drop_tables = async move {
            stagecraft::store::sqlx::raw_sql(&sql)
                .execute(&pool)
                .await
                .unwrap();
        };
        out.push(Server {
            name: "postgres",
            store: Arc::new(store),
            drop_tables: Some(drop_tables.boxed()),
        });
    }
    if let Some(url) = common::server_url("STAGECRAFT_MYSQL_URL") {
        let table = common::unique_name("handoff");
        let store = stagecraft::store::MySqlStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("STAGECRAFT_MYSQL_URL is set but: {e}"))
            .with_table(&table)
            .unwrap();
        store.migrate().await.unwrap();
        let pool = store.pool().clone();
        let sql = format!(
            "DROP TABLE IF EXISTS `{table}`, `{table}_lease`; \
             DROP PROCEDURE IF EXISTS `{table}_take_v1`; \
             DROP PROCEDURE IF EXISTS `{table}_save_v1`"
        );
        let drop_tables = async move {
            stagecraft::store::sqlx::raw_sql(&sql)
                .execute(&pool)
                .await
                .unwrap();
        };
        out.push(Server {
            name: "mysql",
            store: Arc::new(store),
            drop_tables: Some(drop_tables.boxed()),
        });
    }
    out
}

fn counter(store: Arc<dyn SessionStore>, leases: LeaseConfig) -> Pipeline<Count> {
    counter_caching(store, leases, CacheMode::Auto)
}

fn counter_caching(
    store: Arc<dyn SessionStore>,
    leases: LeaseConfig,
    cache: CacheMode,
) -> Pipeline<Count> {
    Pipeline::<Count>::builder()
        .store_arc(store)
        .leases(leases)
        .cache_mode(cache)
        .on_text(|cx: C| async move {
            cx.session_mut(|s| s.count += 1)?;
            tokio::task::yield_now().await;
            cx.reply("ok");
            Ok(Outcome::Handled)
        })
        .build()
}

async fn stored_count(store: &Arc<dyn SessionStore>, key: &str) -> u64 {
    let rec = store.load(key).await.unwrap().expect("a stored session");
    inspect(&rec.bytes).unwrap().data["count"].as_u64().unwrap()
}

/// Takes the lease of `key` from outside the pipeline (as another replica would), waiting
/// up to `within` for it to be free; gives it back at once.
async fn free_within(store: &Arc<dyn SessionStore>, key: &str, within: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    let leases = store.leases().expect("a store with leases");
    loop {
        match leases
            .acquire_lease(key, Duration::from_secs(30))
            .await
            .unwrap()
        {
            LeaseAttempt::Acquired(lease) => {
                assert!(leases.release_lease(&lease).await.unwrap());
                return true;
            }
            _ if tokio::time::Instant::now() >= deadline => return false,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

const BURST: usize = 20;

/// Handles `BURST` updates of one chat, all queued at once, and returns the store's calls.
async fn burst(
    store: &Arc<dyn SessionStore>,
    chat: i64,
    leases: LeaseConfig,
    cache: CacheMode,
) -> (usize, usize, usize) {
    let counted = CountingStore::over(Arc::clone(store));
    let bot = counter_caching(counted.clone(), leases, cache);
    let queued: Vec<_> = (0..BURST as i64)
        .map(|i| bot.handle(msg(i, chat)))
        .collect();
    for r in futures_util::future::join_all(queued).await {
        r.unwrap();
    }
    assert_eq!(
        stored_count(store, &format!("{chat}:{chat}")).await,
        BURST as u64
    );
    let (acquires, releases) = counted.lease_calls();
    (acquires, releases, counted.calls().0)
}

/// Runs `body` on each server's store in a task of its own, and removes what it stored
/// even when it panics.
async fn on_each_server<F, Fut>(body: F)
where
    F: Fn(&'static str, Arc<dyn SessionStore>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for server in servers().await {
        let result = tokio::spawn(body(server.name, Arc::clone(&server.store))).await;
        server.remove().await;
        if let Err(e) = result {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[tokio::test]
async fn a_burst_of_one_key_takes_the_lease_once_within_the_fair_share() {
    on_each_server(|name, store| async move {
        let store = &store;
        // Within the fair share: one acquisition (with the first read), one release; the
        // other updates take the session the previous one committed under the lease,
        // without reading it, and save it.
        let long = LeaseConfig::new().fair_share(Duration::from_secs(600));
        let (acquires, releases, loads) = burst(store, 1, long.clone(), CacheMode::Auto).await;
        assert_eq!(
            (acquires, releases),
            (1, 1),
            "[{name}] acquisitions, releases"
        );
        // Every server store reads the record in the round trip that takes the lease.
        let first_read = 0;
        assert_eq!(loads, first_read, "[{name}] loads");
        assert!(
            free_within(store, "1:1", Duration::ZERO).await,
            "[{name}] the lease was not given back after the burst"
        );

        // No fair share: the lease goes back after every update, as without passing.
        let none = LeaseConfig::new()
            .fair_share(Duration::ZERO)
            .poll(Duration::from_millis(1), Duration::from_millis(2));
        let (acquires, releases, _) = burst(store, 2, none, CacheMode::Auto).await;
        assert_eq!(
            (acquires, releases),
            (BURST, BURST),
            "[{name}] without a fair share"
        );

        // `CacheMode::Validate`: the lease is still passed on, but every update reads.
        let (acquires, releases, loads) = burst(store, 3, long, CacheMode::Validate).await;
        assert_eq!((acquires, releases), (1, 1), "[{name}] validate");
        assert_eq!(loads, BURST - 1 + first_read, "[{name}] validate: loads");
    })
    .await;
}

#[tokio::test]
async fn a_passed_lease_whose_update_was_cancelled_is_given_back() {
    on_each_server(|name, store| async move {
        let store = &store;
        let counted = CountingStore::over(Arc::clone(store));
        let leases = LeaseConfig::new()
            .ttl(Duration::from_secs(60))
            .fair_share(Duration::from_secs(600));
        let bot = counter(counted.clone(), leases);
        let first = bot.handle(msg(1, 3));
        let second = bot.handle(msg(2, 3));
        // The first update ends with the second one waiting: it passes its lease on.
        first.await.unwrap();
        assert_eq!(
            counted.lease_calls().1,
            0,
            "[{name}] released instead of passed on"
        );
        // The second update is cancelled before it ran: the lease must not stay held
        // (its renewal would keep it so until the next update of the key).
        drop(second);
        assert!(
            free_within(store, "3:3", Duration::from_secs(10)).await,
            "[{name}] the passed lease was not given back"
        );
        assert_eq!(bot.keys_in_flight(), 0, "[{name}]");
        // The key works as before.
        bot.handle(msg(3, 3)).await.unwrap();
        assert_eq!(stored_count(store, "3:3").await, 2, "[{name}]");
    })
    .await;
}

/// A passed lease that a renewal found gone while its update waited (here: deleted from
/// Redis, as if it had expired and been taken over) is not used: the update takes the
/// lease afresh and runs once.
#[tokio::test]
async fn a_passed_lease_lost_while_waiting_is_taken_afresh() {
    let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") else {
        return;
    };
    let ns = common::unique_name("handoff");
    let store: Arc<dyn SessionStore> = Arc::new(
        stagecraft::store::RedisStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(&format!("{ns}:"))
            .unwrap(),
    );
    let counted = CountingStore::over(Arc::clone(&store));
    let leases = LeaseConfig::new()
        .ttl(Duration::from_millis(300))
        .fair_share(Duration::from_secs(600));
    let bot = counter(counted.clone(), leases);
    let first = bot.handle(msg(1, 4));
    let second = bot.handle(msg(2, 4));
    first.await.unwrap();
    assert_eq!(counted.lease_calls().0, 1);

    let client = stagecraft::store::redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let removed: i64 = stagecraft::store::redis::cmd("DEL")
        .arg(format!("{ns}:\0lease:4:4"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(removed, 1, "the passed lease is held in Redis");
    // Renewals come every 100 ms: the next one finds the lease gone. Waiting for many
    // of them leaves room for a slow machine (this runtime has nothing else to run).
    tokio::time::sleep(Duration::from_millis(1500)).await;

    second.await.unwrap();
    let (acquires, releases) = counted.lease_calls();
    assert_eq!(
        acquires, 2,
        "the lost lease was used instead of taken afresh"
    );
    assert_eq!(releases, 2, "the lost one (a no-op) and the new one");
    assert_eq!(stored_count(&store, "4:4").await, 2);
    assert!(free_within(&store, "4:4", Duration::ZERO).await);
    let rec = store.load("4:4").await.unwrap().unwrap();
    store.delete("4:4", rec.version).await.unwrap();
}

/// An update that got the lease passed on uses the previous update's committed session
/// unread; a writer that takes no lease (a replica with leases off, an operator's tool)
/// changed the record meanwhile: the compare-and-set catches it, the update reruns on the
/// record as it is now, and nothing is lost.
#[tokio::test]
async fn a_passed_lease_trusts_the_cache_and_cas_catches_a_writer_without_lease() {
    on_each_server(|name, store| async move {
        let store = &store;
        let counted = CountingStore::over(Arc::clone(store));
        let runs = Arc::new(AtomicUsize::new(0));
        let bot = {
            let runs = Arc::clone(&runs);
            Pipeline::<Count>::builder()
                .store_arc(counted.clone())
                .leases(LeaseConfig::new().fair_share(Duration::from_secs(600)))
                .on_text(move |cx: C| {
                    let runs = Arc::clone(&runs);
                    async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        cx.session_mut(|s| s.count += 1)?;
                        Ok(Outcome::Handled)
                    }
                })
                .build()
        };
        let first = bot.handle(msg(1, 6));
        let second = bot.handle(msg(2, 6));
        let third = bot.handle(msg(3, 6));
        first.await.unwrap();
        let loads = counted.calls().0;
        // The second update reads nothing: the lease came with the first one's session.
        second.await.unwrap();
        assert_eq!(
            counted.calls().0,
            loads,
            "[{name}] the passed-on update read"
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2, "[{name}]");
        // Someone without the lease sets the count to 100.
        let rec = store.load("6:6").await.unwrap().unwrap();
        store
            .save("6:6", br#"{"data":{"count":100}}"#, Some(rec.version))
            .await
            .unwrap();
        // The third update trusts its cache (count 2), its save conflicts, it reruns on
        // the fresh record.
        third.await.unwrap();
        assert_eq!(
            stored_count(store, "6:6").await,
            101,
            "[{name}] a write was lost"
        );
        assert_eq!(
            runs.load(Ordering::SeqCst),
            4,
            "[{name}] the stale run and its rerun"
        );
        assert_eq!(counted.calls().0, loads + 1, "[{name}] the rerun reads");
    })
    .await;
}

/// `LeaseMode::On` on a store without leases fails the update with `Error::Config` naming
/// the backend; `LeaseMode::Auto` there takes no lease and runs it.
#[tokio::test]
async fn lease_mode_on_needs_a_store_with_leases() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    assert!(store.leases().is_none());
    let bot = counter(Arc::clone(&store), LeaseConfig::new().mode(LeaseMode::On));
    match bot.handle(msg(1, 8)).await {
        Err(Error::Config(text)) => assert!(text.contains("`memory`"), "{text}"),
        other => panic!("expected Error::Config, got {other:?}"),
    }
    let bot = counter(Arc::clone(&store), LeaseConfig::new());
    bot.handle(msg(2, 8)).await.unwrap();
    assert_eq!(stored_count(&store, "8:8").await, 1);
}

/// A transport whose deliveries wait until it is opened.
#[derive(Debug, Clone)]
struct Gate {
    open: tokio::sync::watch::Sender<bool>,
    sent: stagecraft::transport::RecordingTransport,
}

#[async_trait::async_trait]
impl stagecraft::transport::Transport for Gate {
    async fn send(
        &self,
        msg: &stagecraft::transport::Outgoing,
    ) -> Result<(), stagecraft::error::BoxError> {
        let mut open = self.open.subscribe();
        open.wait_for(|o| *o).await?;
        self.sent.send(msg).await
    }
}

/// Where the lease is released: by the save (the default: free while the replies are
/// still being delivered), or after the delivery with `hold_through_delivery`; with the
/// outbox, always after the delivery.
#[tokio::test]
async fn the_lease_is_released_by_the_save_or_after_the_delivery() {
    on_each_server(|name, store| async move {
        let cases = [
            ("default", LeaseConfig::new(), false, true),
            (
                "hold_through_delivery",
                LeaseConfig::new().hold_through_delivery(true),
                false,
                false,
            ),
            ("outbox", LeaseConfig::new(), true, false),
        ];
        for (i, (what, leases, outbox, free_while_delivering)) in cases.into_iter().enumerate() {
            let chat = 700 + i as i64;
            let key = format!("{chat}:{chat}");
            let gate = Gate {
                open: tokio::sync::watch::Sender::new(false),
                sent: stagecraft::transport::RecordingTransport::new(),
            };
            let bot = Pipeline::<Count>::builder()
                .store_arc(Arc::clone(&store))
                .leases(leases)
                .outbox(outbox)
                .transport(gate.clone())
                .on_text(|cx: C| async move {
                    cx.session_mut(|s| s.count += 1)?;
                    cx.reply("ok");
                    Ok(Outcome::Handled)
                })
                .build();
            let running = tokio::spawn(bot.handle(msg(1, chat)));
            // Saved: the delivery is under way (and waits for the gate).
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while store.load(&key).await.unwrap().is_none() {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "[{name}] {what}: not saved"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            assert_eq!(
                free_within(&store, &key, Duration::from_millis(200)).await,
                free_while_delivering,
                "[{name}] {what}: lease free while the replies are delivered"
            );
            assert!(
                gate.sent.texts().is_empty(),
                "[{name}] {what}: delivered early"
            );
            gate.open.send_replace(true);
            running.await.unwrap().unwrap();
            assert_eq!(gate.sent.texts(), ["ok"], "[{name}] {what}");
            assert!(
                free_within(&store, &key, Duration::from_secs(1)).await,
                "[{name}] {what}: the lease was not given back"
            );
            assert_eq!(stored_count(&store, &key).await, 1, "[{name}] {what}");
        }
    })
    .await;
}

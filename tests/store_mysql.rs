//! The conformance suite on [`MySqlStore`] (MySQL or MariaDB), against `STAGECRAFT_MYSQL_URL`.
//!
//! Unset: the server test prints one `skipped:` line and passes. Set but the server does
//! not answer: it fails. Each run uses its own table and drops it at the end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stagecraft::Error;
use stagecraft::clock::ManualClock;
use stagecraft::store::sqlx::mysql::{MySqlPool, MySqlPoolOptions};
use stagecraft::store::{LeaseAttempt, LeaseStore, MySqlOptions, MySqlStore, SessionStore};
use stagecraft::testing::conformance;

const VAR: &str = "STAGECRAFT_MYSQL_URL";

async fn connect_pool(url: &str) -> MySqlPool {
    MySqlPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{VAR} is set but the server does not answer: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_store() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let pool = connect_pool(&url).await;
    let table = common::unique_name("stagecraft_test");
    let store = MySqlStore::new(pool.clone())
        .with_table(&table)
        .expect("table name");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate again (idempotent)");

    let body = tokio::spawn({
        let store = store.clone();
        let table = table.clone();
        async move {
            // Leases are on by default, so run_all checks them too.
            assert!(store.leases().is_some(), "leases are on by default");
            conformance::run_all(store.clone()).await;
            assert_eq!(
                refused_keys(&store).await,
                [
                    "1025 bytes",
                    "4096 bytes",
                    "64 KiB",
                    "1 MiB",
                    "1200 bytes of crabs"
                ]
            );
            assert!(
                store.clone().with_leases(false).leases().is_none(),
                "leases switched off are still offered"
            );

            // The key column holds 1024 bytes; longer keys are refused, never truncated.
            let long = "k".repeat(1025);
            let err = store
                .save(&long, b"x", None)
                .await
                .expect_err("a 1025-byte key");
            assert!(err.is_store(), "expected Error::Store, got {err:?}");
            let max = "k".repeat(1024);
            let v = store.save(&max, b"x", None).await.expect("a 1024-byte key");
            assert_eq!(
                store.load(&max).await.expect("load").map(|l| l.version),
                Some(v)
            );

            let clock = ManualClock::at_secs(1_700_000_000);
            let ttl = Duration::from_secs(300);
            let ttl_store = store
                .clone()
                .with_ttl(ttl)
                .with_clock(Arc::new(clock.clone()));
            conformance::check_ttl(&ttl_store, &clock, ttl).await;
            conformance::check_cache_hint(&ttl_store, Some(&clock)).await;
            clock.advance(ttl + Duration::from_millis(1));
            assert!(ttl_store.purge_expired().await.expect("purge") >= 1);
            assert_eq!(ttl_store.purge_expired().await.expect("purge"), 0);

            let other_pool = connect_pool(&url).await;
            let other = MySqlStore::new(other_pool.clone())
                .with_table(&table)
                .expect("table");
            conformance::check_shared(&store, &other).await;
            other_pool.close().await;
        }
    });
    let result = body.await;
    stagecraft::store::sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS `{table}`, `{table}_lease`; DROP PROCEDURE IF EXISTS `{table}_take_v1`; DROP PROCEDURE IF EXISTS `{table}_save_v1`"
    ))
        .execute(&pool)
        .await
        .expect("drop the test table");
    pool.close().await;
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test body: {e}");
    }
}

#[tokio::test]
async fn rejects_bad_table_names() {
    let pool = MySqlPoolOptions::new()
        .connect_lazy("mysql://nobody@127.0.0.1:1/none")
        .expect("pool");
    for bad in [
        "x; DROP TABLE y",
        "",
        "9lives",
        "a.b",
        "a\"b",
        &"t".repeat(64),
    ] {
        let result = MySqlStore::new(pool.clone()).with_table(bad);
        assert!(
            matches!(result, Err(Error::Config(_))),
            "table {bad:?} was accepted"
        );
    }
}

#[tokio::test]
async fn unreachable_server_is_a_store_error() {
    let pool = MySqlPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("mysql://root@127.0.0.1:1/test")
        .expect("pool");
    let store = MySqlStore::new(pool);
    let err = store.load("k").await.expect_err("load from a closed port");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
    let err = store.migrate().await.expect_err("migrate on a closed port");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
    let err = MySqlStore::connect("not a url").await.expect_err("bad url");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
}

/// Stores starting at once on a fresh table all start, and exactly one insert of a
/// fresh key wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_starting_together_on_a_fresh_table_all_start() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    const STORES: usize = 16;
    for round in 0..10 {
        let table = common::unique_name(&format!("race{round}"));
        // Every store has its connection ready and waits at the barrier, so that the
        // migrations start together.
        let barrier = Arc::new(tokio::sync::Barrier::new(STORES));
        let mut starts = Vec::new();
        for _ in 0..STORES {
            let (pool, table, barrier) = (connect_pool(&url).await, table.clone(), barrier.clone());
            starts.push(tokio::spawn(async move {
                let store = MySqlStore::new(pool).with_table(&table)?;
                barrier.wait().await;
                store.migrate().await?;
                store.save("k", b"{}", None).await.map(|_| ())
            }));
        }
        let mut saved = 0;
        for s in starts {
            match s.await.expect("the start task") {
                Ok(()) => saved += 1,
                Err(e) if e.is_conflict() => {}
                Err(e) => panic!(
                    "round {round}: a store failed to start: {}",
                    stagecraft::error::error_chain(&e)
                ),
            }
        }
        assert_eq!(
            saved, 1,
            "one insert of the fresh key wins, the others conflict"
        );
        let pool = connect_pool(&url).await;
        stagecraft::store::sqlx::raw_sql(&format!(
            "DROP TABLE IF EXISTS `{table}`, `{table}_lease`; DROP PROCEDURE IF EXISTS `{table}_take_v1`; DROP PROCEDURE IF EXISTS `{table}_save_v1`"
        ))
        .execute(&pool)
        .await
        .unwrap();
    }
}

/// Connecting to a server that refuses the connection fails within seconds (not after the
/// pool's 30 s acquire timeout), and the error names the cause once.
#[tokio::test]
async fn connect_to_a_refusing_server_fails_fast_with_the_cause() {
    common::assert_refused_fast(MySqlStore::connect("mysql://root@127.0.0.1:1/test")).await;
}

/// A user granted privileges on its session and lease tables only starts a store on them
/// with `connect_with`, and uses it; `connect`, which opens the default table, is
/// refused to it.
#[tokio::test]
async fn a_user_granted_only_its_tables_starts() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let name = common::unique_name("own");
    let (user, table) = (format!("{name}_u"), format!("{name}_t"));
    let admin = MySqlStore::connect_with(&url, MySqlOptions::new().table(&table))
        .await
        .expect("create the tables");
    let run = |sql: String| {
        let pool = admin.pool().clone();
        async move {
            stagecraft::store::sqlx::raw_sql(&sql)
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    };
    run(format!(
        "CREATE USER '{user}'@'%' IDENTIFIED BY 'own-secret'; \
         GRANT ALL ON `{table}` TO '{user}'@'%'; \
         GRANT ALL ON `{table}_lease` TO '{user}'@'%'"
    ))
    .await;

    let user_url = common::with_user(&url, &user, "own-secret");
    let refused = MySqlStore::connect(&user_url).await;
    assert!(
        matches!(&refused, Err(e) if e.is_store()),
        "the user may not create the default table, yet connect() succeeded: {refused:?}"
    );
    let store = MySqlStore::connect_with(&user_url, MySqlOptions::new().table(&table))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a user granted its tables could not start: {}",
                stagecraft::error::error_chain(&e)
            )
        });
    let v = store.save("k", b"mine", None).await.expect("save");
    assert_eq!(
        store.load("k").await.expect("load").map(|r| r.version),
        Some(v)
    );
    let taken = store
        .acquire_lease("k", Duration::from_secs(10))
        .await
        .expect("take a lease");
    let LeaseAttempt::Acquired(lease) = taken else {
        panic!("a free lease was busy");
    };
    assert!(store.release_lease(&lease).await.expect("release"));
    store.pool().close().await;

    run(format!(
        "DROP USER '{user}'@'%'; DROP TABLE IF EXISTS `{table}`, `{table}_lease`; DROP PROCEDURE IF EXISTS `{table}_take_v1`; DROP PROCEDURE IF EXISTS `{table}_save_v1`"
    ))
    .await;
}

/// The names of the conformance suite's hostile keys this store refuses.
async fn refused_keys<S: stagecraft::store::SessionStore + ?Sized>(store: &S) -> Vec<String> {
    conformance::check_hostile_keys(store)
        .await
        .into_iter()
        .filter(|(_, outcome)| *outcome != conformance::KeyOutcome::RoundTrips)
        .map(|(name, _)| name)
        .collect()
}

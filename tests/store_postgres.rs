//! The conformance suite on [`PostgresStore`], against `STAGECRAFT_POSTGRES_URL`.
//!
//! Unset: the server test prints one `skipped:` line and passes. Set but the server does
//! not answer: it fails. Each run uses its own table and drops it at the end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stagecraft::Error;
use stagecraft::clock::ManualClock;
use stagecraft::store::sqlx::postgres::{PgPool, PgPoolOptions};
use stagecraft::store::{PostgresStore, SessionStore};
use stagecraft::testing::conformance;

const VAR: &str = "STAGECRAFT_POSTGRES_URL";

async fn connect_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(16)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url)
        .await
        .unwrap_or_else(|e| panic!("{VAR} is set but the server does not answer: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_store() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let pool = connect_pool(&url).await;
    let table = common::unique_name("stagecraft_test");
    let store = PostgresStore::new(pool.clone())
        .with_table(&table)
        .expect("table name");
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("migrate again (idempotent)");

    let body = tokio::spawn({
        let store = store.clone();
        let table = table.clone();
        async move {
            conformance::run_all(store.clone()).await;
            conformance::check_leases(&store).await;
            assert_eq!(
                store
                    .clone()
                    .with_leases(false)
                    .acquire_lease("k", Duration::from_secs(1))
                    .await
                    .expect("acquire with leases off"),
                stagecraft::store::LeaseAttempt::Unsupported
            );

            let clock = ManualClock::at_secs(1_700_000_000);
            let ttl = Duration::from_secs(300);
            let ttl_store = store
                .clone()
                .with_ttl(ttl)
                .with_clock(Arc::new(clock.clone()));
            conformance::check_ttl(&ttl_store, &clock, ttl).await;
            clock.advance(ttl + Duration::from_millis(1));
            assert!(ttl_store.purge_expired().await.expect("purge") >= 1);
            assert_eq!(ttl_store.purge_expired().await.expect("purge"), 0);

            let other_pool = connect_pool(&url).await;
            let other = PostgresStore::new(other_pool.clone())
                .with_table(&table)
                .expect("table");
            conformance::check_shared(&store, &other).await;
            other_pool.close().await;
        }
    });
    let result = body.await;
    stagecraft::store::sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS \"{table}\", \"{table}_lease\""
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
    let pool = PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/none")
        .expect("pool");
    for bad in [
        "x; DROP TABLE y",
        "",
        "9lives",
        "a.b",
        "a\"b",
        &"t".repeat(64),
    ] {
        let result = PostgresStore::new(pool.clone()).with_table(bad);
        assert!(
            matches!(result, Err(Error::Config(_))),
            "table {bad:?} was accepted"
        );
    }
}

#[tokio::test]
async fn unreachable_server_is_a_store_error() {
    let pool = PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/test")
        .expect("pool");
    let store = PostgresStore::new(pool);
    let err = store.load("k").await.expect_err("load from a closed port");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
    let err = store.migrate().await.expect_err("migrate on a closed port");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
    let err = PostgresStore::connect("not a url")
        .await
        .expect_err("bad url");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
}

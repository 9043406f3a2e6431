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
use stagecraft::store::{
    LeaseAttempt, LeaseStore, PostgresOptions, PostgresStore, Preload, SessionStore,
};
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
            // Leases are on by default, so run_all checks them too.
            assert!(store.leases().is_some(), "leases are on by default");
            conformance::run_all(store.clone()).await;
            assert_eq!(
                refused_keys(&store).await,
                ["nul", "trailing nul", "4096 bytes", "64 KiB", "1 MiB"]
            );
            assert!(
                store.clone().with_leases(false).leases().is_none(),
                "leases switched off are still offered"
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
            let other = PostgresStore::new(other_pool.clone())
                .with_table(&table)
                .expect("table");
            conformance::check_shared(&store, &other).await;
            other_pool.close().await;
        }
    });
    let result = body.await;
    stagecraft::store::sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS \"{table}\", \"{table}_lease\"; \
         DROP FUNCTION IF EXISTS \"{table}_take_v1\"(text, text, bigint)"
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

/// The holder of key `k`'s lease writes the record with `write` (SQL, `{t}` is the table)
/// and releases the lease in one transaction, left open while the next acquirer's
/// statement starts and waits on the lease row; then it commits. Returns what the
/// acquirer read with its lease, and what a fresh read finds.
async fn acquire_while_holder_commits(
    store: &PostgresStore,
    pool: &PgPool,
    table: &str,
    write: &str,
) -> (
    Option<stagecraft::store::Record>,
    Option<stagecraft::store::Record>,
) {
    use stagecraft::store::LeaseAttempt;
    use stagecraft::store::sqlx;
    let ttl = Duration::from_secs(30);
    let (attempt, _) = store.acquire_lease_and_load("k", ttl).await.expect("lease");
    assert!(matches!(attempt, LeaseAttempt::Acquired(_)));

    let mut holder = pool.begin().await.expect("begin");
    sqlx::query(&write.replace("{t}", table))
        .execute(&mut *holder)
        .await
        .expect("the holder's write");
    sqlx::query(&format!(
        "DELETE FROM \"{table}_lease\" WHERE session_key = 'k'"
    ))
    .execute(&mut *holder)
    .await
    .expect("the holder's release");

    let next = tokio::spawn({
        let store = store.clone();
        async move { store.acquire_lease_and_load("k", ttl).await }
    });
    // Wait until the acquirer's statement is blocked on the lease row.
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity \
         WHERE wait_event_type = 'Lock' \
             AND (query LIKE '%{table}_lease%' OR query LIKE '%{table}_take_v1%')"
    );
    let mut blocked = false;
    for _ in 0..500 {
        let n: i64 = sqlx::query_scalar(&waiting)
            .fetch_one(pool)
            .await
            .expect("pg_stat_activity");
        if n > 0 {
            blocked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(blocked, "the acquirer never waited on the lease row");
    holder.commit().await.expect("commit");

    let (attempt, loaded) = next.await.expect("join").expect("acquire");
    let LeaseAttempt::Acquired(lease) = attempt else {
        panic!("the released lease was not taken: {attempt:?}");
    };
    assert!(store.release_lease(&lease).await.expect("release"));
    let Preload::Read(loaded) = loaded else {
        panic!("the record is not read with the lease");
    };
    (loaded, store.load("k").await.expect("load"))
}

/// Taking a lease and reading the record in one statement must not read a snapshot older
/// than the lease: the holder's last save (an update, a first insert, a delete) and its
/// release commit together while the next acquirer's statement waits on the lease row.
/// The acquirer must see that save, or its own save would be a compare-and-set conflict
/// (caught, but a needless rerun).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_and_load_sees_the_save_committed_while_it_waited() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let pool = connect_pool(&url).await;
    let table = common::unique_name("stagecraft_snap");
    let store = PostgresStore::new(pool.clone())
        .with_table(&table)
        .expect("table name");
    store.migrate().await.expect("migrate");

    let body = {
        let (store, pool, table) = (store.clone(), pool.clone(), table.clone());
        async move {
            // The holder created the record: the acquirer's snapshot has no row at all.
            let create = "INSERT INTO \"{t}\" (session_key, data, version) \
                          VALUES ('k', 'first'::bytea, 7)";
            let (read, now) = acquire_while_holder_commits(&store, &pool, &table, create).await;
            let read = read.expect("the created record");
            assert_eq!(read.bytes, b"first", "stale read of a created record");
            assert_eq!(Some(read.version), now.map(|n| n.version));

            // The holder updated it: the snapshot has the old version.
            let update = "UPDATE \"{t}\" SET data = 'second'::bytea, version = version + 1 \
                          WHERE session_key = 'k'";
            let (read, now) = acquire_while_holder_commits(&store, &pool, &table, update).await;
            let read = read.expect("the updated record");
            assert_eq!(read.bytes, b"second", "stale read of an updated record");
            assert_eq!(Some(read.version), now.map(|n| n.version));

            // The holder deleted it.
            let delete = "DELETE FROM \"{t}\" WHERE session_key = 'k'";
            let (read, now) = acquire_while_holder_commits(&store, &pool, &table, delete).await;
            assert!(now.is_none());
            assert!(read.is_none(), "stale read of a deleted record: {read:?}");

            // A row locked by someone else (an operator's open transaction) does not hold
            // up the acquirer while it holds the lease row: it reads the committed record.
            store.save("k", b"third", None).await.expect("save");
            let mut operator = pool.begin().await.expect("begin");
            stagecraft::store::sqlx::query(&format!(
                "SELECT 1 FROM \"{table}\" WHERE session_key = 'k' FOR UPDATE"
            ))
            .execute(&mut *operator)
            .await
            .expect("lock the row");
            let acquired = tokio::time::timeout(
                Duration::from_secs(20),
                store.acquire_lease_and_load("k", Duration::from_secs(30)),
            )
            .await
            .expect("the acquirer waited for an unrelated row lock")
            .expect("acquire");
            operator.rollback().await.expect("rollback");
            let stagecraft::store::LeaseAttempt::Acquired(lease) = acquired.0 else {
                panic!("not taken: {:?}", acquired.0);
            };
            assert!(store.release_lease(&lease).await.expect("release"));
            let Preload::Read(read) = acquired.1 else {
                panic!("the record is not read with the lease");
            };
            let read = read.expect("a record");
            assert_eq!(read.bytes, b"third");
        }
    };
    let result = tokio::spawn(body).await;
    let _ = stagecraft::store::sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS \"{table}\", \"{table}_lease\"; \
         DROP FUNCTION IF EXISTS \"{table}_take_v1\"(text, text, bigint)"
    ))
    .execute(&pool)
    .await;
    pool.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// When the record read with a lease cannot be used (here a negative version, written by
/// something else), `acquire_lease_and_load` fails with a store error and gives the lease
/// back instead of leaving the key blocked until the lease expires.
#[tokio::test]
async fn a_failed_read_with_the_lease_gives_the_lease_back() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let pool = connect_pool(&url).await;
    let table = common::unique_name("stagecraft_badrow");
    let store = PostgresStore::new(pool.clone())
        .with_table(&table)
        .expect("table name");
    store.migrate().await.expect("migrate");
    let body = {
        let (store, pool, table) = (store.clone(), pool.clone(), table.clone());
        async move {
            stagecraft::store::sqlx::query(&format!(
                "INSERT INTO \"{table}\" (session_key, data, version) VALUES ('k', 'x'::bytea, -5)"
            ))
            .execute(&pool)
            .await
            .expect("write a foreign row");
            let ttl = Duration::from_secs(30);
            let err = store
                .acquire_lease_and_load("k", ttl)
                .await
                .expect_err("a negative version");
            assert!(err.is_store(), "expected Error::Store, got {err:?}");
            let attempt = store.acquire_lease("k", ttl).await.expect("acquire");
            let stagecraft::store::LeaseAttempt::Acquired(lease) = attempt else {
                panic!("the lease was kept after a failed read: {attempt:?}");
            };
            assert!(store.release_lease(&lease).await.expect("release"));
        }
    };
    let result = tokio::spawn(body).await;
    let _ = stagecraft::store::sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS \"{table}\", \"{table}_lease\"; \
         DROP FUNCTION IF EXISTS \"{table}_take_v1\"(text, text, bigint)"
    ))
    .execute(&pool)
    .await;
    pool.close().await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Stores starting at once on a fresh table all start: `CREATE TABLE/INDEX IF NOT
/// EXISTS` racing in PostgreSQL's catalog (`duplicate key value violates unique
/// constraint "pg_type_typname_nsp_index"`) would fail some of them.
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
                let store = PostgresStore::new(pool).with_table(&table)?;
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
            "DROP TABLE IF EXISTS \"{table}\", \"{table}_lease\"; \
         DROP FUNCTION IF EXISTS \"{table}_take_v1\"(text, text, bigint)"
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
    common::assert_refused_fast(PostgresStore::connect(
        "postgres://postgres@127.0.0.1:1/test",
    ))
    .await;
}

/// A migration that another client holds uncommitted (one that takes no advisory lock:
/// an older build, an operator) makes the stores' `CREATE … IF NOT EXISTS` wait on the
/// catalog and then hit its unique index: they start all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_start_while_another_client_creates_their_table() {
    use stagecraft::store::sqlx::{self, Acquire};
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let table = common::unique_name("race_held");
    let admin = connect_pool(&url).await;
    let mut conn = admin.acquire().await.unwrap();
    let mut tx = conn.begin().await.unwrap();
    sqlx::raw_sql(&format!(
        "CREATE TABLE \"{table}\" (session_key TEXT COLLATE \"C\" NOT NULL PRIMARY KEY, \
         data BYTEA NOT NULL, version BIGINT NOT NULL, expires_at BIGINT)"
    ))
    .execute(&mut *tx)
    .await
    .unwrap();
    let mut starts = Vec::new();
    for _ in 0..4 {
        let (pool, table) = (connect_pool(&url).await, table.clone());
        starts.push(tokio::spawn(async move {
            PostgresStore::new(pool).with_table(&table)?.migrate().await
        }));
    }
    // Until every store waits on the uncommitted catalog rows (at most 10 s).
    for _ in 0..100 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
             AND query LIKE '%CREATE TABLE IF NOT EXISTS%'",
        )
        .fetch_one(&admin)
        .await
        .unwrap();
        if waiting >= 1 {
            break; // the first waits on the catalog, the others behind it
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tx.commit().await.unwrap();
    drop(conn);
    for s in starts {
        if let Err(e) = s.await.expect("the start task") {
            panic!(
                "a store failed to start: {}",
                stagecraft::error::error_chain(&e)
            );
        }
    }
    sqlx::raw_sql(&format!(
        "DROP TABLE IF EXISTS \"{table}\", \"{table}_lease\"; \
         DROP FUNCTION IF EXISTS \"{table}_take_v1\"(text, text, bigint)"
    ))
    .execute(&admin)
    .await
    .unwrap();
}

/// A role that owns only its session and lease tables, in a schema where it may not
/// create anything, starts a store on them with `connect_with`, and uses it. Touching
/// any other table (creating it, or even `CREATE TABLE IF NOT EXISTS` on one that
/// exists) is refused to it: `connect`, which opens the default table, fails.
#[tokio::test]
async fn a_role_owning_only_its_tables_starts() {
    use stagecraft::store::sqlx::postgres::PgConnectOptions;
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let name = common::unique_name("own");
    let (role, schema, table) = (
        format!("{name}_role"),
        format!("{name}_schema"),
        format!("{name}_t"),
    );
    let admin = connect_pool(&url).await;
    let run = |sql: String| {
        let admin = admin.clone();
        async move {
            stagecraft::store::sqlx::raw_sql(&sql)
                .execute(&admin)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    };
    run(format!(
        "CREATE ROLE \"{role}\" LOGIN PASSWORD 'own-secret'; \
         CREATE SCHEMA \"{schema}\"; \
         GRANT USAGE ON SCHEMA \"{schema}\" TO \"{role}\"; \
         ALTER ROLE \"{role}\" SET search_path = \"{schema}\""
    ))
    .await;
    // The administrator creates the tables in that schema and gives them to the role.
    let in_schema: PgConnectOptions = url.parse().expect("the URL");
    let in_schema = in_schema.options([("search_path", schema.as_str())]);
    let creator = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(in_schema)
        .await
        .expect("connect in the schema");
    let created = PostgresStore::new(creator.clone())
        .with_table(&table)
        .unwrap();
    created.migrate().await.expect("create the tables");
    creator.close().await;
    run(format!(
        "ALTER TABLE \"{schema}\".\"{table}\" OWNER TO \"{role}\"; \
         ALTER TABLE \"{schema}\".\"{table}_lease\" OWNER TO \"{role}\""
    ))
    .await;

    let role_url = common::with_user(&url, &role, "own-secret");
    let refused = PostgresStore::connect(&role_url).await;
    assert!(
        matches!(&refused, Err(e) if e.is_store()),
        "the role may not create the default table, yet connect() succeeded: {refused:?}"
    );
    let store = PostgresStore::connect_with(&role_url, PostgresOptions::new().table(&table))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "a role owning its tables could not start: {}",
                stagecraft::error::error_chain(&e)
            )
        });
    let v = store.save("k", b"mine", None).await.expect("save");
    assert_eq!(
        store.load("k").await.expect("load").map(|r| r.version),
        Some(v)
    );
    let ttl = Duration::from_secs(10);
    let (taken, _) = store
        .acquire_lease_and_load("k", ttl)
        .await
        .expect("take a lease");
    let LeaseAttempt::Acquired(lease) = taken else {
        panic!("a free lease was busy");
    };
    assert!(store.release_lease(&lease).await.expect("release"));
    store.pool().close().await;

    run(format!(
        "DROP SCHEMA \"{schema}\" CASCADE; DROP ROLE \"{role}\""
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

//! The conformance suite and SQLite-specific checks on [`SqliteStore`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use stagecraft::Error;
use stagecraft::clock::ManualClock;
use stagecraft::store::sqlx::sqlite::SqlitePoolOptions;
use stagecraft::store::{
    Durability, LeaseAttempt, Preload, SessionStore, SqliteOptions, SqliteStore,
};
use stagecraft::testing::conformance;

/// A unique database path in the temp dir, removed (with its WAL files) on drop.
struct TempDb(PathBuf);

impl TempDb {
    fn new(tag: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("stagecraft-{tag}-{}-{nanos}.db", std::process::id());
        Self(std::env::temp_dir().join(name))
    }
}

impl Drop for TempDb {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            let _ = std::fs::remove_file(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_on_a_file() {
    let db = TempDb::new("conformance");
    let store = SqliteStore::open(&db.0).await.expect("open");
    conformance::run_all(store.clone()).await;
    store.pool().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_in_memory() {
    let store = SqliteStore::open("sqlite::memory:").await.expect("open");
    conformance::run_all(store.clone()).await;
    assert_eq!(refused_keys(&store).await, Vec::<String>::new());
}

/// Without group commit, leases (like saves) are single autocommit statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_without_group_commit() {
    let db = TempDb::new("ungrouped");
    let options = SqliteOptions::new().group_commit(false);
    let store = SqliteStore::open_with(&db.0, options).await.expect("open");
    conformance::run_all(store.clone()).await;
    store.pool().close().await;
}

/// Leases are on by default (so `run_all` checks them), off on request; they are
/// shared by every pool on the file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_are_on_by_default_and_shared_by_the_file() {
    let db = TempDb::new("leases");
    let a = SqliteStore::open(&db.0).await.expect("open a");
    assert!(a.leases().is_some(), "leases are on by default");
    assert!(a.clone().with_leases(false).leases().is_none());
    let off = SqliteStore::open_with(&db.0, SqliteOptions::new().leases(false))
        .await
        .expect("open without leases");
    assert!(off.leases().is_none(), "SqliteOptions::leases(false)");
    let b = SqliteStore::open(&db.0).await.expect("open b");
    let ttl = Duration::from_secs(10);
    let va = a.save("k", b"one", None).await.expect("save");
    let (taken, preload) = a
        .leases()
        .unwrap()
        .acquire_lease_and_load("k", ttl)
        .await
        .expect("acquire on a");
    let LeaseAttempt::Acquired(lease) = taken else {
        panic!("a free lease was busy");
    };
    assert_eq!(
        preload,
        Preload::Read(Some(stagecraft::store::Record {
            bytes: b"one".to_vec(),
            version: va
        }))
    );
    let on_b = b.leases().unwrap().acquire_lease("k", ttl).await;
    assert_eq!(
        on_b.expect("acquire on b"),
        LeaseAttempt::Busy,
        "b took a's lease"
    );
    assert!(
        a.leases()
            .unwrap()
            .release_lease(&lease)
            .await
            .expect("release")
    );
    let on_b = b.leases().unwrap().acquire_lease("k", ttl).await;
    assert!(matches!(on_b, Ok(LeaseAttempt::Acquired(_))), "{on_b:?}");
    for store in [a, b, off] {
        store.pool().close().await;
    }
}

/// A store on its own table creates and touches that table and its leases' table only.
#[tokio::test]
async fn a_named_table_is_the_only_one_created() {
    let db = TempDb::new("named");
    let store = SqliteStore::open_with(&db.0, SqliteOptions::new().table("bot_sessions"))
        .await
        .expect("open");
    let tables: Vec<String> = stagecraft::store::sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name",
    )
    .fetch_all(store.pool())
    .await
    .expect("tables");
    assert_eq!(tables, ["bot_sessions", "bot_sessions_lease"]);
    store.pool().close().await;
}

#[tokio::test]
async fn ttl_on_a_virtual_clock_and_purge() {
    let db = TempDb::new("ttl");
    let clock = ManualClock::at_secs(1_700_000_000);
    let ttl = Duration::from_secs(300);
    let store = SqliteStore::open(&db.0)
        .await
        .expect("open")
        .with_ttl(ttl)
        .with_clock(Arc::new(clock.clone()));
    conformance::check_ttl(&store, &clock, ttl).await;
    conformance::check_cache_hint(&store, Some(&clock)).await;

    // Let everything check_ttl left expire, and purge it.
    clock.advance(ttl + Duration::from_millis(1));
    assert!(store.purge_expired().await.expect("purge") >= 1);
    for i in 0..3 {
        store
            .save(&format!("purge/{i}"), b"x", None)
            .await
            .expect("save");
    }
    assert_eq!(
        store.purge_expired().await.expect("purge"),
        0,
        "purged live rows"
    );
    clock.advance(ttl + Duration::from_millis(1));
    assert_eq!(store.purge_expired().await.expect("purge"), 3);
    let rows: i64 =
        stagecraft::store::sqlx::query_scalar("SELECT COUNT(*) FROM stagecraft_sessions")
            .fetch_one(store.pool())
            .await
            .expect("count");
    assert_eq!(rows, 0, "purge_expired left expired rows");
    store.pool().close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_pools_on_one_file() {
    let db = TempDb::new("shared");
    let a = SqliteStore::open(&db.0).await.expect("open a");
    let b = SqliteStore::open(&db.0).await.expect("open b");
    conformance::check_shared(&a, &b).await;
    a.pool().close().await;
    b.pool().close().await;
}

/// The statements of the pooled path (sqlx's worker threads, grouped or alone), with the
/// inline connection off.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_without_inline() {
    for group_commit in [true, false] {
        let db = TempDb::new("pooled");
        let options = SqliteOptions::new()
            .inline(false)
            .group_commit(group_commit);
        let store = SqliteStore::open_with(&db.0, options).await.expect("open");
        conformance::run_all(store.clone()).await;
        store.pool().close().await;
    }
}

/// A statement that meets a write lock held elsewhere (here by a connection of the pool,
/// as another process would) is not lost and does not fail: it waits on the pooled path
/// until the lock is gone, and then writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_elsewhere_makes_a_statement_wait_not_fail() {
    use stagecraft::store::LeaseStore;
    use stagecraft::store::sqlx;
    let db = TempDb::new("locked");
    for group_commit in [true, false] {
        let options = SqliteOptions::new().group_commit(group_commit);
        let store = SqliteStore::open_with(&db.0, options).await.expect("open");
        let key = format!("locked:{group_commit}");
        let v1 = store.save(&key, b"1", None).await.expect("save");

        let mut holder = store.pool().acquire().await.expect("a connection");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *holder)
            .await
            .expect("take the write lock");
        let save = tokio::spawn({
            let (store, key) = (store.clone(), key.clone());
            async move { store.save(&key, b"2", Some(v1)).await }
        });
        let take = tokio::spawn({
            let (store, key) = (store.clone(), format!("{key}:lease"));
            async move { store.acquire_lease(&key, Duration::from_secs(30)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!save.is_finished(), "the save waits for the lock");
        assert!(!take.is_finished(), "the lease take waits for the lock");
        sqlx::query("COMMIT")
            .execute(&mut *holder)
            .await
            .expect("give the lock back");
        drop(holder);

        let v2 = save.await.expect("joined").expect("the save wrote");
        assert_eq!(v2, v1.next());
        let loaded = store.load(&key).await.expect("load").expect("a record");
        assert_eq!((loaded.version, loaded.bytes), (v2, b"2".to_vec()));
        let taken = take.await.expect("joined").expect("the take ran");
        assert!(matches!(taken, LeaseAttempt::Acquired(_)), "{taken:?}");
        store.pool().close().await;
    }
}

/// A call that comes alone runs on the store's own connection, on the caller's thread:
/// with the pool's only connection taken, a save, a load and a lease take still go
/// through, while with that connection off (`inline(false)`) the save waits for the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_alone_needs_no_pooled_connection() {
    use stagecraft::store::LeaseStore;
    let db = TempDb::new("alone");
    for group_commit in [true, false] {
        let options = SqliteOptions::new()
            .max_connections(1)
            .group_commit(group_commit);
        let store = SqliteStore::open_with(&db.0, options).await.expect("open");
        let key = format!("alone:{group_commit}");
        let held = store.pool().acquire().await.expect("the only connection");
        let inline = async {
            let v = store.save(&key, b"1", None).await.expect("save");
            let loaded = store.load(&key).await.expect("load").expect("a record");
            assert_eq!(loaded.version, v);
            let taken = store
                .acquire_lease(&format!("{key}:lease"), Duration::from_secs(30))
                .await
                .expect("take");
            assert!(matches!(taken, LeaseAttempt::Acquired(_)), "{taken:?}");
        };
        // Without the inline path these would wait for `held` for ever.
        tokio::time::timeout(Duration::from_secs(30), inline)
            .await
            .expect("the calls ran without a pooled connection");
        drop(held);
        store.pool().close().await;
    }

    let options = SqliteOptions::new()
        .max_connections(1)
        .group_commit(false)
        .inline(false);
    let store = SqliteStore::open_with(&db.0, options).await.expect("open");
    let held = store.pool().acquire().await.expect("the only connection");
    let save = tokio::spawn({
        let store = store.clone();
        async move { store.save("pooled", b"1", None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !save.is_finished(),
        "on the pooled path the save waits for the pool"
    );
    drop(held);
    save.await.expect("joined").expect("the save wrote");
    store.pool().close().await;
}

/// Inline commits never checkpoint the WAL themselves; the checkpointer thread does, so
/// the WAL file stays far below what thousands of commits would make it.
#[tokio::test]
async fn the_wal_is_checkpointed_behind_inline_commits() {
    let db = TempDb::new("checkpoint");
    let store = SqliteStore::open_with(&db.0, SqliteOptions::new().group_commit(false))
        .await
        .expect("open");
    let session = vec![b'x'; 300];
    let mut version = None;
    let saves = 6_000;
    for _ in 0..saves {
        version = Some(store.save("k", &session, version).await.expect("save"));
    }
    let mut wal = db.0.clone().into_os_string();
    wal.push("-wal");
    let bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    // Without checkpoints, each commit appends at least one 4 KiB page: 24 MB here.
    let unchecked = saves * 4096;
    assert!(
        bytes < unchecked / 3,
        "the WAL is {bytes} bytes after {saves} commits"
    );
    assert_eq!(
        store.load("k").await.expect("load").map(|r| r.version),
        version
    );
    store.pool().close().await;
}

#[tokio::test]
async fn options_table_and_durability() {
    let db = TempDb::new("options");
    let options = SqliteOptions::new()
        .durability(Durability::Full)
        .table("bot_sessions");
    let store = SqliteStore::open_with(&db.0, options).await.expect("open");
    assert_eq!(store.table(), "bot_sessions");
    let sync: i64 = stagecraft::store::sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(sync, 2, "Durability::Full is synchronous = FULL");
    let mode: String = stagecraft::store::sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(store.pool())
        .await
        .expect("pragma");
    assert_eq!(mode, "wal");
    store.migrate().await.expect("migrate is idempotent");
    let v = store.save("k", b"v", None).await.expect("save");
    assert_eq!(
        store.load("k").await.expect("load").map(|l| l.version),
        Some(v)
    );
    store.pool().close().await;

    let default = SqliteStore::open(&db.0).await.expect("open");
    let sync: i64 = stagecraft::store::sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(default.pool())
        .await
        .expect("pragma");
    assert_eq!(sync, 1, "the default is synchronous = NORMAL");
    default.pool().close().await;
}

#[tokio::test]
async fn rejects_bad_table_names() {
    let pool = SqlitePoolOptions::new()
        .connect_lazy("sqlite::memory:")
        .expect("pool");
    for bad in [
        "x; DROP TABLE y",
        "",
        "1abc",
        "a-b",
        "a\"b",
        &"t".repeat(64),
    ] {
        let result = SqliteStore::new(pool.clone()).with_table(bad);
        assert!(
            matches!(result, Err(Error::Config(_))),
            "table {bad:?} was accepted"
        );
    }
    let result = SqliteStore::open_with(
        "sqlite::memory:",
        SqliteOptions::new().table("x; DROP TABLE y"),
    )
    .await;
    assert!(matches!(result, Err(Error::Config(_))));
    assert!(SqliteStore::new(pool).with_table("Good_name_2").is_ok());
}

#[tokio::test]
async fn unopenable_file_is_a_store_error() {
    let path = std::env::temp_dir()
        .join("stagecraft-no-such-dir")
        .join("x")
        .join("bot.db");
    match SqliteStore::open(&path).await {
        Err(e) => assert!(e.is_store(), "expected Error::Store, got {e:?}"),
        Ok(_) => panic!("opened a database in a directory that does not exist"),
    }
}

/// Rows written by something else whose columns do not decode (a version that is not an
/// integer, data that is not bytes, an expiry that is not an integer) are a store error
/// for the loads of their keys, whether the grouped reader answers them together or the
/// store reads them one by one; never an absent record. Loads of other keys answered in
/// the same group are unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_row_is_a_store_error_grouped_or_not() {
    let keys = ["good", "bad_version", "bad_data", "bad_expiry"];
    for group_commit in [true, false] {
        let store = SqliteStore::open_with(
            "sqlite::memory:",
            SqliteOptions::new().group_commit(group_commit),
        )
        .await
        .expect("open");
        let v = store.save("good", b"fine", None).await.expect("save");
        for (key, values) in [
            ("bad_version", "x'00', 'not a number', NULL"),
            ("bad_data", "42, 1, NULL"),
            ("bad_expiry", "x'00', 1, 'later'"),
        ] {
            stagecraft::store::sqlx::query(&format!(
                "INSERT INTO stagecraft_sessions (session_key, data, version, expires_at) \
                 VALUES ('{key}', {values})"
            ))
            .execute(store.pool())
            .await
            .expect("write a foreign row");
        }
        let check = |key: &str, loaded: stagecraft::Result<Option<stagecraft::store::Record>>| {
            if key == "good" {
                let record = loaded.expect("load of a good row").expect("a record");
                assert_eq!((record.bytes, record.version), (b"fine".to_vec(), v));
            } else {
                match loaded {
                    Err(e) => assert!(e.is_store(), "{key}: expected Error::Store, got {e:?}"),
                    Ok(r) => panic!("{key} (group commit {group_commit}): loaded as {r:?}"),
                }
            }
        };
        // At once (one group for the grouped reader), several times over.
        for _ in 0..3 {
            let loads = keys.iter().map(|k| store.load(k));
            let results = futures_util::future::join_all(loads).await;
            for (key, loaded) in keys.iter().zip(results) {
                check(key, loaded);
            }
        }
        // One by one.
        for key in keys {
            check(key, store.load(key).await);
        }
        // Read with the lease: the same error, and the lease is given back.
        let leases = store.leases().expect("leases");
        let ttl = Duration::from_secs(10);
        for key in keys {
            let taken = leases.acquire_lease_and_load(key, ttl).await;
            if key == "good" {
                let (LeaseAttempt::Acquired(lease), Preload::Read(record)) = taken.expect("take")
                else {
                    panic!("the lease of a good row was not taken with its record");
                };
                assert_eq!(record.map(|r| r.version), Some(v));
                assert!(leases.release_lease(&lease).await.expect("release"));
                continue;
            }
            match taken {
                Err(e) => assert!(e.is_store(), "{key}: expected Error::Store, got {e:?}"),
                Ok(r) => panic!("{key} (group commit {group_commit}): taken as {r:?}"),
            }
            let again = leases.acquire_lease(key, ttl).await.expect("acquire");
            assert!(
                matches!(again, LeaseAttempt::Acquired(_)),
                "{key}: the lease taken with an undecodable row was kept"
            );
        }
        store.pool().close().await;
    }
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

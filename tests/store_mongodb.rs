//! The conformance suite on [`MongoStore`], against `STAGECRAFT_MONGODB_URL`.
//!
//! Unset: the server test prints one `skipped:` line and passes. Set but the server does
//! not answer: it fails. Each run uses its own collections and drops them at the end.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stagecraft::Error;
use stagecraft::clock::{Clock, ManualClock, SystemClock};
use stagecraft::store::mongodb::bson::spec::BinarySubtype;
use stagecraft::store::mongodb::bson::{Binary, Document, doc};
use stagecraft::store::{LeaseAttempt, LeaseStore, MongoOptions, MongoStore, SessionStore};
use stagecraft::testing::conformance;

const VAR: &str = "STAGECRAFT_MONGODB_URL";

async fn connect(url: &str, collection: &str) -> MongoStore {
    MongoStore::connect_with(url, MongoOptions::new().collection(collection))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{VAR} is set but the server does not answer: {}",
                stagecraft::error::error_chain(&e)
            )
        })
}

/// Drops the store's collection and its leases' collection.
async fn drop_collections(store: &MongoStore) {
    let db = store.database();
    for name in [store.collection(), store.lease_collection()] {
        db.collection::<Document>(name)
            .drop()
            .await
            .unwrap_or_else(|e| panic!("drop {name}: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_store() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let collection = common::unique_name("stagecraft_test");
    let store = connect(&url, &collection).await;
    assert_eq!(store.collection(), collection);
    assert_eq!(store.lease_collection(), format!("{collection}_lease"));
    store.migrate().await.expect("migrate again (idempotent)");

    let body = tokio::spawn({
        let store = store.clone();
        let url = url.clone();
        let collection = collection.clone();
        async move {
            // Leases are on by default, so run_all checks them too.
            assert!(store.leases().is_some(), "leases are on by default");
            conformance::run_all(store.clone()).await;
            assert!(
                store.clone().with_leases(false).leases().is_none(),
                "leases switched off are still offered"
            );

            // Documents written by something else: loading one is a store error naming
            // the key, never a panic, and its lease is still free.
            let raw = store.database().collection::<Document>(&collection);
            raw.insert_many([
                doc! { "_id": "foreign-text", "d": "not binary", "v": 1_i64 },
                doc! { "_id": "foreign-version", "d": Binary { subtype: BinarySubtype::Generic, bytes: b"x".to_vec() }, "v": "abc" },
                doc! { "_id": "foreign-bare" },
            ])
            .await
            .expect("write foreign documents");
            for key in ["foreign-text", "foreign-version", "foreign-bare"] {
                let err = store.load(key).await.expect_err("a malformed document");
                assert!(err.is_store(), "expected Error::Store, got {err:?}");
                let chain = stagecraft::error::error_chain(&err);
                assert!(chain.contains(key), "the key is named: {chain}");
            }
            let leases = store.leases().expect("leases");
            match leases
                .acquire_lease("foreign-text", Duration::from_secs(30))
                .await
                .expect("acquire")
            {
                LeaseAttempt::Acquired(lease) => {
                    assert!(leases.release_lease(&lease).await.expect("release"));
                }
                other => panic!("the lease of a foreign document is busy: {other:?}"),
            }
            raw.delete_many(doc! { "_id": { "$regex": "^foreign-" } })
                .await
                .expect("delete foreign documents");

            // TTL on a virtual clock that starts now (the server's TTL monitor deletes
            // by its own clock, so the store's must not lag behind it).
            let clock = ManualClock::at_secs(SystemClock.now_s());
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

            // TTL on real time, checked on read (the TTL monitor may run much later).
            let real = store.clone().with_ttl(Duration::from_millis(1200));
            conformance::check_ttl_real_time(&real, Duration::from_millis(1200)).await;

            let other = connect(&url, &collection).await;
            conformance::check_shared(&store, &other).await;

            // Another collection is another namespace.
            let elsewhere = connect(&url, &format!("{collection}_elsewhere")).await;
            store.save("ns-check", b"x", None).await.expect("save");
            assert_eq!(elsewhere.load("ns-check").await.expect("load"), None);
            let listed = elsewhere.list(&Default::default()).await.expect("list");
            assert!(listed.is_empty(), "another collection listed: {listed:?}");
            drop_collections(&elsewhere).await;
        }
    });
    let result = body.await;
    drop_collections(&store).await;
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test body: {e}");
    }
}

#[tokio::test]
async fn unreachable_server_is_a_store_error() {
    common::assert_refused_fast(MongoStore::connect("mongodb://127.0.0.1:1")).await;
    let err = MongoStore::connect("not a url").await.expect_err("bad url");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
}

#[tokio::test]
async fn rejects_bad_names_before_connecting() {
    for bad in ["", "1a", "a b", "a$b", "system.users", &"c".repeat(101)] {
        let result =
            MongoStore::connect_with("mongodb://127.0.0.1:1", MongoOptions::new().collection(bad))
                .await;
        assert!(
            matches!(result, Err(Error::Config(_))),
            "collection {bad:?}: {result:?}"
        );
    }
    let result =
        MongoStore::connect_with("mongodb://127.0.0.1:1", MongoOptions::new().database("a.b"))
            .await;
    assert!(matches!(result, Err(Error::Config(_))), "{result:?}");
}

/// A store with its own collection writes its records and leases there only (connecting
/// creates its two collections and nothing else).
#[tokio::test]
async fn a_store_touches_only_its_collections() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let name = common::unique_name("own");
    let store = connect(&url, &name).await;
    let key = format!("k_{name}");
    store.save(&key, b"mine", None).await.expect("save");
    let taken = store
        .acquire_lease(&key, Duration::from_secs(10))
        .await
        .expect("take a lease");
    assert!(matches!(taken, LeaseAttempt::Acquired(_)), "{taken:?}");
    let db = store.database();
    let mut ours: Vec<String> = db
        .list_collection_names()
        .await
        .expect("list collections")
        .into_iter()
        .filter(|c| c.contains(&name))
        .collect();
    ours.sort();
    assert_eq!(ours, [name.clone(), format!("{name}_lease")]);
    let default = db.collection::<Document>("stagecraft_sessions");
    let found = default
        .find_one(doc! { "_id": &key })
        .await
        .expect("find in the default collection");
    assert!(
        found.is_none(),
        "the record was written to the default collection"
    );
    drop_collections(&store).await;
}

/// Eight stores starting together on fresh collections all start (each creates the
/// indexes, racing the others), and the indexes exist once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stores_starting_at_once_on_fresh_collections() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let name = common::unique_name("fresh");
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let (url, name) = (url.clone(), name.clone());
            tokio::spawn(async move {
                MongoStore::connect_with(&url, MongoOptions::new().collection(name)).await
            })
        })
        .collect();
    let mut stores = Vec::new();
    for s in starts {
        match s.await.expect("the start task") {
            Ok(store) => stores.push(store),
            Err(e) => panic!(
                "a store failed to start: {}",
                stagecraft::error::error_chain(&e)
            ),
        }
    }
    let store = &stores[0];
    for coll in [store.collection(), store.lease_collection()] {
        let names = store
            .database()
            .collection::<Document>(coll)
            .list_index_names()
            .await
            .expect("list indexes");
        assert_eq!(
            names.iter().filter(|n| n.contains("expires_at")).count(),
            1,
            "{coll}: {names:?}"
        );
    }
    drop_collections(store).await;
}

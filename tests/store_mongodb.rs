//! The conformance suite on [`MongoStore`], against `STAGECRAFT_MONGODB_URL`.
//!
//! Unset: the server test prints one `skipped:` line and passes. Set but the server does
//! not answer: it fails. Each run uses its own collections and drops them at the end.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use stagecraft::Error;
use stagecraft::clock::{Clock, ManualClock, SystemClock};
use stagecraft::store::mongodb::bson::spec::BinarySubtype;
use stagecraft::store::mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use stagecraft::store::mongodb::event::EventHandler;
use stagecraft::store::mongodb::event::command::CommandEvent;
use stagecraft::store::mongodb::options::ClientOptions;
use stagecraft::store::mongodb::{Client, Database};
use stagecraft::store::{
    Lease, LeaseAttempt, LeaseStore, MongoOptions, MongoStore, PendingIndex, Preload, SessionStore,
};
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

/// Drops the store's collection (which holds its leases too).
async fn drop_collections(store: &MongoStore) {
    let name = store.collection();
    store
        .database()
        .collection::<Document>(name)
        .drop()
        .await
        .unwrap_or_else(|e| panic!("drop {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_store() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let collection = common::unique_name("stagecraft_test");
    let store = connect(&url, &collection).await;
    assert_eq!(store.collection(), collection);
    store.migrate().await.expect("migrate again (idempotent)");

    let body = tokio::spawn({
        let store = store.clone();
        let url = url.clone();
        let collection = collection.clone();
        async move {
            // Leases are on by default, so run_all checks them too.
            assert!(store.leases().is_some(), "leases are on by default");
            conformance::run_all(store.clone()).await;
            // Both ways of taking a lease, each sending what it should.
            run_all_find_and_modify(&url, false).await;
            run_all_find_and_modify(&url, true).await;
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
/// creates that collection and nothing else).
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
    assert_eq!(ours, [name.as_str()]);
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
    let coll = store.collection();
    let names = store
        .database()
        .collection::<Document>(coll)
        .list_index_names()
        .await
        .expect("list indexes");
    for index in ["expires_at", "pending"] {
        assert_eq!(
            names.iter().filter(|n| n.contains(index)).count(),
            1,
            "{coll}: {names:?}"
        );
    }
    drop_collections(store).await;
}

/// A client that counts the `findAndModify` commands it sends (the driver's command
/// monitoring), named `app` to the server when given, and a database handle on it.
async fn counting_client(url: &str, app: Option<String>) -> (Database, Arc<AtomicUsize>) {
    let mut options = ClientOptions::parse(url).await.expect("parse the URL");
    options.app_name = app;
    let fam = Arc::new(AtomicUsize::new(0));
    options.command_event_handler = Some(EventHandler::callback({
        let fam = Arc::clone(&fam);
        move |event| {
            if let CommandEvent::Started(started) = event {
                if started.command_name.eq_ignore_ascii_case("findAndModify") {
                    fam.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }));
    let client = Client::with_options(options).expect("client");
    let db = client
        .default_database()
        .unwrap_or_else(|| client.database("stagecraft"));
    (db, fam)
}

/// The conformance suite with `findAndModify` switched on (`true`, the default) or off
/// (`false`: the lease taken by `update_one`, the record read by `find`), on a
/// collection of its own; the client sends some `findAndModify` commands in the first
/// case and none in the second. Run within `mongodb_store`, one suite after the other:
/// the suite's lease checks time leases of a few hundred milliseconds, which two suites
/// at once on a slow server may exceed.
async fn run_all_find_and_modify(url: &str, on: bool) {
    let (db, fam) = counting_client(url, None).await;
    let collection = common::unique_name("fam");
    let store = MongoStore::new(db)
        .with_collection(&collection)
        .expect("collection")
        .with_find_and_modify(on);
    store.migrate().await.expect("migrate");
    let body = tokio::spawn({
        let store = store.clone();
        async move { conformance::run_all(store).await }
    });
    let result = body.await;
    drop_collections(&store).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    let sent = fam.load(Ordering::Relaxed);
    if on {
        assert!(sent > 0, "findAndModify is on but was never sent");
    } else {
        assert_eq!(sent, 0, "findAndModify is off but was sent");
    }
}

/// The document of `key` as stored.
async fn raw_doc(store: &MongoStore, key: &str) -> Option<Document> {
    store
        .database()
        .collection::<Document>(store.collection())
        .find_one(doc! { "_id": key })
        .await
        .expect("find")
}

fn take(attempt: LeaseAttempt) -> Lease {
    match attempt {
        LeaseAttempt::Acquired(lease) => lease,
        LeaseAttempt::Busy => panic!("the lease is busy"),
    }
}

fn date(doc: &Document, field: &str) -> i64 {
    match doc.get(field) {
        Some(Bson::DateTime(at)) => at.timestamp_millis(),
        other => panic!("{field} is not a date: {other:?} in {doc:?}"),
    }
}

/// The lease lives in the record's document: a key without a record gets a document
/// holding the lease only, which reads as no record everywhere and carries the lease's
/// end as its `expires_at` (for the TTL index); record documents of the older layout
/// (no lease fields) work; a plain save leaves a lease alone; a delete under someone
/// else's lease keeps it; a dead holder's document is taken over with a fresh
/// `expires_at`; purging leaves live leases alone.
#[tokio::test]
async fn leases_inside_the_records_documents() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    for fam in [true, false] {
        let collection = common::unique_name("inside");
        let store = connect(&url, &collection).await.with_find_and_modify(fam);
        let raw = store.database().collection::<Document>(&collection);
        let ttl = Duration::from_secs(30);
        let now = SystemClock.now_ms();

        // A lease on a key without a record: a document holding the lease only.
        let (attempt, preload) = store
            .acquire_lease_and_load("new", ttl)
            .await
            .expect("take");
        assert_eq!(preload, Preload::Read(None), "fam {fam}");
        let lease = take(attempt);
        let d = raw_doc(&store, "new").await.expect("a lease document");
        assert!(!d.contains_key("v") && !d.contains_key("d"), "{d:?}");
        assert_eq!(d.get_str("lease_token").unwrap(), lease.token());
        assert_eq!(date(&d, "expires_at"), date(&d, "lease_until"));
        assert!(date(&d, "expires_at") >= now + 29_000, "{d:?}");
        assert_eq!(store.load("new").await.expect("load"), None);
        let listed = store.list(&Default::default()).await.expect("list");
        assert!(listed.is_empty(), "a lease was listed: {listed:?}");
        let pending = store.pending_keys(i64::MAX / 2, 100).await.expect("due");
        assert!(pending.is_empty(), "a lease is due: {pending:?}");
        assert_eq!(
            store.acquire_lease("new", ttl).await.expect("take"),
            LeaseAttempt::Busy
        );
        // Renewed: its document lives as long as the lease.
        assert!(
            store
                .renew_lease(&lease, Duration::from_secs(120))
                .await
                .unwrap()
        );
        let d = raw_doc(&store, "new").await.expect("a lease document");
        assert_eq!(date(&d, "expires_at"), date(&d, "lease_until"));
        assert!(date(&d, "expires_at") >= now + 119_000, "{d:?}");
        // Given back: the document is gone.
        assert!(store.release_lease(&lease).await.expect("release"));
        assert_eq!(raw_doc(&store, "new").await, None);

        // A plain save (no lease) over someone's lease-only document keeps the lease,
        // and the record has no `expires_at` of the lease's (no TTL here).
        let holder = take(store.acquire_lease("k", ttl).await.expect("take"));
        let v1 = store.save("k", b"one", None).await.expect("save");
        let d = raw_doc(&store, "k").await.expect("doc");
        assert_eq!(d.get_str("lease_token").unwrap(), holder.token());
        assert!(!d.contains_key("expires_at"), "{d:?}");
        assert_eq!(
            store.acquire_lease("k", ttl).await.expect("take"),
            LeaseAttempt::Busy
        );
        let v2 = store.save("k", b"two", Some(v1)).await.expect("save");
        let d = raw_doc(&store, "k").await.expect("doc");
        assert_eq!(d.get_str("lease_token").unwrap(), holder.token());
        // A delete without the lease: the record goes, the holder's lease stays.
        store.delete("k", v2).await.expect("delete");
        assert_eq!(store.load("k").await.expect("load"), None);
        assert_eq!(
            store.acquire_lease("k", ttl).await.expect("take"),
            LeaseAttempt::Busy
        );
        let d = raw_doc(&store, "k").await.expect("the lease stays");
        assert_eq!(date(&d, "expires_at"), date(&d, "lease_until"), "{d:?}");
        // Someone else's delete releasing (another token) leaves it too.
        let other = Lease::with_token("k", "someone-else");
        store
            .delete_releasing("k", v2, &other)
            .await
            .expect("delete");
        assert_eq!(
            store.acquire_lease("k", ttl).await.expect("take"),
            LeaseAttempt::Busy
        );
        assert!(store.release_lease(&holder).await.expect("release"));
        assert_eq!(raw_doc(&store, "k").await, None);

        // An insert releasing with a token that is not the holder's (its lease was
        // lost and taken over): the record is written, the holder keeps the lease.
        let holder = take(store.acquire_lease("f", ttl).await.expect("take"));
        let lost = Lease::with_token("f", "lost");
        let v = store
            .save_releasing("f", b"first", None, None, &lost)
            .await
            .expect("insert releasing");
        let d = raw_doc(&store, "f").await.expect("doc");
        assert_eq!(d.get_str("lease_token").unwrap(), holder.token());
        assert_eq!(
            store.acquire_lease("f", ttl).await.expect("take"),
            LeaseAttempt::Busy
        );
        // The holder's own insert over it is a conflict that keeps the lease.
        let again = store.save_releasing("f", b"x", None, None, &holder).await;
        assert!(matches!(again, Err(Error::Conflict { .. })), "{again:?}");
        store
            .save_releasing("f", b"second", Some(v), None, &holder)
            .await
            .expect("save releasing");
        assert!(
            !raw_doc(&store, "f")
                .await
                .unwrap()
                .contains_key("lease_token")
        );

        // A record of the older layout (no lease fields): read, leased and saved.
        raw.insert_one(doc! {
            "_id": "old",
            "d": Binary { subtype: BinarySubtype::Generic, bytes: b"old".to_vec() },
            "v": 7_i64,
        })
        .await
        .expect("insert");
        let (attempt, preload) = store
            .acquire_lease_and_load("old", ttl)
            .await
            .expect("take");
        let Preload::Read(Some(record)) = preload else {
            panic!("the record was not read with the lease: {preload:?}");
        };
        assert_eq!(
            (record.bytes.as_slice(), record.version.0),
            (&b"old"[..], 7)
        );
        let lease = take(attempt);
        let v = store
            .save_releasing("old", b"new", Some(record.version), None, &lease)
            .await
            .expect("save releasing");
        let d = raw_doc(&store, "old").await.expect("doc");
        assert!(!d.contains_key("lease_token"), "the lease stayed: {d:?}");
        assert_eq!(store.load("old").await.unwrap().unwrap().version, v);

        // A dead holder's document (its lease and `expires_at` passed, the TTL monitor
        // not there yet): taken over, with the new lease's end as its `expires_at`.
        let past = DateTime::from_millis(now - 1_000);
        raw.insert_one(doc! {
            "_id": "dead", "lease_token": "dead", "lease_until": past, "expires_at": past,
        })
        .await
        .expect("insert");
        assert_eq!(store.load("dead").await.expect("load"), None);
        let (attempt, preload) = store
            .acquire_lease_and_load("dead", ttl)
            .await
            .expect("take");
        assert_eq!(preload, Preload::Read(None));
        let lease = take(attempt);
        let d = raw_doc(&store, "dead").await.expect("doc");
        assert_eq!(d.get_str("lease_token").unwrap(), lease.token());
        assert!(date(&d, "expires_at") >= now + 29_000, "{d:?}");
        // An expired record (the TTL monitor not there yet): the lease is taken, no
        // record is read, and the document holds the lease only, until the lease's end.
        raw.insert_one(doc! {
            "_id": "expired",
            "d": Binary { subtype: BinarySubtype::Generic, bytes: b"gone".to_vec() },
            "v": 3_i64,
            "expires_at": past,
        })
        .await
        .expect("insert");
        let (attempt, preload) = store
            .acquire_lease_and_load("expired", ttl)
            .await
            .expect("take");
        assert_eq!(preload, Preload::Read(None));
        let lease = take(attempt);
        let d = raw_doc(&store, "expired").await.expect("doc");
        assert!(!d.contains_key("v") && !d.contains_key("d"), "{d:?}");
        assert_eq!(d.get_str("lease_token").unwrap(), lease.token());
        assert!(date(&d, "expires_at") >= now + 29_000, "{d:?}");
        assert!(store.release_lease(&lease).await.expect("release"));
        assert_eq!(raw_doc(&store, "expired").await, None);

        // Purging (even by a clock a day ahead) leaves a live lease's document alone,
        // and removes one whose lease ended.
        let clock = ManualClock::at_secs(SystemClock.now_s() + 24 * 3600);
        let ahead = store
            .clone()
            .with_ttl(Duration::from_secs(60))
            .with_clock(Arc::new(clock));
        assert_eq!(
            ahead.purge_expired().await.expect("purge"),
            0,
            "no record expired"
        );
        assert!(
            raw_doc(&store, "dead").await.is_some(),
            "a live lease purged"
        );
        raw.update_one(
            doc! { "_id": "dead" },
            doc! { "$set": { "lease_until": past, "expires_at": past } },
        )
        .await
        .expect("expire the lease");
        ahead.purge_expired().await.expect("purge");
        assert_eq!(raw_doc(&store, "dead").await, None, "a dead lease stayed");

        drop_collections(&store).await;
    }
}

/// A server without `findAndModify`, played by SecantusDB's `failCommand` failpoint
/// (which needs `--enable-test-commands`, as `.ci/run` starts it; without it the test
/// prints one `skipped:` line): the failpoint answers `CommandNotFound` to the
/// `findAndModify` of this test's client only (its application name), and the store
/// falls back to `update_one` and `find`, once for all its clones, still reading the
/// record with the lease.
#[tokio::test]
async fn falls_back_where_the_server_has_no_find_and_modify() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    let app = common::unique_name("nofam");
    let admin = Client::with_uri_str(&url).await.expect("client");
    let failpoint = |mode: Bson| {
        doc! {
            "configureFailPoint": "failCommand",
            "mode": mode,
            "data": { "failCommands": ["findAndModify"], "errorCode": 59, "appName": &app },
        }
    };
    if let Err(e) = admin
        .database("admin")
        .run_command(failpoint(Bson::from("alwaysOn")))
        .await
    {
        println!("skipped: the server has no failCommand failpoint ({e})");
        return;
    }

    let (db, fam) = counting_client(&url, Some(app.clone())).await;
    let store = MongoStore::new(db)
        .with_collection(&common::unique_name("nofam"))
        .expect("collection");
    store.migrate().await.expect("migrate");
    let body = tokio::spawn({
        let store = store.clone();
        async move {
            let clone = store.clone();
            let ttl = Duration::from_secs(10);
            let v = store.save("a", b"one", None).await.expect("save");
            for (s, key) in [(&store, "a"), (&clone, "a"), (&store, "b")] {
                let (attempt, preload) = s.acquire_lease_and_load(key, ttl).await.expect("take");
                let lease = take(attempt);
                let expected = (key == "a").then(|| stagecraft::store::Record {
                    bytes: b"one".to_vec(),
                    version: v,
                });
                assert_eq!(preload, Preload::Read(expected), "{key}");
                assert!(s.release_lease(&lease).await.expect("release"));
            }
        }
    });
    let result = body.await;
    admin
        .database("admin")
        .run_command(failpoint(Bson::from("off")))
        .await
        .expect("switch the failpoint off");
    drop_collections(&store).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
    assert_eq!(
        fam.load(Ordering::Relaxed),
        1,
        "findAndModify was tried more than once (or never)"
    );
}

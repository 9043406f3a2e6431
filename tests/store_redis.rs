//! The conformance suite on [`RedisStore`], against `STAGECRAFT_REDIS_URL` (one server)
//! and `STAGECRAFT_REDIS_CLUSTER_URL` (a Redis Cluster, `redis-cluster://...`).
//!
//! Unset: the server test prints one `skipped:` line and passes. Set but the server does
//! not answer: it fails. Each run uses its own key prefix and deletes its keys at the end.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use stagecraft::Error;
use stagecraft::store::RedisStore;
use stagecraft::testing::conformance;

const VAR: &str = "STAGECRAFT_REDIS_URL";
const CLUSTER_VAR: &str = "STAGECRAFT_REDIS_CLUSTER_URL";

async fn connect(url: &str, prefix: &str) -> RedisStore {
    RedisStore::connect(url)
        .await
        .unwrap_or_else(|e| panic!("{url} is set but the server does not answer: {e:?}"))
        .with_prefix(prefix)
        .expect("prefix")
}

/// Deletes every key under `prefix`; returns how many.
async fn clean(store: &RedisStore, prefix: &str) -> usize {
    let mut conn = store.connection().clone();
    if store.is_cluster() {
        // KEYS goes to every master (and DEL to each key's), SCAN to one node only.
        let keys: Vec<Vec<u8>> = stagecraft::store::redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut conn)
            .await
            .expect("keys");
        if keys.is_empty() {
            return 0;
        }
        return stagecraft::store::redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .expect("del");
    }
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = stagecraft::store::redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .expect("scan");
        if !keys.is_empty() {
            let n: usize = stagecraft::store::redis::cmd("DEL")
                .arg(&keys)
                .query_async(&mut conn)
                .await
                .expect("del");
            deleted += n;
        }
        if next == 0 {
            return deleted;
        }
        cursor = next;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_store() {
    let Some(url) = common::server_url(VAR) else {
        return;
    };
    suite(&url, false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_cluster_store() {
    let Some(url) = common::server_url(CLUSTER_VAR) else {
        return;
    };
    suite(&url, true).await;
}

async fn suite(url: &str, cluster: bool) {
    let url = url.to_owned();
    let prefix = format!("{}:", common::unique_name("stagecraft_test"));
    let store = connect(&url, &prefix).await;
    assert_eq!(store.prefix(), prefix);
    assert_eq!(store.is_cluster(), cluster);

    let body = tokio::spawn({
        let store = store.clone();
        let prefix = prefix.clone();
        async move {
            // Leases are on by default, so run_all checks them too.
            assert!(store.leases().is_some(), "leases are on by default");
            conformance::run_all(store.clone()).await;
            assert_eq!(refused_keys(&store).await, Vec::<String>::new());
            assert!(
                store.clone().with_leases(false).leases().is_none(),
                "leases switched off are still offered"
            );

            // A record written by something else with a version that is not a number:
            // loading it is a store error, and taking its lease with it gives the lease
            // back instead of leaving the key blocked until the lease expires.
            let mut conn = store.connection().clone();
            let () = stagecraft::store::redis::cmd("HSET")
                .arg(store.record_key("foreign"))
                .arg("d")
                .arg("x")
                .arg("v")
                .arg("abc")
                .query_async(&mut conn)
                .await
                .map(|_: i64| ())
                .expect("write a foreign record");
            let err = store.load("foreign").await.expect_err("a bad version");
            assert!(err.is_store(), "expected Error::Store, got {err:?}");
            let leases = store.leases().expect("leases");
            let lease_ttl = Duration::from_secs(30);
            let err = leases
                .acquire_lease_and_load("foreign", lease_ttl)
                .await
                .expect_err("a bad version with the lease");
            assert!(err.is_store(), "expected Error::Store, got {err:?}");
            match leases
                .acquire_lease("foreign", lease_ttl)
                .await
                .expect("acquire")
            {
                stagecraft::store::LeaseAttempt::Acquired(lease) => {
                    assert!(leases.release_lease(&lease).await.expect("release"));
                }
                other => panic!("the lease was kept after a failed read: {other:?}"),
            }

            let ttl_store = store.clone().with_ttl(Duration::from_millis(1200));
            conformance::check_cache_hint(&ttl_store, None).await;
            conformance::check_ttl_real_time(&ttl_store, Duration::from_millis(1200)).await;

            let other = connect(&url, &prefix).await;
            conformance::check_shared(&store, &other).await;

            // Another prefix is another namespace.
            let elsewhere = connect(&url, &format!("{prefix}elsewhere:")).await;
            store.save("ns-check", b"x", None).await.expect("save");
            assert_eq!(elsewhere.load("ns-check").await.expect("load"), None);
            let listed = elsewhere.list(&Default::default()).await.expect("list");
            assert!(
                listed.is_empty(),
                "a prefixed store listed foreign keys: {listed:?}"
            );
        }
    });
    let result = body.await;
    let deleted = clean(&store, &prefix).await;
    assert!(
        deleted > 0 || result.is_err(),
        "the test wrote no keys under its prefix"
    );
    if let Err(e) = result {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("test body: {e}");
    }
}

use stagecraft::store::SessionStore;

#[tokio::test]
async fn unreachable_server_is_a_store_error() {
    let err = RedisStore::connect("redis://127.0.0.1:1")
        .await
        .expect_err("connect to a closed port");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
    let err = RedisStore::connect("not a url").await.expect_err("bad url");
    assert!(err.is_store(), "expected Error::Store, got {err:?}");
}

#[tokio::test]
async fn rejects_bad_prefixes() {
    for var in [VAR, CLUSTER_VAR] {
        let Some(url) = std::env::var(var).ok().filter(|u| !u.trim().is_empty()) else {
            continue;
        };
        let store = connect(&url, "stagecraft:").await;
        for bad in ["a b", "a*", "a?", "[a]", "a\\", "tab\t", &"p".repeat(65)] {
            let result = store.clone().with_prefix(bad);
            assert!(
                matches!(result, Err(Error::Config(_))),
                "prefix {bad:?} was accepted"
            );
        }
        // The store's hash tag follows the prefix on a cluster: no braces before it.
        for braced in ["{bot}:", "a}", "x{"] {
            let result = store.clone().with_prefix(braced);
            if store.is_cluster() {
                assert!(
                    matches!(result, Err(Error::Config(_))),
                    "prefix {braced:?} was accepted on a cluster"
                );
            } else {
                assert!(result.is_ok(), "prefix {braced:?}: {result:?}");
            }
        }
    }
}

/// A store with its own prefix writes its records and leases under that prefix only
/// (connecting writes nothing): none under the default prefix, none without a prefix.
#[tokio::test]
async fn a_prefixed_store_touches_only_its_prefix() {
    for var in [VAR, CLUSTER_VAR] {
        if let Some(url) = common::server_url(var) {
            touches_only_its_prefix(&url).await;
        }
    }
}

async fn touches_only_its_prefix(url: &str) {
    use stagecraft::store::{LeaseAttempt, LeaseStore, SessionStore};
    let name = common::unique_name("own");
    let prefix = format!("{name}:");
    let store = connect(url, &prefix).await;
    let key = format!("k_{name}");
    store.save(&key, b"mine", None).await.expect("save");
    let taken = store
        .acquire_lease(&key, Duration::from_secs(10))
        .await
        .expect("take a lease");
    assert!(matches!(taken, LeaseAttempt::Acquired(_)), "{taken:?}");
    let mut conn = store.connection().clone();
    let default = RedisStore::connect(url).await.expect("connect");
    for outside in [
        key.clone(),
        format!("stagecraft:{key}"),
        format!("stagecraft:\0lease:{key}"),
        default.record_key(&key),
        default.lease_key(&key),
    ] {
        let n: usize = stagecraft::store::redis::cmd("EXISTS")
            .arg(&outside)
            .query_async(&mut conn)
            .await
            .expect("exists");
        assert_eq!(n, 0, "{outside:?} was written outside the prefix");
    }
    assert_eq!(
        clean(&store, &prefix).await,
        2,
        "the record and its lease, under the prefix"
    );
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

/// On a cluster, a session's record, lease and entry in the index of due work are in one
/// slot (so each script runs on one node), whatever braces its key holds; on one server
/// the keys are those of the layout of earlier versions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_keeps_its_keys_in_one_slot() {
    use stagecraft::store::LeaseAttempt;
    if let Some(url) = common::server_url(VAR) {
        let store = connect(&url, "p:").await;
        assert!(!store.is_cluster());
        assert_eq!(store.record_key("a{b}"), "p:a{b}");
        assert_eq!(store.lease_key("a{b}"), "p:\0lease:a{b}");
        assert_eq!(store.due_index_key("a{b}"), "p:\0due");
    }
    let Some(url) = common::server_url(CLUSTER_VAR) else {
        return;
    };
    let name = common::unique_name("slots");
    let prefix = format!("{name}:");
    let store = connect(&url, &prefix).await;
    let mut conn = store.connection().clone();
    let slot_conn = conn.clone();
    let slot = |key: String| {
        let mut conn = slot_conn.clone();
        async move {
            let slot: i64 = stagecraft::store::redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .expect("cluster keyslot");
            slot
        }
    };
    let keys = [
        "plain".to_owned(),
        "{".to_owned(),
        "}".to_owned(),
        "{}".to_owned(),
        "}{".to_owned(),
        "{user}:1".to_owned(),
        "a{b}c{d}".to_owned(),
        "{b3}x".to_owned(),
        "{b3}".to_owned(),
        format!("{{{prefix}}}"),
    ];
    let mut slots = HashSet::new();
    for key in &keys {
        let record = store.record_key(key);
        assert!(record.starts_with(&prefix) && record.ends_with(key.as_str()));
        let record_slot = slot(record).await;
        assert_eq!(slot(store.lease_key(key)).await, record_slot, "{key}");
        assert_eq!(slot(store.due_index_key(key)).await, record_slot, "{key}");
        slots.insert(record_slot);

        // And the scripts that touch two of them work.
        let leases = store.leases().expect("leases");
        let (attempt, _) = leases
            .acquire_lease_and_load(key, Duration::from_secs(30))
            .await
            .expect("lease and load");
        let LeaseAttempt::Acquired(lease) = attempt else {
            panic!("{key}: {attempt:?}");
        };
        let index = store.pending().expect("index");
        let v1 = index
            .save_pending(key, b"one", None, 5)
            .await
            .unwrap_or_else(|e| panic!("{key}: {e:?}"));
        let n: usize = stagecraft::store::redis::cmd("EXISTS")
            .arg(store.record_key(key))
            .arg(store.lease_key(key))
            .arg(store.due_index_key(key))
            .query_async(&mut conn)
            .await
            .expect("exists");
        assert_eq!(
            n, 3,
            "{key}: record, lease and index are where the layout says"
        );
        assert!(
            index.pending_keys(5, 100).await.unwrap().contains(key),
            "{key}"
        );
        assert!(
            leases
                .renew_lease(&lease, Duration::from_secs(30))
                .await
                .unwrap()
        );
        let v2 = store.save(key, b"two", Some(v1)).await.unwrap();
        assert!(
            !index.pending_keys(5, 100).await.unwrap().contains(key),
            "{key}"
        );
        assert_eq!(store.load(key).await.unwrap().unwrap().bytes, b"two");
        assert!(leases.release_lease(&lease).await.unwrap());
        store.delete(key, v2).await.unwrap();
        assert_eq!(store.load(key).await.unwrap(), None, "{key}");
    }
    // Keys spread over buckets (slots), and the braces of a key never pick its slot.
    assert!(slots.len() > 1, "{slots:?}");
    // Listing reads every master and gives the keys back as they were.
    for key in &keys {
        store.save(key, b"x", None).await.unwrap();
    }
    let mut listed = store.list(&Default::default()).await.unwrap();
    listed.sort();
    let mut want = keys.to_vec();
    want.sort();
    assert_eq!(listed, want);
    let braced = store
        .list(&stagecraft::store::ListFilter::prefix("{"))
        .await
        .unwrap();
    assert_eq!(braced.len(), 6, "{braced:?}");

    // Scripts are loaded again on every node after a SCRIPT FLUSH (NOSCRIPT, then
    // SCRIPT LOAD and EVALSHA once more), also when the write is pipelined with WAIT.
    let () = stagecraft::store::redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .expect("script flush on every node");
    let acked = store.clone().with_replica_acks(1, Duration::from_secs(2));
    for key in &keys {
        let v = store.load(key).await.unwrap().unwrap().version;
        let v = acked.save(key, b"acked", Some(v)).await.unwrap();
        store.save(key, b"y", Some(v)).await.unwrap();
    }
    assert!(clean(&store, &prefix).await >= keys.len());
}

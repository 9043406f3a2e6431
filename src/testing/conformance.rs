//! A conformance suite for [`SessionStore`] implementations.
//!
//! Every built-in store passes it; a third-party store can run it from its own tests:
//!
//! ```
//! use stagecraft::store::MemoryStore;
//! use stagecraft::testing::conformance;
//!
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! conformance::run_all(MemoryStore::new()).await;
//! # });
//! ```
//!
//! The checks panic with a message naming the backend and what went wrong (this is test
//! code). Each one writes only keys under its own random namespace
//! (`conformance/{check}/{random}/`), so they can share one store, one table or one key
//! prefix with each other and with parallel test runs; they do not clean up after
//! themselves (drop the table or prefix at the end of the test). The concurrency checks
//! spawn Tokio tasks: run them on a multi-threaded runtime
//! (`#[tokio::test(flavor = "multi_thread")]`) to really race.
//!
//! TTLs need a store configured for them, so they are separate checks: [`check_ttl`] for
//! stores that read a [`ManualClock`], [`check_ttl_real_time`] for stores that expire on
//! the server's clock (Redis). [`check_shared`] checks that two instances on one backend
//! see each other's versions. [`check_cache_hint`] checks that a store's
//! [`CacheHint`](crate::store::CacheHint) tells the truth (with a [`ManualClock`] for a
//! hint with a TTL). [`check_leases`] and [`check_lease_and_load`] check per-key leases,
//! for stores that have them, and [`check_pending`] and [`check_due_times`] the index of due
//! work; [`run_all`] runs them then.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::time::{Duration, Instant};

use crate::clock::{Clock, ManualClock};
use crate::error::{Error, Result};
use crate::store::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, Preload, Record, SessionStore, Version, random_u64,
};

/// The index of due work ([`PendingIndex`](crate::store::PendingIndex)):
/// `save_pending` writes like `save` and marks the key; any other write of the key
/// (`save`, `delete`) unmarks it; a `save_pending` that conflicts writes and marks
/// nothing; `pending_keys` keeps to its limit. Skipped for a store without the index.
pub async fn check_pending<S: SessionStore + ?Sized>(store: &S) {
    let Some(index) = store.pending() else {
        return;
    };
    let ns = ns("pending");
    let (a, b, c) = (format!("{ns}a"), format!("{ns}b"), format!("{ns}c"));
    let marked = || async {
        let keys = ok(
            store,
            index.pending_keys(i64::MAX, 1_000_000).await,
            "pending_keys",
        );
        keys.into_iter()
            .filter(|k| k.starts_with(&ns))
            .collect::<BTreeSet<_>>()
    };
    let set = |keys: &[&String]| keys.iter().map(|k| (*k).clone()).collect::<BTreeSet<_>>();
    assert!(
        marked().await.is_empty(),
        "[{}] a fresh namespace has marked keys",
        store.backend()
    );
    // Marked by an insert and by an update; the record reads back as saved.
    let va = ok(
        store,
        index.save_pending(&a, b"a1", None, 0).await,
        "save_pending (insert)",
    );
    expect_record(store, &a, Some((b"a1", va)), "a record saved pending").await;
    let vb = ok(store, store.save(&b, b"b1", None).await, "insert");
    let vb = ok(
        store,
        index.save_pending(&b, b"b2", Some(vb), 0).await,
        "save_pending (update)",
    );
    assert_eq!(
        marked().await,
        set(&[&a, &b]),
        "[{}] keys saved pending",
        store.backend()
    );
    // Bounded by the limit.
    let few = ok(
        store,
        index.pending_keys(i64::MAX, 1).await,
        "pending_keys(1)",
    );
    assert!(
        few.len() <= 1,
        "[{}] pending_keys(1) gave {} keys",
        store.backend(),
        few.len()
    );
    // A plain save unmarks (the write that marks replies delivered); a delete unmarks.
    let va = ok(
        store,
        store.save(&a, b"a2", Some(va)).await,
        "save over a pending record",
    );
    ok(
        store,
        store.delete(&b, vb).await,
        "delete of a pending record",
    );
    assert!(
        marked().await.is_empty(),
        "[{}] save and delete leave keys marked",
        store.backend()
    );
    // A stale save_pending writes and marks nothing.
    conflict(
        store,
        index.save_pending(&a, b"stale", None, 0).await,
        "save_pending over a record, as new",
    );
    conflict(
        store,
        index.save_pending(&c, b"stale", Some(va), 0).await,
        "save_pending of an absent key",
    );
    expect_record(
        store,
        &a,
        Some((b"a2", va)),
        "a record after a stale save_pending",
    )
    .await;
    assert!(
        marked().await.is_empty(),
        "[{}] a conflicting save_pending marked a key",
        store.backend()
    );
    // Marked again, and left in place across another instance of the check.
    let va = ok(
        store,
        index.save_pending(&a, b"a3", Some(va), 0).await,
        "save_pending again",
    );
    assert_eq!(
        marked().await,
        set(&[&a]),
        "[{}] a key saved pending again",
        store.backend()
    );
    ok(store, store.delete(&a, va).await, "delete");
}

/// Due times of the index of due work: `pending_keys(now, …)` lists the keys due by
/// `now` only, earliest first; marking a key again moves it; a plain save takes it out.
/// Skipped for a store without the index.
pub async fn check_due_times<S: SessionStore + ?Sized>(store: &S) {
    let Some(index) = store.pending() else {
        return;
    };
    let ns = ns("due");
    let prefix: &str = &ns;
    let due = move |now: i64| async move {
        let keys = ok(
            store,
            index.pending_keys(now, 1_000_000).await,
            "pending_keys",
        );
        keys.into_iter()
            .filter(|k| k.starts_with(prefix))
            .collect::<Vec<_>>()
    };
    // Times far in the past, so that other users of a shared store never race them.
    let (a, b, c) = (format!("{ns}a"), format!("{ns}b"), format!("{ns}c"));
    let va = ok(
        store,
        index.save_pending(&a, b"a", None, 300).await,
        "save_pending a",
    );
    let vb = ok(
        store,
        index.save_pending(&b, b"b", None, 100).await,
        "save_pending b",
    );
    let vc = ok(
        store,
        index.save_pending(&c, b"c", None, 200).await,
        "save_pending c",
    );
    let name = store.backend();
    assert!(
        due(99).await.is_empty(),
        "[{name}] keys listed before their time"
    );
    assert_eq!(
        due(100).await,
        std::slice::from_ref(&b),
        "[{name}] due at 100"
    );
    assert_eq!(
        due(250).await,
        [b.clone(), c.clone()],
        "[{name}] due by 250, earliest first"
    );
    assert_eq!(
        due(1_000).await,
        [b.clone(), c.clone(), a.clone()],
        "[{name}] all due, in order"
    );
    // Marked again: moved (a falls due first now); a plain save takes b out.
    let va = ok(
        store,
        index.save_pending(&a, b"a2", Some(va), 50).await,
        "save_pending again",
    );
    let vb = ok(store, store.save(&b, b"b2", Some(vb)).await, "save");
    assert_eq!(
        due(1_000).await,
        [a.clone(), c.clone()],
        "[{name}] after a move and an unmark"
    );
    assert_eq!(
        due(60).await,
        std::slice::from_ref(&a),
        "[{name}] the moved key at its new time"
    );
    for (key, v) in [(&a, va), (&b, vb), (&c, vc)] {
        ok(store, store.delete(key, v).await, "delete");
    }
    assert!(
        due(i64::MAX).await.is_empty(),
        "[{name}] deleted keys stay listed"
    );
}

/// A fresh namespace for one check's keys.
fn ns(check: &str) -> String {
    format!("conformance/{check}/{:016x}/", random_u64())
}

#[track_caller]
fn ok<T, S: SessionStore + ?Sized>(store: &S, r: Result<T>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => {
            let mut msg = format!("[{}] {what}: unexpected error: {e}", store.backend());
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                msg.push_str(&format!(": {s}"));
                source = s.source();
            }
            panic!("{msg}")
        }
    }
}

#[track_caller]
fn conflict<T: Debug, S: SessionStore + ?Sized>(store: &S, r: Result<T>, what: &str) {
    match r {
        Err(e) if e.is_conflict() => {}
        Err(e) => panic!(
            "[{}] {what}: expected a Conflict, got the error {e:?}",
            store.backend()
        ),
        Ok(v) => panic!(
            "[{}] {what}: expected a Conflict, got Ok({v:?})",
            store.backend()
        ),
    }
}

async fn listed<S: SessionStore + ?Sized>(store: &S, filter: ListFilter) -> BTreeSet<String> {
    let keys = ok(
        store,
        store.list(&filter).await,
        &format!("list {filter:?}"),
    );
    let n = keys.len();
    let set: BTreeSet<String> = keys.into_iter().collect();
    assert_eq!(
        set.len(),
        n,
        "[{}] list {filter:?} returned a key twice",
        store.backend()
    );
    set
}

fn set<I: IntoIterator<Item = String>>(keys: I) -> BTreeSet<String> {
    keys.into_iter().collect()
}

/// A record as the checks expect it: its bytes and version (`None`: no record).
type Expected<'a> = Option<(&'a [u8], Version)>;

/// A record for a failure message: its version, its length and its first bytes.
fn describe(record: Expected<'_>) -> String {
    match record {
        None => "no record".to_owned(),
        Some((bytes, version)) => {
            let shown = &bytes[..bytes.len().min(48)];
            let more = if bytes.len() > shown.len() { "…" } else { "" };
            format!(
                "{version}, {} bytes b\"{}{more}\"",
                bytes.len(),
                shown.escape_ascii()
            )
        }
    }
}

/// Panics with `[backend] what: …` unless `loaded` is `expected`.
#[track_caller]
fn assert_record<S: SessionStore + ?Sized>(
    store: &S,
    loaded: Option<&Record>,
    expected: Expected<'_>,
    what: &str,
) {
    let got = loaded.map(|r| (r.bytes.as_slice(), r.version));
    if got != expected {
        panic!(
            "[{}] {what}: expected {}, loaded {}",
            store.backend(),
            describe(expected),
            describe(got)
        );
    }
}

/// Loads `key` and panics with `[backend] what: …` unless it holds `expected`.
async fn expect_record<S: SessionStore + ?Sized>(
    store: &S,
    key: &str,
    expected: Expected<'_>,
    what: &str,
) {
    let loaded = ok(store, store.load(key).await, &format!("load ({what})"));
    assert_record(store, loaded.as_ref(), expected, what);
}

/// Runs every check that needs no TTL and no second instance, on one store: the record
/// checks, [`check_cache_hint`] (without a clock) and, when the store has leases
/// ([`SessionStore::leases`] is `Some`), [`check_leases`], [`check_lease_and_load`] and
/// [`check_save_releasing`] (about 1.5 s of real time).
///
/// `store` must not have a TTL shorter than a minute. Clones must share the backend
/// (the concurrency checks use clones as concurrent clients); wrap a store that is not
/// `Clone` in an [`Arc`](std::sync::Arc).
pub async fn run_all<S: SessionStore + Clone>(store: S) {
    check_absent_key(&store).await;
    check_round_trip(&store).await;
    check_versions_change(&store).await;
    check_stale_save_conflicts(&store).await;
    check_insert_if_absent_conflicts(&store).await;
    check_delete(&store).await;
    check_odd_keys(&store).await;
    check_odd_payloads(&store).await;
    check_hostile_keys(&store).await;
    check_list(&store).await;
    check_concurrent_cas(&store).await;
    check_concurrent_many_keys(&store).await;
    check_concurrent_counter(&store).await;
    check_cache_hint(&store, None).await;
    if store.leases().is_some() {
        check_leases(&store).await;
        check_lease_and_load(&store).await;
        check_save_releasing(&store).await;
    }
    if store.pending().is_some() {
        check_pending(&store).await;
        check_due_times(&store).await;
    }
}

/// A key never written loads as `None` and lists nothing.
pub async fn check_absent_key<S: SessionStore + ?Sized>(store: &S) {
    let ns = ns("absent");
    let key = format!("{ns}nobody");
    expect_record(store, &key, None, "an absent key").await;
    let keys = listed(store, ListFilter::prefix(&ns)).await;
    assert!(
        keys.is_empty(),
        "[{}] list of an empty namespace gave {keys:?}",
        store.backend()
    );
}

/// What is saved loads back, byte for byte, with the version `save` returned.
pub async fn check_round_trip<S: SessionStore + ?Sized>(store: &S) {
    let key = format!("{}chat:1", ns("round_trip"));
    let bytes = br#"{"scene":"greet","n":1}"#;
    let v1 = ok(store, store.save(&key, bytes, None).await, "insert");
    expect_record(store, &key, Some((bytes, v1)), "a saved record").await;
    let v2 = ok(store, store.save(&key, b"second", Some(v1)).await, "update");
    expect_record(store, &key, Some((b"second", v2)), "an update").await;
}

/// Every save returns a version different from all before it for that key.
pub async fn check_versions_change<S: SessionStore + ?Sized>(store: &S) {
    let key = format!("{}k", ns("versions"));
    let mut seen = HashSet::new();
    let mut version = ok(store, store.save(&key, b"0", None).await, "insert");
    seen.insert(version);
    for i in 1..=20 {
        let next = ok(
            store,
            store
                .save(&key, i.to_string().as_bytes(), Some(version))
                .await,
            "save",
        );
        assert!(
            seen.insert(next),
            "[{}] save {i} returned {next}, a version the key had before",
            store.backend()
        );
        version = next;
    }
    assert!(
        version.0 <= i64::MAX as u64,
        "[{}] version {version} does not fit a signed 64-bit column",
        store.backend()
    );
}

/// A save with a version that is no longer current fails with a conflict and changes nothing.
pub async fn check_stale_save_conflicts<S: SessionStore + ?Sized>(store: &S) {
    let key = format!("{}k", ns("stale"));
    let v1 = ok(store, store.save(&key, b"one", None).await, "insert");
    let v2 = ok(store, store.save(&key, b"two", Some(v1)).await, "update");
    conflict(
        store,
        store.save(&key, b"stale", Some(v1)).await,
        "save with a stale version",
    );
    conflict(
        store,
        store
            .save(&key, b"made up", Some(Version(v2.0 ^ 0x5555)))
            .await,
        "save with a made-up version",
    );
    conflict(
        store,
        store.save(&key, b"huge", Some(Version(u64::MAX))).await,
        "save with version u64::MAX",
    );
    expect_record(
        store,
        &key,
        Some((b"two", v2)),
        "a conflicting save changed the record",
    )
    .await;
    let absent = format!("{}absent", ns("stale"));
    conflict(
        store,
        store.save(&absent, b"x", Some(v1)).await,
        "save with a version over no record",
    );
    expect_record(
        store,
        &absent,
        None,
        "an update of an absent key created it",
    )
    .await;
}

/// `save(key, _, None)` over an existing record fails with a conflict and changes nothing.
pub async fn check_insert_if_absent_conflicts<S: SessionStore + ?Sized>(store: &S) {
    let key = format!("{}k", ns("insert"));
    let v1 = ok(store, store.save(&key, b"first", None).await, "insert");
    conflict(
        store,
        store.save(&key, b"second", None).await,
        "insert over an existing record",
    );
    expect_record(
        store,
        &key,
        Some((b"first", v1)),
        "a conflicting insert changed the record",
    )
    .await;
}

/// `delete` with the right version removes; with a wrong one conflicts; of an absent key succeeds.
pub async fn check_delete<S: SessionStore + ?Sized>(store: &S) {
    let ns = ns("delete");
    let key = format!("{ns}k");
    let v1 = ok(store, store.save(&key, b"one", None).await, "insert");
    let v2 = ok(store, store.save(&key, b"two", Some(v1)).await, "update");
    conflict(
        store,
        store.delete(&key, v1).await,
        "delete with a stale version",
    );
    expect_record(
        store,
        &key,
        Some((b"two", v2)),
        "a conflicting delete changed the record",
    )
    .await;
    ok(
        store,
        store.delete(&key, v2).await,
        "delete with the current version",
    );
    expect_record(store, &key, None, "a deleted record").await;
    ok(
        store,
        store.delete(&key, v2).await,
        "delete of a deleted record",
    );
    ok(
        store,
        store.delete(&format!("{ns}never"), Version(7)).await,
        "delete of an absent key",
    );
    let listed = listed(store, ListFilter::prefix(&ns)).await;
    assert!(
        listed.is_empty(),
        "[{}] a deleted key is still listed: {listed:?}",
        store.backend()
    );
    let v3 = ok(
        store,
        store.save(&key, b"again", None).await,
        "insert after delete",
    );
    conflict(
        store,
        store.save(&key, b"x", Some(v2)).await,
        "save with the version of the deleted record",
    );
    expect_record(store, &key, Some((b"again", v3)), "a re-created record").await;
}

/// Keys with SQL, `LIKE` and glob metacharacters, quotes, unicode and 200 bytes round-trip
/// and list.
pub async fn check_odd_keys<S: SessionStore + ?Sized>(store: &S) {
    let ns = ns("odd_keys");
    let mut keys: Vec<String> = [
        "'",
        "''",
        "\"",
        "`",
        "'; DROP TABLE sessions; --",
        "%",
        "_",
        "a%b",
        "a_b",
        "*",
        "?",
        "[",
        "]",
        "[a-z]",
        "\\",
        "a\\b",
        "\\%",
        "!",
        "!%",
        "{table}",
        "ключ",
        "鍵",
        "🦀🎭",
        "e\u{301}",
        "tab\there",
        "line\nbreak",
        "a",
        "a ",
        " a",
        "A",
        "x:y:z",
    ]
    .iter()
    .map(|k| format!("{ns}{k}"))
    .collect();
    keys.push(format!("{ns}{}", "k".repeat(200 - ns.len())));
    assert_eq!(keys.last().map(String::len), Some(200));
    let mut versions = Vec::new();
    for (i, key) in keys.iter().enumerate() {
        let bytes = format!("value of key {i}");
        versions.push(ok(
            store,
            store.save(key, bytes.as_bytes(), None).await,
            &format!("insert {key:?}"),
        ));
    }
    for (i, key) in keys.iter().enumerate() {
        let bytes = format!("value of key {i}");
        let what = format!("key {key:?} round-trips (without colliding with another key)");
        expect_record(store, key, Some((bytes.as_bytes(), versions[i])), &what).await;
    }
    let all = listed(store, ListFilter::prefix(&ns)).await;
    assert_eq!(
        all,
        set(keys.iter().cloned()),
        "[{}] list of odd keys",
        store.backend()
    );
    for key in &keys {
        let found = listed(store, ListFilter::prefix(key.as_str())).await;
        assert!(
            found.contains(key),
            "[{}] list with prefix {key:?} misses the key itself",
            store.backend()
        );
        assert!(
            found.iter().all(|k| k.starts_with(key.as_str())),
            "[{}] list with prefix {key:?} gave keys without that prefix: {found:?}",
            store.backend()
        );
    }
    // Update and delete go through the same key handling.
    let key = &keys[4];
    let v = ok(
        store,
        store.save(key, b"updated", Some(versions[4])).await,
        "update an odd key",
    );
    ok(store, store.delete(key, v).await, "delete an odd key");
    expect_record(store, key, None, "a deleted odd key").await;
}

/// How a store answered a hostile key, for [`check_hostile_keys`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Saved, loaded back, listed and deleted like any key.
    RoundTrips,
    /// Refused by every call with an error; nothing was stored. The text is the error
    /// chain of the refused save.
    Refused(String),
}

/// Keys no built-in key strategy makes but a custom one may: NUL and other control
/// characters, the noncharacter U+FFFF, right-to-left and zero-width marks, and keys of 1,024,
/// 1,025, 4,096, 65,536 bytes and 1 MiB (ASCII and four-byte characters). Each either
/// round-trips exactly like any key (save, load, list by prefix, delete) or is refused
/// by save, load and delete alike with an error that is a `Store` or `Config` error and
/// says something, leaving nothing stored. Never a panic, never a key stored under
/// another name (truncated or cut at a NUL). Returns what happened to each key, by a
/// short name, so that a backend's tests can pin it.
pub async fn check_hostile_keys<S: SessionStore + ?Sized>(store: &S) -> Vec<(String, KeyOutcome)> {
    let ns = ns("hostile_keys");
    let long = |n: usize| format!("{ns}{}", "k".repeat(n - ns.len()));
    let cases: Vec<(String, String)> = vec![
        ("nul".into(), format!("{ns}a\0b")),
        ("trailing nul".into(), format!("{ns}a\0")),
        ("controls".into(), format!("{ns}\u{1}\u{7}\u{1b}[0m\u{7f}")),
        ("noncharacter".into(), format!("{ns}\u{ffff}")),
        (
            "bidi and zero-width".into(),
            format!("{ns}\u{202e}\u{200b}\u{feff}x"),
        ),
        ("1024 bytes".into(), long(1024)),
        ("1025 bytes".into(), long(1025)),
        ("4096 bytes".into(), long(4096)),
        ("64 KiB".into(), long(64 * 1024)),
        ("1 MiB".into(), long(1 << 20)),
        (
            "1200 bytes of crabs".into(),
            format!("{ns}{}", "🦀".repeat(300)),
        ),
    ];
    let mut outcomes = Vec::new();
    for (name, key) in cases {
        let what = format!("hostile key `{name}`");
        let bytes = format!("value of {name}");
        match store.save(&key, bytes.as_bytes(), None).await {
            Ok(v) => {
                expect_record(store, &key, Some((bytes.as_bytes(), v)), &what).await;
                let found = listed(store, ListFilter::prefix(key.as_str())).await;
                assert_eq!(
                    found,
                    set([key.clone()]),
                    "[{}] {what}: list by its own prefix",
                    store.backend()
                );
                // Not stored under a shortened name either.
                let cut: String = key.chars().take(key.chars().count() - 1).collect();
                let near = listed(store, ListFilter::prefix(cut.as_str())).await;
                assert_eq!(near, set([key.clone()]), "[{}] {what}", store.backend());
                ok(
                    store,
                    store.delete(&key, v).await,
                    &format!("delete ({what})"),
                );
                expect_record(store, &key, None, &format!("{what}, deleted")).await;
                outcomes.push((name, KeyOutcome::RoundTrips));
            }
            Err(e) => {
                let text = crate::error::error_chain(&e);
                assert!(
                    matches!(e, Error::Store { .. } | Error::Config(_)) && text.len() > 20,
                    "[{}] {what}: refused unclearly: {e:?}",
                    store.backend()
                );
                // Nothing of it stored, under its name or a shortened one.
                if let Ok(loaded) = store.load(&key).await {
                    assert_record(store, loaded.as_ref(), None, &format!("{what}, refused"));
                }
                let all = listed(store, ListFilter::prefix(ns.as_str())).await;
                assert!(
                    all.is_empty(),
                    "[{}] {what} was refused, yet stored: {all:?}",
                    store.backend()
                );
                outcomes.push((name, KeyOutcome::Refused(text)));
            }
        }
    }
    outcomes
}

/// Binary payloads (all 256 byte values), the empty payload and 64 KiB round-trip.
pub async fn check_odd_payloads<S: SessionStore + ?Sized>(store: &S) {
    let ns = ns("payloads");
    let all_bytes: Vec<u8> = (0..=255).collect();
    let big: Vec<u8> = (0..64 * 1024)
        .map(|i: u32| (i.wrapping_mul(31) % 251) as u8)
        .collect();
    let nul_heavy = vec![0_u8; 1000];
    let json = br#"{"q":"it's \"quoted\"","u":"\u00e9\ud83e\udd80"}"#.to_vec();
    let payloads: [(&str, Vec<u8>); 5] = [
        ("all_bytes", all_bytes),
        ("empty", Vec::new()),
        ("64KiB", big),
        ("zeros", nul_heavy),
        ("json", json),
    ];
    for (name, bytes) in &payloads {
        let key = format!("{ns}{name}");
        let v = ok(
            store,
            store.save(&key, bytes, None).await,
            &format!("insert the {name} payload"),
        );
        let what = format!("the {name} payload round-trips");
        expect_record(store, &key, Some((bytes, v)), &what).await;
    }
    // Shrinking a big record to nothing and growing it back.
    let key = format!("{ns}64KiB");
    let v = ok(store, store.load(&key).await, "load").map(|l| l.version);
    let v = ok(store, store.save(&key, b"", v).await, "shrink to empty");
    expect_record(store, &key, Some((b"", v)), "a record shrunk to empty").await;
    let v = ok(
        store,
        store.save(&key, &payloads[2].1, Some(v)).await,
        "grow back",
    );
    expect_record(
        store,
        &key,
        Some((&payloads[2].1, v)),
        "a record grown back",
    )
    .await;
}

/// `list` returns exactly the live keys with a prefix (`%`, `_`, `*`, `?`, `[` literal,
/// case-sensitive) and honours `limit`.
pub async fn check_list<S: SessionStore + ?Sized>(store: &S) {
    let ns = ns("list");
    let names = [
        "user/1",
        "user/2",
        "user/10",
        "usex/1",
        "USER/1",
        "user%/1",
        "user_/1",
        "userX/1",
        "user*/1",
        "user?/1",
        "user[/1",
        "userab/1",
        "user\\/1",
        "deleted/1",
    ];
    let mut deleted = None;
    for name in names {
        let key = format!("{ns}{name}");
        let v = ok(
            store,
            store.save(&key, name.as_bytes(), None).await,
            &format!("insert {key:?}"),
        );
        if name == "deleted/1" {
            deleted = Some((key, v));
        }
    }
    if let Some((key, v)) = deleted {
        ok(store, store.delete(&key, v).await, "delete");
    }
    let keys = |names: &[&str]| set(names.iter().map(|n| format!("{ns}{n}")));
    let cases: [(&str, &[&str]); 9] = [
        ("user/", &["user/1", "user/2", "user/10"]),
        ("user/1", &["user/1", "user/10"]),
        ("user%", &["user%/1"]),
        ("user_", &["user_/1"]),
        ("user*", &["user*/1"]),
        ("user?", &["user?/1"]),
        ("user[", &["user[/1"]),
        ("user\\", &["user\\/1"]),
        ("USER", &["USER/1"]),
    ];
    for (prefix, expected) in cases {
        let got = listed(store, ListFilter::prefix(format!("{ns}{prefix}"))).await;
        assert_eq!(
            got,
            keys(expected),
            "[{}] list with prefix {prefix:?}",
            store.backend()
        );
    }
    let all = listed(store, ListFilter::prefix(&ns)).await;
    let live: Vec<&str> = names
        .iter()
        .copied()
        .filter(|n| *n != "deleted/1")
        .collect();
    assert_eq!(
        all,
        keys(&live),
        "[{}] list of the whole namespace",
        store.backend()
    );

    let user = keys(&["user/1", "user/2", "user/10"]);
    for limit in [0, 1, 2, 3, 100] {
        let got = listed(store, ListFilter::prefix(format!("{ns}user/")).limit(limit)).await;
        assert_eq!(
            got.len(),
            limit.min(3),
            "[{}] list with limit {limit}",
            store.backend()
        );
        assert!(
            got.is_subset(&user),
            "[{}] list with limit {limit} gave {got:?}",
            store.backend()
        );
    }
    let nothing = listed(store, ListFilter::prefix(format!("{ns}zzz"))).await;
    assert!(
        nothing.is_empty(),
        "[{}] list of a prefix with no keys gave {nothing:?}",
        store.backend()
    );
}

/// 32 tasks save over the same version at once: exactly one wins, the others conflict.
/// The same for 32 concurrent inserts of one new key.
pub async fn check_concurrent_cas<S: SessionStore + Clone>(store: &S) {
    const TASKS: usize = 32;
    let ns = ns("cas");
    for insert in [false, true] {
        let key = format!("{ns}{}", if insert { "insert" } else { "update" });
        let base = if insert {
            None
        } else {
            Some(ok(store, store.save(&key, b"base", None).await, "insert"))
        };
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(TASKS));
        let mut handles = Vec::new();
        for i in 0..TASKS {
            let store = store.clone();
            let key = key.clone();
            let barrier = std::sync::Arc::clone(&barrier);
            handles.push(tokio::spawn(async move {
                barrier.wait().await;
                let bytes = format!("task {i}");
                (i, store.save(&key, bytes.as_bytes(), base).await)
            }));
        }
        let mut winners = Vec::new();
        for handle in handles {
            let (i, result) = handle
                .await
                .unwrap_or_else(|e| panic!("a task panicked: {e}"));
            match result {
                Ok(v) => winners.push((i, v)),
                Err(e) if e.is_conflict() => {}
                Err(e) => {
                    panic!(
                        "[{}] concurrent save {i}: unexpected error {e:?}",
                        store.backend()
                    )
                }
            }
        }
        let what = if insert {
            "insert of one new key"
        } else {
            "save over one version"
        };
        assert_eq!(
            winners.len(),
            1,
            "[{}] {TASKS} concurrent tasks tried a {what}: {} won, exactly one must",
            store.backend(),
            winners.len()
        );
        let (i, v) = winners[0];
        let bytes = format!("task {i}");
        let what = "the stored record is the winner's";
        expect_record(store, &key, Some((bytes.as_bytes(), v)), what).await;
    }
}

/// 64 saves of 64 different keys at once (a store that groups writes gets them in one
/// group): updates with the current version, updates with a stale one, inserts of new
/// keys and inserts over existing ones. Each one alone wins or conflicts exactly as it
/// would one at a time, and the stored records say so.
pub async fn check_concurrent_many_keys<S: SessionStore + Clone>(store: &S) {
    const KEYS: usize = 64;
    let ns = ns("many");
    // Key i: i % 4 == 0 update with the right version, 1 update with a stale one,
    // 2 insert of a new key, 3 insert over an existing record. With each key: the
    // version its save expects, and the record stored before.
    let mut setup = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let key = format!("{ns}{i}");
        let (expected, before): (_, Expected<'static>) = match i % 4 {
            0 => {
                let v = ok(store, store.save(&key, b"old", None).await, "insert");
                (Some(v), Some((b"old", v)))
            }
            1 => {
                let v = ok(store, store.save(&key, b"old", None).await, "insert");
                let v2 = ok(store, store.save(&key, b"newer", Some(v)).await, "save");
                assert_ne!(v, v2, "[{}] a save kept the version", store.backend());
                (Some(v), Some((b"newer", v2)))
            }
            3 => {
                let v = ok(store, store.save(&key, b"existing", None).await, "insert");
                (None, Some((b"existing", v)))
            }
            _ => (None, None),
        };
        setup.push((key, expected, before));
    }
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(KEYS));
    let mut handles = Vec::new();
    for (i, (key, expected, _)) in setup.iter().cloned().enumerate() {
        let store = store.clone();
        let barrier = std::sync::Arc::clone(&barrier);
        handles.push(tokio::spawn(async move {
            barrier.wait().await;
            let bytes = format!("task {i}");
            store.save(&key, bytes.as_bytes(), expected).await
        }));
    }
    for (i, handle) in handles.into_iter().enumerate() {
        let result = handle
            .await
            .unwrap_or_else(|e| panic!("a task panicked: {e}"));
        let (key, _, before) = &setup[i];
        let should_win = i % 4 == 0 || i % 4 == 2;
        match result {
            Ok(v) if should_win => {
                let bytes = format!("task {i}");
                let what = format!("{key}: the winning save is what is stored");
                expect_record(store, key, Some((bytes.as_bytes(), v)), &what).await;
            }
            Err(e) if !should_win && e.is_conflict() => {
                let what = format!("{key}: a conflicting save left the record as it was");
                expect_record(store, key, *before, &what).await;
            }
            other => panic!(
                "[{}] {key} (case {}): expected {}, got {other:?}",
                store.backend(),
                i % 4,
                if should_win { "success" } else { "a conflict" }
            ),
        }
    }
}

/// 10 tasks × 20 increments of one counter, each a load + save retried on conflict,
/// end at exactly 200.
pub async fn check_concurrent_counter<S: SessionStore + Clone>(store: &S) {
    const TASKS: usize = 10;
    const PER_TASK: usize = 20;
    let key = format!("{}counter", ns("counter"));
    let mut handles = Vec::new();
    for _ in 0..TASKS {
        let store = store.clone();
        let key = key.clone();
        handles.push(tokio::spawn(async move {
            let mut attempts = 0_usize;
            for _ in 0..PER_TASK {
                loop {
                    attempts += 1;
                    assert!(
                        attempts < 100_000,
                        "[{}] counter: too many conflicts, is progress possible?",
                        store.backend()
                    );
                    let loaded = ok(&store, store.load(&key).await, "counter load");
                    let (n, version) = match loaded {
                        None => (0_u64, None),
                        Some(l) => {
                            let text = String::from_utf8(l.bytes).unwrap_or_default();
                            let n = text.parse::<u64>().unwrap_or_else(|_| {
                                panic!("[{}] counter holds {text:?}", store.backend())
                            });
                            (n, Some(l.version))
                        }
                    };
                    match store
                        .save(&key, (n + 1).to_string().as_bytes(), version)
                        .await
                    {
                        Ok(_) => break,
                        Err(e) if e.is_conflict() => tokio::task::yield_now().await,
                        Err(e) => {
                            panic!("[{}] counter save: unexpected error {e:?}", store.backend())
                        }
                    }
                }
            }
        }));
    }
    for handle in handles {
        handle
            .await
            .unwrap_or_else(|e| panic!("a counter task panicked: {e}"));
    }
    let loaded = ok(store, store.load(&key).await, "load").map(|l| l.bytes);
    assert_eq!(
        loaded,
        Some((TASKS * PER_TASK).to_string().into_bytes()),
        "[{}] {} increments with compare-and-set did not add up (lost updates)",
        store.backend(),
        TASKS * PER_TASK
    );
}

/// TTL on a virtual clock. `store` must have been built with `ttl` (≥ 10 ms) and read
/// its time from `clock`; the check moves `clock` forward.
///
/// A record lives `ttl` after its *last* save; once expired it does not load or list,
/// a save with its old version conflicts, a new insert succeeds, and deleting it with
/// any version succeeds.
pub async fn check_ttl<S: SessionStore + ?Sized>(store: &S, clock: &ManualClock, ttl: Duration) {
    assert!(
        ttl >= Duration::from_millis(10),
        "check_ttl needs a ttl of at least 10 ms"
    );
    let almost = ttl - Duration::from_millis(1);
    let ns = ns("ttl");
    let key = format!("{ns}k");
    let other = format!("{ns}other");
    let v1 = ok(store, store.save(&key, b"one", None).await, "insert");
    let o1 = ok(store, store.save(&other, b"other", None).await, "insert");
    clock.advance(almost);
    expect_record(
        store,
        &key,
        Some((b"one", v1)),
        "a record just before its ttl",
    )
    .await;
    let v2 = ok(
        store,
        store.save(&key, b"two", Some(v1)).await,
        "save before expiry",
    );
    clock.advance(almost);
    // `key` was saved `almost` ago, `other` 2 × `almost` ago.
    expect_record(store, &key, Some((b"two", v2)), "a save restarts the ttl").await;
    expect_record(store, &other, None, "a record past its ttl").await;
    assert_eq!(
        listed(store, ListFilter::prefix(&ns)).await,
        set([key.clone()]),
        "[{}] list shows an expired record",
        store.backend()
    );
    ok(
        store,
        store.delete(&other, o1).await,
        "delete of an expired record with its version",
    );
    clock.advance(Duration::from_millis(2));
    expect_record(store, &key, None, "a record past the ttl of its update").await;
    assert!(
        listed(store, ListFilter::prefix(&ns)).await.is_empty(),
        "[{}] list after expiry",
        store.backend()
    );
    conflict(
        store,
        store.save(&key, b"late", Some(v2)).await,
        "save with the version of an expired record",
    );
    ok(
        store,
        store.delete(&key, Version(v2.0 ^ 1)).await,
        "delete of an expired record with another version",
    );
    let v3 = ok(
        store,
        store.save(&key, b"three", None).await,
        "insert over an expired record",
    );
    let what = "a record re-created after expiry";
    expect_record(store, &key, Some((b"three", v3)), what).await;
    // An expired record that was never loaded is overwritten by an insert too.
    let lazy = format!("{ns}lazy");
    ok(store, store.save(&lazy, b"old", None).await, "insert");
    clock.advance(ttl + Duration::from_millis(1));
    let v = ok(
        store,
        store.save(&lazy, b"new", None).await,
        "insert over an expired record never loaded",
    );
    let what = "an insert over an expired record never loaded";
    expect_record(store, &lazy, Some((b"new", v)), what).await;
}

/// TTL on the server's own clock (e.g. Redis `PEXPIRE`). `store` must have been built
/// with `ttl` (between 100 ms and 10 s); the check sleeps about `ttl` plus up to 5 s.
pub async fn check_ttl_real_time<S: SessionStore + ?Sized>(store: &S, ttl: Duration) {
    assert!(
        ttl >= Duration::from_millis(100) && ttl <= Duration::from_secs(10),
        "check_ttl_real_time needs a ttl between 100 ms and 10 s"
    );
    let ns = ns("ttl_real_time");
    let key = format!("{ns}k");
    let saved_at = Instant::now();
    let v1 = ok(store, store.save(&key, b"one", None).await, "insert");
    let loaded = ok(store, store.load(&key).await, "load");
    if saved_at.elapsed() < ttl / 2 {
        assert!(
            loaded.is_some(),
            "[{}] a record expired long before its ttl",
            store.backend()
        );
        assert_eq!(
            listed(store, ListFilter::prefix(&ns)).await,
            set([key.clone()]),
            "list"
        );
    }
    tokio::time::sleep(ttl).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while ok(store, store.load(&key).await, "load").is_some() {
        assert!(
            Instant::now() < deadline,
            "[{}] a record with a ttl of {ttl:?} still loads after {:?}",
            store.backend(),
            saved_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        listed(store, ListFilter::prefix(&ns)).await.is_empty(),
        "[{}] list after expiry",
        store.backend()
    );
    conflict(
        store,
        store.save(&key, b"late", Some(v1)).await,
        "save with the version of an expired record",
    );
    ok(
        store,
        store.delete(&key, v1).await,
        "delete of an expired record",
    );
    ok(
        store,
        store.save(&key, b"two", None).await,
        "insert over an expired record",
    );
}

/// Two store instances (two pools, two connections) on one backend see each other's
/// versions: a stale save or delete on one after a save on the other conflicts.
pub async fn check_shared<A: SessionStore + ?Sized, B: SessionStore + ?Sized>(a: &A, b: &B) {
    let key = format!("{}k", ns("shared"));
    let v1 = ok(a, a.save(&key, b"from a", None).await, "insert on a");
    let what = "the second instance sees the first one's record";
    expect_record(b, &key, Some((b"from a", v1)), what).await;
    conflict(
        b,
        b.save(&key, b"insert on b", None).await,
        "insert on b over a's record",
    );
    let v2 = ok(b, b.save(&key, b"from b", Some(v1)).await, "update on b");
    conflict(
        a,
        a.save(&key, b"stale on a", Some(v1)).await,
        "stale save on a after b saved",
    );
    conflict(
        a,
        a.delete(&key, v1).await,
        "stale delete on a after b saved",
    );
    expect_record(a, &key, Some((b"from b", v2)), "a sees b's save").await;
    ok(a, a.delete(&key, v2).await, "delete on a");
    expect_record(b, &key, None, "b sees a's delete").await;
}

/// The leases of `store`, which must have some.
fn lease_store<S: SessionStore + ?Sized>(store: &S) -> &dyn LeaseStore {
    store
        .leases()
        .unwrap_or_else(|| panic!("[{}] leases() is None", store.backend()))
}

/// Per-key leases, for stores whose [`leases`](SessionStore::leases) is `Some`: a lease is exclusive (also among concurrent clients), invisible to records and
/// `list`, expires by itself, is extended by a renewal, and can be renewed or released
/// only with its own token. Real time: takes about 1.5 s (TTLs of a few hundred ms).
pub async fn check_leases<S: SessionStore + Clone>(store: &S) {
    let b = store.backend();
    let leases = lease_store(store);
    let ns = ns("leases");
    let key = format!("{ns}k");
    let ttl = Duration::from_millis(400);
    let held = |r: Result<LeaseAttempt>, what: &str| match ok(store, r, what) {
        LeaseAttempt::Acquired(l) => l,
        other => panic!("[{b}] {what}: expected the lease, got {other:?}"),
    };
    let busy = |r: Result<LeaseAttempt>, what: &str| {
        let got = ok(store, r, what);
        assert_eq!(
            got,
            LeaseAttempt::Busy,
            "[{b}] {what}: the lease is not exclusive"
        );
    };

    // Exclusive, for this client and another one.
    let first = held(
        leases.acquire_lease(&key, ttl).await,
        "acquire a free lease",
    );
    assert_eq!(first.key(), key, "[{b}] the lease names another key");
    busy(
        leases.acquire_lease(&key, ttl).await,
        "acquire a held lease",
    );
    busy(
        lease_store(&store.clone()).acquire_lease(&key, ttl).await,
        "acquire a held lease on a clone",
    );

    // Leases are not records.
    expect_record(store, &key, None, "a leased key without a record").await;
    assert!(
        listed(store, ListFilter::prefix(&ns)).await.is_empty(),
        "[{b}] a lease is listed"
    );
    let v = ok(
        store,
        store.save(&key, b"x", None).await,
        "save a leased key",
    );
    ok(store, store.delete(&key, v).await, "delete a leased key");

    // The wrong token can neither renew nor release.
    let thief = Lease::with_token(&key, "not-the-owner");
    assert!(
        !ok(
            store,
            leases.release_lease(&thief).await,
            "release with a wrong token"
        ),
        "[{b}] released a lease with the wrong token"
    );
    assert!(
        !ok(
            store,
            leases.renew_lease(&thief, ttl).await,
            "renew with a wrong token"
        ),
        "[{b}] renewed a lease with the wrong token"
    );
    busy(
        leases.acquire_lease(&key, ttl).await,
        "acquire after a wrong-token release",
    );

    // A renewal extends it past its first expiry.
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert!(
        ok(
            store,
            leases.renew_lease(&first, ttl).await,
            "renew a live lease"
        ),
        "[{b}] renewing a live lease failed"
    );
    tokio::time::sleep(Duration::from_millis(250)).await;
    busy(
        leases.acquire_lease(&key, ttl).await,
        "acquire a renewed lease after its first TTL",
    );

    // Released: free again; releasing twice does nothing to the next holder.
    assert!(
        ok(store, leases.release_lease(&first).await, "release"),
        "[{b}] release of a held lease said it was not held"
    );
    let second = held(
        leases.acquire_lease(&key, ttl).await,
        "acquire a released lease",
    );
    assert_ne!(
        first.token(),
        second.token(),
        "[{b}] two holders got the same token"
    );
    assert!(
        !ok(store, leases.release_lease(&first).await, "release again"),
        "[{b}] a stale holder released the next holder's lease"
    );
    busy(
        leases.acquire_lease(&key, ttl).await,
        "acquire after a stale release",
    );
    assert!(
        ok(
            store,
            leases.release_lease(&second).await,
            "release the second"
        ),
        "[{b}] release failed"
    );

    // Expires by itself; the expired holder can then neither renew nor release.
    let short = Duration::from_millis(300);
    let gone = held(
        leases.acquire_lease(&key, short).await,
        "acquire a short lease",
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let next = held(
        leases.acquire_lease(&key, ttl).await,
        "acquire an expired lease",
    );
    assert!(
        !ok(
            store,
            leases.renew_lease(&gone, ttl).await,
            "renew an expired lease"
        ),
        "[{b}] an expired holder renewed the next holder's lease"
    );
    assert!(
        !ok(
            store,
            leases.release_lease(&gone).await,
            "release an expired lease"
        ),
        "[{b}] an expired holder released the next holder's lease"
    );
    busy(
        leases.acquire_lease(&key, ttl).await,
        "acquire after an expired holder's release",
    );
    ok(store, leases.release_lease(&next).await, "release");

    // Racing clients: exactly one gets it.
    let race = format!("{ns}race");
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let s = store.clone();
            let race = race.clone();
            tokio::spawn(async move {
                lease_store(&s)
                    .acquire_lease(&race, Duration::from_secs(5))
                    .await
            })
        })
        .collect();
    let mut winners = Vec::new();
    for t in tasks {
        let attempt = ok(store, t.await.expect("task"), "racing acquire");
        if let LeaseAttempt::Acquired(l) = attempt {
            winners.push(l);
        }
    }
    assert_eq!(
        winners.len(),
        1,
        "[{b}] {} of 16 racing clients got the lease",
        winners.len()
    );
    ok(store, leases.release_lease(&winners[0]).await, "release");
}

/// Takes the lease of `key` with [`LeaseStore::acquire_lease_and_load`]: it must be free,
/// a record read with it must be `expected`, and so must a [`load`](SessionStore::load)
/// with the lease held.
async fn take_with_record<S: SessionStore + ?Sized>(
    store: &S,
    key: &str,
    ttl: Duration,
    expected: Expected<'_>,
    what: &str,
) -> Lease {
    let b = store.backend();
    let (attempt, preload) = ok(
        store,
        lease_store(store).acquire_lease_and_load(key, ttl).await,
        what,
    );
    let LeaseAttempt::Acquired(lease) = attempt else {
        panic!("[{b}] {what}: expected the lease, got {attempt:?}");
    };
    assert_eq!(
        lease.key(),
        key,
        "[{b}] {what}: the lease names another key"
    );
    if let Preload::Read(record) = preload {
        let read = format!("{what}: the record read with the lease");
        assert_record(store, record.as_ref(), expected, &read);
    }
    expect_record(
        store,
        key,
        expected,
        &format!("{what}: a load with the lease"),
    )
    .await;
    lease
}

/// [`LeaseStore::acquire_lease_and_load`], the lease entry point a pipeline uses, for
/// stores whose [`leases`](SessionStore::leases) is `Some`. It takes the lease as
/// [`acquire_lease`](LeaseStore::acquire_lease) does (busy while anyone holds it, on
/// this client or another), and a [`Preload::Read`] it returns stands for the
/// [`load`](SessionStore::load) that follows: it is exactly what `load` returns with the
/// lease held, for a key without a record, with a saved record, after several saves made
/// under the previous lease, and after a delete.
pub async fn check_lease_and_load<S: SessionStore + Clone>(store: &S) {
    let b = store.backend();
    let leases = lease_store(store);
    let key = format!("{}k", ns("lease_and_load"));
    let ttl = Duration::from_secs(10);
    let busy = |attempt: (LeaseAttempt, Preload), loaded: Option<Record>, what: &str| {
        assert_eq!(
            attempt.0,
            LeaseAttempt::Busy,
            "[{b}] {what}: the lease is not exclusive"
        );
        if let Preload::Read(record) = attempt.1 {
            let expected = loaded.as_ref().map(|r| (r.bytes.as_slice(), r.version));
            assert_record(store, record.as_ref(), expected, what);
        }
    };

    let first = take_with_record(store, &key, ttl, None, "a key without a record").await;
    let other = store.clone();
    for (client, what) in [(store, "this client"), (&other, "another client")] {
        let what = format!("take a held lease with its record on {what}");
        let attempt = ok(
            store,
            lease_store(client).acquire_lease_and_load(&key, ttl).await,
            &what,
        );
        busy(attempt, None, &what);
    }
    let plain = ok(store, leases.acquire_lease(&key, ttl).await, "acquire");
    assert_eq!(
        plain,
        LeaseAttempt::Busy,
        "[{b}] acquire_lease took a lease acquire_lease_and_load holds"
    );

    // A record saved under the lease is read with the next one.
    let v1 = ok(store, store.save(&key, b"one", None).await, "insert");
    assert!(
        ok(store, leases.release_lease(&first).await, "release"),
        "[{b}] release of a lease taken with its record said it was not held"
    );
    let second = take_with_record(store, &key, ttl, Some((b"one", v1)), "a saved record").await;
    let attempt = ok(
        store,
        leases.acquire_lease_and_load(&key, ttl).await,
        "take a held lease of a saved record",
    );
    let loaded = ok(store, store.load(&key).await, "load");
    busy(attempt, loaded, "take a held lease of a saved record");

    // Several saves under one lease: the next one reads the newest.
    let v2 = ok(store, store.save(&key, b"two", Some(v1)).await, "update");
    let v3 = ok(store, store.save(&key, b"three", Some(v2)).await, "update");
    ok(store, leases.release_lease(&second).await, "release");
    let what = "the newest of several saves";
    let third = take_with_record(store, &key, ttl, Some((b"three", v3)), what).await;

    // Deleted under the lease: the next one reads no record.
    ok(store, store.delete(&key, v3).await, "delete");
    ok(store, leases.release_lease(&third).await, "release");
    let fourth = take_with_record(store, &key, ttl, None, "a deleted record").await;
    assert!(
        ok(store, leases.release_lease(&fourth).await, "release"),
        "[{b}] release failed"
    );
}

/// Writes that give a lease back ([`SessionStore::save_releasing`] and
/// [`SessionStore::delete_releasing`]), for stores that have leases: a successful write
/// releases the writer's lease; one that fails its compare-and-set writes nothing and
/// keeps the lease; a write with a token that is not the holder's is still a correct
/// compare-and-set and leaves the holder's lease alone; the index of due work (when the
/// store has one) is kept as by `save_pending` and `save`.
pub async fn check_save_releasing<S: SessionStore + Clone>(store: &S) {
    let b = store.backend();
    let leases = lease_store(store);
    let key = format!("{}k", ns("save_releasing"));
    let key = key.as_str();
    let ttl = Duration::from_secs(10);
    let take = |what: &'static str| async move {
        match ok(
            store,
            lease_store(store).acquire_lease(key, ttl).await,
            what,
        ) {
            LeaseAttempt::Acquired(l) => l,
            LeaseAttempt::Busy => panic!("[{b}] {what}: the lease is still held"),
        }
    };
    let held = |what: &'static str| async move {
        let attempt = ok(
            store,
            lease_store(store).acquire_lease(key, ttl).await,
            what,
        );
        assert_eq!(
            attempt,
            LeaseAttempt::Busy,
            "[{b}] {what}: the lease was given back"
        );
    };

    // A new record: written, and the lease is free again.
    let lease = take("take a lease").await;
    let v1 = ok(
        store,
        store.save_releasing(key, b"one", None, None, &lease).await,
        "insert releasing",
    );
    expect_record(store, key, Some((b"one", v1)), "inserted releasing").await;
    let lease = take("take the lease an insert gave back").await;

    // A stale save: a conflict that writes nothing and keeps the lease.
    let stale = store
        .save_releasing(key, b"stale", None, None, &lease)
        .await;
    assert!(
        matches!(stale, Err(Error::Conflict { .. })),
        "[{b}] an insert over a record: expected a conflict, got {stale:?}"
    );
    let stale = store
        .save_releasing(key, b"stale", Some(v1.next().next()), None, &lease)
        .await;
    assert!(
        matches!(stale, Err(Error::Conflict { .. })),
        "[{b}] a stale save releasing: expected a conflict, got {stale:?}"
    );
    expect_record(
        store,
        key,
        Some((b"one", v1)),
        "after a stale save releasing",
    )
    .await;
    held("take the lease after a conflict").await;

    // The current version: written, and released.
    let v2 = ok(
        store,
        store
            .save_releasing(key, b"two", Some(v1), None, &lease)
            .await,
        "update releasing",
    );
    assert_ne!(v2, v1, "[{b}] the version did not change");
    expect_record(store, key, Some((b"two", v2)), "updated releasing").await;
    let holder = take("take the lease an update gave back").await;

    // Someone else's lease: the save is a plain compare-and-set, the lease stays theirs.
    let thief = Lease::with_token(key, "not-the-holder");
    let stale = store
        .save_releasing(key, b"x", Some(v1), None, &thief)
        .await;
    assert!(
        matches!(stale, Err(Error::Conflict { .. })),
        "[{b}] a stale save with a foreign lease: expected a conflict, got {stale:?}"
    );
    let v3 = ok(
        store,
        store
            .save_releasing(key, b"three", Some(v2), None, &thief)
            .await,
        "update with a lease that is not the holder's",
    );
    expect_record(
        store,
        key,
        Some((b"three", v3)),
        "updated with a foreign lease",
    )
    .await;
    held("take a lease a foreign token wrote under").await;

    // The index of due work: marked and unmarked as by `save_pending` and `save`.
    let mut version = v3;
    if let Some(index) = store.pending() {
        let due_keys = || async {
            ok(
                store,
                index.pending_keys(i64::MAX / 2, 100_000).await,
                "pending keys",
            )
        };
        version = ok(
            store,
            store
                .save_releasing(key, b"due", Some(version), Some(0), &holder)
                .await,
            "save releasing, due",
        );
        assert!(
            due_keys().await.iter().any(|k| k == key),
            "[{b}] a save releasing with a due time did not mark the key"
        );
        let lease = take("take the lease a due save gave back").await;
        version = ok(
            store,
            store
                .save_releasing(key, b"done", Some(version), None, &lease)
                .await,
            "save releasing, nothing due",
        );
        assert!(
            !due_keys().await.iter().any(|k| k == key),
            "[{b}] a save releasing with nothing due left the key marked"
        );
    } else {
        ok(store, leases.release_lease(&holder).await, "release");
    }

    // A delete: a conflict keeps the lease, a delete gives it back.
    let lease = take("take the lease before a delete").await;
    let stale = store
        .delete_releasing(key, version.next().next(), &lease)
        .await;
    assert!(
        matches!(stale, Err(Error::Conflict { .. })),
        "[{b}] a stale delete releasing: expected a conflict, got {stale:?}"
    );
    held("take the lease after a delete conflict").await;
    ok(
        store,
        store.delete_releasing(key, version, &lease).await,
        "delete releasing",
    );
    expect_record(store, key, None, "deleted releasing").await;
    let lease = take("take the lease a delete gave back").await;
    // Deleting what is gone succeeds, and gives the lease back too.
    ok(
        store,
        store.delete_releasing(key, version, &lease).await,
        "delete releasing a deleted record",
    );
    let last = take("take the lease a delete of nothing gave back").await;
    assert!(
        ok(store, leases.release_lease(&last).await, "release"),
        "[{b}] release failed"
    );
}

/// [`SessionStore::cache_hint`] tells the truth, so that a pipeline may use its own last
/// write of a record instead of reading it back.
///
/// Without a hint there is nothing to check. A hint without a TTL promises that records
/// live until deleted: a saved record loads back unchanged (also a day later by `clock`,
/// when given). A hint with a TTL promises that a record lives that long after its last
/// save by the hint's clock. With `clock` (the [`ManualClock`] the store reads, which the
/// hint must name), the record still loads just before the TTL and is gone just after.
/// Without `clock` (a store on a server's clock), only a load right after the save is
/// checked; [`check_ttl_real_time`] checks the expiry.
pub async fn check_cache_hint<S: SessionStore + ?Sized>(store: &S, clock: Option<&ManualClock>) {
    let b = store.backend();
    let Some(hint) = store.cache_hint() else {
        return;
    };
    let same_clock = |when: &str| {
        if let Some(clock) = clock {
            assert_eq!(
                hint.clock.now_ms(),
                clock.now_ms(),
                "[{b}] {when}: the cache hint's clock is not the store's clock"
            );
        }
    };
    same_clock("before the save");
    let key = format!("{}k", ns("cache_hint"));
    let v1 = ok(store, store.save(&key, b"one", None).await, "insert");
    let saved_at = hint.clock.now_ms();
    let v2 = ok(store, store.save(&key, b"two", Some(v1)).await, "update");
    let record = Some((&b"two"[..], v2));
    match (hint.ttl, clock) {
        (None, None) => expect_record(store, &key, record, "a record without a ttl").await,
        (None, Some(clock)) => {
            clock.advance(Duration::from_secs(24 * 3600));
            same_clock("a day later");
            let what = "a record without a ttl, a day after its save";
            expect_record(store, &key, record, what).await;
        }
        (Some(ttl), Some(clock)) => {
            assert!(
                ttl >= Duration::from_millis(2),
                "check_cache_hint needs a ttl of at least 2 ms"
            );
            clock.advance(ttl - Duration::from_millis(1));
            same_clock("just before the ttl");
            let what = "a record just before the ttl of the cache hint";
            expect_record(store, &key, record, what).await;
            clock.advance(Duration::from_millis(2));
            let what = "a record just after the ttl of the cache hint";
            expect_record(store, &key, None, what).await;
        }
        (Some(ttl), None) => {
            let loaded = ok(store, store.load(&key).await, "load");
            let elapsed = hint.clock.now_ms().saturating_sub(saved_at);
            if u128::try_from(elapsed).unwrap_or(0) < ttl.as_millis() / 2 {
                let what = "a record right after its save, well within the ttl of the cache hint";
                assert_record(store, loaded.as_ref(), record, what);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use async_trait::async_trait;

    use super::*;
    use crate::store::{MemoryStore, Record};

    /// A broken store: `save` ignores the expected version (last writer wins) and `list`
    /// ignores `limit`.
    #[derive(Debug, Clone, Default)]
    struct Broken(MemoryStore);

    #[async_trait]
    impl SessionStore for Broken {
        fn backend(&self) -> &'static str {
            "broken"
        }
        async fn load(&self, key: &str) -> Result<Option<Record>> {
            self.0.load(key).await
        }
        async fn save(&self, key: &str, bytes: &[u8], _: Option<Version>) -> Result<Version> {
            loop {
                let current = self.0.load(key).await?.map(|l| l.version);
                match self.0.save(key, bytes, current).await {
                    Err(e) if e.is_conflict() => continue,
                    other => return other,
                }
            }
        }
        async fn delete(&self, key: &str, expected: Version) -> Result<()> {
            self.0.delete(key, expected).await
        }
        async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
            self.0
                .list(&ListFilter::prefix(filter.prefix.clone()))
                .await
        }
    }

    async fn fails<F: std::future::Future<Output = ()> + Send + 'static>(check: F) -> bool {
        tokio::spawn(check).await.is_err_and(|e| e.is_panic())
    }

    /// A store with in-process leases over a [`MemoryStore`]; with `stale`, its
    /// `acquire_lease_and_load` hands out the record as it was when the store was made
    /// (none), whatever was saved since.
    #[derive(Debug, Clone, Default)]
    struct Leased {
        records: MemoryStore,
        held:
            std::sync::Arc<std::sync::Mutex<std::collections::HashMap<String, (String, Instant)>>>,
        stale: bool,
    }

    #[async_trait]
    impl SessionStore for Leased {
        fn backend(&self) -> &'static str {
            if self.stale { "stale-lease" } else { "leased" }
        }
        async fn load(&self, key: &str) -> Result<Option<Record>> {
            self.records.load(key).await
        }
        async fn save(&self, key: &str, bytes: &[u8], v: Option<Version>) -> Result<Version> {
            self.records.save(key, bytes, v).await
        }
        async fn delete(&self, key: &str, expected: Version) -> Result<()> {
            self.records.delete(key, expected).await
        }
        async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
            self.records.list(filter).await
        }
        fn leases(&self) -> Option<&dyn LeaseStore> {
            Some(self)
        }
    }

    #[async_trait]
    impl LeaseStore for Leased {
        async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt> {
            let mut held = self.held.lock().unwrap();
            let now = Instant::now();
            if held.get(key).is_some_and(|(_, until)| *until > now) {
                return Ok(LeaseAttempt::Busy);
            }
            let lease = Lease::generate(key);
            held.insert(key.to_owned(), (lease.token().to_owned(), now + ttl));
            Ok(LeaseAttempt::Acquired(lease))
        }
        async fn acquire_lease_and_load(
            &self,
            key: &str,
            ttl: Duration,
        ) -> Result<(LeaseAttempt, Preload)> {
            let attempt = self.acquire_lease(key, ttl).await?;
            if !matches!(attempt, LeaseAttempt::Acquired(_)) {
                return Ok((attempt, Preload::NotRead));
            }
            let record = if self.stale {
                None
            } else {
                self.records.load(key).await?
            };
            Ok((attempt, Preload::Read(record)))
        }
        async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
            let mut held = self.held.lock().unwrap();
            let now = Instant::now();
            match held.get_mut(lease.key()) {
                Some((token, until)) if token == lease.token() && *until > now => {
                    *until = now + ttl;
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
        async fn release_lease(&self, lease: &Lease) -> Result<bool> {
            let mut held = self.held.lock().unwrap();
            let now = Instant::now();
            match held.get(lease.key()) {
                Some((token, until)) if token == lease.token() && *until > now => {
                    held.remove(lease.key());
                    Ok(true)
                }
                _ => Ok(false),
            }
        }
    }

    /// A store whose cache hint claims `claimed` as the records' TTL (on the store's
    /// clock) while they really live for the TTL of the memory store inside.
    #[derive(Debug, Clone)]
    struct Hinted {
        records: MemoryStore,
        claimed: Option<Duration>,
        clock: std::sync::Arc<dyn crate::clock::Clock>,
    }

    #[async_trait]
    impl SessionStore for Hinted {
        fn backend(&self) -> &'static str {
            "hinted"
        }
        async fn load(&self, key: &str) -> Result<Option<Record>> {
            self.records.load(key).await
        }
        async fn save(&self, key: &str, bytes: &[u8], v: Option<Version>) -> Result<Version> {
            self.records.save(key, bytes, v).await
        }
        async fn delete(&self, key: &str, expected: Version) -> Result<()> {
            self.records.delete(key, expected).await
        }
        async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
            self.records.list(filter).await
        }
        fn cache_hint(&self) -> Option<crate::store::CacheHint> {
            let clock = std::sync::Arc::clone(&self.clock);
            Some(crate::store::CacheHint::new(self.claimed, clock, true))
        }
    }

    fn hinted(ttl: Option<Duration>, claimed: Option<Duration>) -> (Hinted, ManualClock) {
        let clock = ManualClock::at_secs(1_700_000_000);
        let shared: std::sync::Arc<dyn crate::clock::Clock> = std::sync::Arc::new(clock.clone());
        let records = MemoryStore::new().with_clock(std::sync::Arc::clone(&shared));
        let records = match ttl {
            Some(ttl) => records.with_ttl(ttl),
            None => records,
        };
        let store = Hinted {
            records,
            claimed,
            clock: shared,
        };
        (store, clock)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_suite_catches_a_broken_store() {
        assert!(fails(async { check_stale_save_conflicts(&Broken::default()).await }).await);
        assert!(fails(async { check_insert_if_absent_conflicts(&Broken::default()).await }).await);
        assert!(fails(async { check_concurrent_cas(&Broken::default()).await }).await);
        assert!(fails(async { check_list(&Broken::default()).await }).await);
        // What it does right still passes.
        check_round_trip(&Broken::default()).await;
        check_odd_payloads(&Broken::default()).await;
    }

    /// A store with leases passes `run_all`, lease checks included; one whose lease comes
    /// with a stale record does not.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_suite_checks_leases_and_the_record_read_with_them() {
        run_all(Leased::default()).await;
        let stale = Leased {
            stale: true,
            ..Leased::default()
        };
        check_leases(&stale).await;
        assert!(fails(async move { check_lease_and_load(&stale).await }).await);
    }

    /// A cache hint must not promise records a longer or shorter life than they have.
    #[tokio::test]
    async fn the_suite_catches_a_cache_hint_that_lies() {
        let minute = Duration::from_secs(60);
        let (honest, clock) = hinted(Some(minute), Some(minute));
        check_cache_hint(&honest, Some(&clock)).await;
        let (honest, clock) = hinted(None, None);
        check_cache_hint(&honest, Some(&clock)).await;
        check_cache_hint(&honest, None).await;

        let (longer, clock) = hinted(Some(minute), Some(2 * minute));
        assert!(fails(async move { check_cache_hint(&longer, Some(&clock)).await }).await);
        let (forever, clock) = hinted(Some(minute), None);
        assert!(fails(async move { check_cache_hint(&forever, Some(&clock)).await }).await);
        let (shorter, clock) = hinted(None, Some(minute));
        assert!(fails(async move { check_cache_hint(&shorter, Some(&clock)).await }).await);
    }
}

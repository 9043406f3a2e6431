//! Store faults under the pipeline, through `testing::FaultStore`: failed, slow and timed
//! out calls of every kind, writes that reached the store but whose answer was lost, and
//! a storm of them over many keys. On the memory store, and on Redis (own key prefix)
//! with and without leases when `STAGECRAFT_REDIS_URL` is set.
//!
//! What every case shows: the caller gets a clear error (an `Error::Store` whose source is
//! the injected fault); the stored record is the one before or the one after the update,
//! never anything else, and it decodes; the key's queue and lease are released (no key
//! in flight, no lease left, the next update of the key runs and sees the stored session).

mod common;

use std::sync::Arc;
use std::time::Duration;

use stagecraft::pipeline::LeaseConfig;
use stagecraft::prelude::*;
use stagecraft::record::inspect;
use stagecraft::store::{LeaseAttempt, ListFilter};
use stagecraft::testing::{Call, Fault, FaultStore, InjectedFault, TestBot};

/// How long a Redis lease lives here: a lease left behind by a lost answer blocks its key
/// this long.
const LEASE_TTL: Duration = Duration::from_millis(400);

/// A store under test: the decorator, and whether the pipeline takes leases on it.
struct Backend {
    name: &'static str,
    faults: Arc<FaultStore>,
    leases: bool,
    /// Redis key prefix to clean up at the end.
    prefix: Option<String>,
}

async fn backends(test: &str) -> Vec<Backend> {
    let mut v = vec![Backend {
        name: "memory",
        faults: FaultStore::new(Arc::new(MemoryStore::new())),
        leases: false,
        prefix: None,
    }];
    #[cfg(feature = "redis")]
    if let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") {
        for (name, leases) in [("redis with leases", true), ("redis without leases", false)] {
            let prefix = format!("{}:", common::unique_name(test));
            let store = stagecraft::store::RedisStore::connect(&url)
                .await
                .unwrap()
                .with_prefix(&prefix)
                .unwrap();
            v.push(Backend {
                name,
                faults: FaultStore::new(Arc::new(store)),
                leases,
                prefix: Some(prefix),
            });
        }
    }
    #[cfg(not(feature = "redis"))]
    let _ = test;
    v
}

impl Backend {
    /// The counting bot on this store: every message adds one to the session and replies
    /// `n=<n>`; `/forget` deletes the session; `slow` takes 300 ms.
    fn bot(&self) -> TestBot<u64> {
        let leases = if self.leases {
            LeaseConfig::new()
                .ttl(LEASE_TTL)
                .wait(Duration::from_secs(10))
        } else {
            LeaseConfig::off()
        };
        TestBot::with_store(self.faults.clone(), |b| {
            b.leases(leases)
                .command("forget", |cx: Cx<u64>| async move {
                    cx.clear_session()?;
                    cx.reply("forgotten");
                    Ok(Outcome::Handled)
                })
                .on_message(|cx: Cx<u64>| async move {
                    if cx.update().message_text() == Some("slow") {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    let n = cx.session_mut(|n| {
                        *n += 1;
                        *n
                    })?;
                    cx.reply(format!("n={n}"));
                    Ok(Outcome::Handled)
                })
                .build()
        })
    }

    /// The stored counter of `key`, read past the decorator; the record must decode.
    async fn stored(&self, key: &str) -> Option<u64> {
        let record = self.faults.inner().load(key).await.unwrap()?;
        let info = inspect(&record.bytes)
            .unwrap_or_else(|e| panic!("{}: the record of {key} does not decode: {e}", self.name));
        Some(
            info.data
                .as_u64()
                .unwrap_or_else(|| panic!("{}: not a counter: {}", self.name, info.data)),
        )
    }

    /// Nothing of `key` is held: no update in flight, no lease left in the store.
    async fn assert_settled(&self, bot: &TestBot<u64>, key: &str) {
        assert_eq!(bot.pipeline().keys_in_flight(), 0, "{}", self.name);
        if let Some(leases) = self.faults.inner().leases() {
            match leases.acquire_lease(key, LEASE_TTL).await.unwrap() {
                LeaseAttempt::Acquired(lease) => {
                    assert!(leases.release_lease(&lease).await.unwrap());
                }
                LeaseAttempt::Busy => panic!("{}: the lease of {key} was left held", self.name),
            }
        }
    }

    /// Whether the pipeline makes calls of kind `call` on this store in these tests (a
    /// pipeline with leases reads the record with the lease, not with `load`).
    fn makes(&self, call: Call) -> bool {
        match call {
            Call::Load => !self.leases,
            Call::AcquireLease | Call::RenewLease | Call::ReleaseLease => self.leases,
            _ => true,
        }
    }

    async fn cleanup(&self) {
        if self.prefix.is_none() {
            return;
        }
        let inner = self.faults.inner();
        for key in inner.list(&ListFilter::default()).await.unwrap() {
            if let Some(r) = inner.load(&key).await.unwrap() {
                let _ = inner.delete(&key, r.version).await;
            }
        }
    }
}

/// Sends `text` as `user` (in a chat of their own).
async fn send(bot: &TestBot<u64>, user: i64, text: &str) -> stagecraft::Result<Vec<String>> {
    bot.texts_of(bot.message_from(user, user, text)).await
}

fn key_of(bot: &TestBot<u64>, user: i64) -> String {
    bot.pipeline()
        .key_of(&bot.message_from(user, user, ""))
        .unwrap()
}

/// The injected fault behind `err`, which must be a store error that says so.
fn injected(err: &stagecraft::Error, name: &str) -> InjectedFault {
    let chain = stagecraft::error::error_chain(err);
    assert!(err.is_store(), "{name}: not a store error: {chain}");
    assert!(chain.contains("injected fault"), "{name}: {chain}");
    *InjectedFault::of(err).unwrap()
}

#[tokio::test]
async fn a_failed_or_timed_out_call_fails_its_update_and_frees_the_key() {
    let timeout = Fault::Timeout(Duration::from_millis(50));
    let cases = [
        (Call::Load, Fault::Fail),
        (Call::Load, timeout),
        (Call::Load, Fault::FailAfter),
        (Call::Save, Fault::Fail),
        (Call::Save, timeout),
        (Call::Delete, Fault::Fail),
        (Call::Delete, timeout),
        (Call::AcquireLease, Fault::Fail),
        (Call::AcquireLease, timeout),
    ];
    for backend in backends("faults_fail").await {
        let bot = backend.bot();
        let mut ran = 0;
        for (i, (call, fault)) in cases.into_iter().enumerate() {
            if !backend.makes(call) {
                continue;
            }
            ran += 1;
            let name = format!("{}: {call} {fault:?}", backend.name);
            let user = 100 + i64::try_from(i).unwrap();
            let key = key_of(&bot, user);
            // A load is made by the first update of a key; saves and deletes need a record.
            if call != Call::Load {
                assert_eq!(send(&bot, user, "a").await.unwrap(), ["n=1"], "{name}");
            }
            let before = backend.stored(&key).await;
            backend.faults.inject(call, fault, 1);
            let text = if call == Call::Delete { "/forget" } else { "b" };
            let err = send(&bot, user, text).await.unwrap_err();
            let got = injected(&err, &name);
            assert_eq!((got.call, got.fault), (call, fault), "{name}");
            assert_eq!(
                backend.faults.faults_left(call),
                0,
                "{name}: the fault fired"
            );
            assert_eq!(
                backend.stored(&key).await,
                before,
                "{name}: nothing written"
            );
            backend.assert_settled(&bot, &key).await;
            // The next update of the key runs, on the session as stored.
            let next = before.unwrap_or(0) + 1;
            assert_eq!(
                send(&bot, user, "c").await.unwrap(),
                [format!("n={next}")],
                "{name}"
            );
            assert_eq!(backend.stored(&key).await, Some(next), "{name}");
            backend.assert_settled(&bot, &key).await;
        }
        assert!(ran >= 6, "{}: {ran} cases ran", backend.name);
        backend.cleanup().await;
    }
}

#[tokio::test]
async fn a_write_whose_answer_was_lost_leaves_a_consistent_session() {
    for backend in backends("faults_lost").await {
        let name = backend.name;
        // Two replicas of the bot on one store: `a` keeps its session cached between
        // updates where the store allows it (memory), `b` loses the answer of its save.
        let a = backend.bot();
        let b = backend.bot();
        let key = key_of(&a, 7);
        assert_eq!(send(&a, 7, "x").await.unwrap(), ["n=1"], "{name}");
        let written = backend.faults.inner().load(&key).await.unwrap().unwrap();
        backend.faults.inject(Call::Save, Fault::FailAfter, 1);
        let err = send(&b, 7, "x").await.unwrap_err();
        assert_eq!(injected(&err, name).call, Call::Save, "{name}");
        // The write reached the store: the record is the update's, whole.
        assert_eq!(backend.stored(&key).await, Some(2), "{name}");
        backend.assert_settled(&b, &key).await;
        // A caller retrying the lost save with the version it had is refused by the
        // compare-and-set instead of writing twice.
        let again = backend
            .faults
            .save(&key, &written.bytes, Some(written.version))
            .await
            .unwrap_err();
        assert!(again.is_conflict(), "{name}: {again}");
        // Replica `a`'s copy (n=1) is stale: its update is caught by the compare-and-set
        // and runs again on the stored record, as does `b`'s next one.
        assert_eq!(send(&a, 7, "x").await.unwrap(), ["n=3"], "{name}");
        assert_eq!(send(&b, 7, "x").await.unwrap(), ["n=4"], "{name}");
        assert_eq!(backend.stored(&key).await, Some(4), "{name}");
        backend.assert_settled(&a, &key).await;

        // A delete whose answer was lost: the record is gone, the next update starts anew.
        backend.faults.inject(Call::Delete, Fault::FailAfter, 1);
        let err = send(&b, 7, "/forget").await.unwrap_err();
        assert_eq!(injected(&err, name).call, Call::Delete, "{name}");
        assert_eq!(backend.stored(&key).await, None, "{name}");
        backend.assert_settled(&b, &key).await;
        assert_eq!(send(&a, 7, "x").await.unwrap(), ["n=1"], "{name}");
        assert_eq!(send(&b, 7, "x").await.unwrap(), ["n=2"], "{name}");
        backend.assert_settled(&a, &key).await;
        backend.cleanup().await;
    }
}

#[tokio::test]
async fn delayed_calls_only_slow_the_update_down() {
    let delay = Fault::Delay(Duration::from_millis(30));
    for backend in backends("faults_delay").await {
        let bot = backend.bot();
        let key = key_of(&bot, 9);
        for call in [
            Call::Load,
            Call::Save,
            Call::AcquireLease,
            Call::ReleaseLease,
        ] {
            if backend.makes(call) {
                backend.faults.inject(call, delay, 1);
            }
        }
        assert_eq!(
            send(&bot, 9, "x").await.unwrap(),
            ["n=1"],
            "{}",
            backend.name
        );
        backend.faults.inject(Call::Delete, delay, 1);
        assert_eq!(send(&bot, 9, "/forget").await.unwrap(), ["forgotten"]);
        for call in [Call::Load, Call::Save, Call::Delete] {
            assert_eq!(
                backend.faults.faults_left(call),
                0,
                "{}: {call}",
                backend.name
            );
        }
        assert_eq!(backend.stored(&key).await, None, "{}", backend.name);
        backend.assert_settled(&bot, &key).await;
        backend.cleanup().await;
    }
}

/// Lease calls that fail: a lost answer to an acquire leaves a lease nobody holds, which
/// blocks the key until it expires; a failed release is only logged (the update is
/// done), its lease expires by itself; failed renewals are tried again.
#[tokio::test]
async fn lease_faults_block_a_key_at_most_for_the_lease_ttl() {
    for backend in backends("faults_lease").await {
        if !backend.leases {
            continue;
        }
        let name = backend.name;
        let bot = backend.bot();
        let key = key_of(&bot, 11);
        assert_eq!(send(&bot, 11, "x").await.unwrap(), ["n=1"], "{name}");

        backend
            .faults
            .inject(Call::AcquireLease, Fault::FailAfter, 1);
        let err = send(&bot, 11, "x").await.unwrap_err();
        assert_eq!(injected(&err, name).call, Call::AcquireLease, "{name}");
        assert_eq!(bot.pipeline().keys_in_flight(), 0, "{name}");
        assert_eq!(backend.stored(&key).await, Some(1), "{name}");
        // The orphan lease holds the key until its TTL; then the next update runs.
        let started = tokio::time::Instant::now();
        assert_eq!(send(&bot, 11, "x").await.unwrap(), ["n=2"], "{name}");
        let waited = started.elapsed();
        assert!(
            waited >= LEASE_TTL / 2,
            "{name}: the orphan lease held the key: {waited:?}"
        );
        assert!(waited < LEASE_TTL * 5, "{name}: {waited:?}");
        backend.assert_settled(&bot, &key).await;

        backend.faults.inject(Call::ReleaseLease, Fault::Fail, 1);
        assert_eq!(send(&bot, 11, "x").await.unwrap(), ["n=3"], "{name}");
        assert_eq!(backend.faults.fired(Call::ReleaseLease), 1, "{name}");
        assert_eq!(send(&bot, 11, "x").await.unwrap(), ["n=4"], "{name}");
        backend.assert_settled(&bot, &key).await;

        backend
            .faults
            .inject(Call::ReleaseLease, Fault::FailAfter, 1);
        assert_eq!(send(&bot, 11, "x").await.unwrap(), ["n=5"], "{name}");
        backend.assert_settled(&bot, &key).await;

        // Renewals every LEASE_TTL / 3; the slow update sees two of them fail.
        backend.faults.inject(Call::RenewLease, Fault::Fail, 2);
        assert_eq!(send(&bot, 11, "slow").await.unwrap(), ["n=6"], "{name}");
        assert!(backend.faults.fired(Call::RenewLease) >= 1, "{name}");
        backend.faults.clear();
        backend.assert_settled(&bot, &key).await;
        assert_eq!(backend.stored(&key).await, Some(6), "{name}");
        backend.cleanup().await;
    }
}

/// Many keys at once, with every kind of fault scripted over the stream: every failed
/// update says why, no key stays stuck, and each key's counter counts at least every
/// update that succeeded and at most every update sent (a lost answer may have written).
#[tokio::test]
async fn a_storm_of_faults_leaves_no_stuck_key() {
    const KEYS: i64 = 8;
    const ROUNDS: usize = 25;
    for backend in backends("faults_storm").await {
        let name = backend.name;
        let bot = backend.bot();
        let faults = &backend.faults;
        for _ in 0..ROUNDS {
            for call in [
                Call::Load,
                Call::Save,
                Call::AcquireLease,
                Call::ReleaseLease,
            ] {
                if !backend.makes(call) {
                    continue;
                }
                faults.inject(call, Fault::Fail, 1);
                faults.inject(call, Fault::Delay(Duration::from_millis(2)), 2);
                faults.inject(call, Fault::Timeout(Duration::from_millis(5)), 1);
                faults.inject(call, Fault::FailAfter, 1);
                // Calls that pass through between the faults.
                faults.inject(call, Fault::Delay(Duration::ZERO), 3);
            }
        }
        let mut ok = vec![0u64; KEYS as usize];
        let mut sent = vec![0u64; KEYS as usize];
        let mut errors = 0;
        for _ in 0..ROUNDS {
            let mut batch = Vec::new();
            for user in 0..KEYS {
                for _ in 0..2 {
                    sent[user as usize] += 1;
                    let update = bot.message_from(user + 1, user + 1, "x");
                    batch.push((user, tokio::spawn(bot.pipeline().handle(update))));
                }
            }
            for (user, task) in batch {
                match task.await.expect("no panic") {
                    Ok(_) => ok[user as usize] += 1,
                    Err(e) => {
                        errors += 1;
                        // A lost lease-acquire answer can outlast the lease wait only
                        // if the TTL did; everything else is the injected fault.
                        injected(&e, name);
                    }
                }
            }
        }
        assert!(errors > 0, "{name}: faults fired");
        eprintln!(
            "{name}: {} updates, {errors} failed by injected faults",
            sent.iter().sum::<u64>()
        );
        assert_eq!(bot.pipeline().keys_in_flight(), 0, "{name}");
        faults.clear();
        for user in 0..KEYS {
            let key = key_of(&bot, user + 1);
            let n = backend.stored(&key).await.unwrap_or(0);
            let i = user as usize;
            assert!(
                ok[i] <= n && n <= sent[i],
                "{name}: key {key}: {n} stored, {} succeeded of {} sent",
                ok[i],
                sent[i]
            );
            assert_eq!(
                send(&bot, user + 1, "x").await.unwrap(),
                [format!("n={}", n + 1)],
                "{name}"
            );
            backend.assert_settled(&bot, &key).await;
        }
        backend.cleanup().await;
    }
}

//! The conformance suite on [`MemoryStore`].

use std::sync::Arc;
use std::time::Duration;

use stagecraft::clock::ManualClock;
use stagecraft::store::MemoryStore;
use stagecraft::testing::conformance;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance() {
    conformance::run_all(MemoryStore::new()).await;
    assert_eq!(
        refused_keys(&MemoryStore::new()).await,
        Vec::<String>::new()
    );
}

#[tokio::test]
async fn ttl_on_a_virtual_clock() {
    let clock = ManualClock::at_secs(1_700_000_000);
    let ttl = Duration::from_secs(300);
    let store = MemoryStore::new()
        .with_ttl(ttl)
        .with_clock(Arc::new(clock.clone()));
    conformance::check_ttl(&store, &clock, ttl).await;
    conformance::check_cache_hint(&store, Some(&clock)).await;
}

#[tokio::test]
async fn a_cache_hint_without_ttl_on_a_virtual_clock() {
    let clock = ManualClock::at_secs(1_700_000_000);
    let store = MemoryStore::new().with_clock(Arc::new(clock.clone()));
    conformance::check_cache_hint(&store, Some(&clock)).await;
}

#[tokio::test]
async fn clones_share_records() {
    let store = MemoryStore::new();
    conformance::check_shared(&store, &store.clone()).await;
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

//! Back-pressure: a bounded queue per key, and a flooded key does not starve the others.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};
use stagecraft::prelude::*;
use stagecraft::session::inspect;
use stagecraft::store::{MemoryStore, SessionStore};
use tokio::sync::Semaphore;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Count {
    count: u64,
}

type C = Cx<Count>;

fn msg(id: i64, chat: i64) -> TelegramUpdate {
    TelegramUpdate::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{chat}}},"from":{{"id":{chat}}},"text":"x"}}}}"#
    ))
    .unwrap()
}

async fn stored_count(store: &MemoryStore, key: &str) -> u64 {
    let rec = store.load(key).await.unwrap().expect("a stored session");
    inspect(&rec.bytes).unwrap().data["count"].as_u64().unwrap()
}

/// A bot whose chat 1 handler waits for a permit of `gate` (the test holds them back).
fn gated_bot(store: MemoryStore, gate: Arc<Semaphore>, done: Arc<AtomicUsize>) -> Pipeline<Count> {
    Pipeline::<Count>::builder()
        .store(store)
        .max_queue_per_key(8)
        .on_text(move |cx: C| {
            let gate = Arc::clone(&gate);
            let done = Arc::clone(&done);
            async move {
                if cx.key() == Some("1:1") {
                    gate.acquire().await?.forget();
                    done.fetch_add(1, Ordering::SeqCst);
                }
                cx.session_mut(|s| s.count += 1)?;
                Ok(Outcome::Handled)
            }
        })
        .build()
}

/// One user floods their key with 1,000 updates while its handler is stuck: one runs,
/// eight wait, the rest are refused at once with `Overloaded`. Meanwhile another key's
/// updates all complete, before a single flooded update has finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_one_key_does_not_starve_another() {
    let store = MemoryStore::new();
    let gate = Arc::new(Semaphore::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let bot = gated_bot(store.clone(), Arc::clone(&gate), Arc::clone(&done));

    let flood: Vec<_> = (0..1000)
        .map(|i| tokio::spawn(bot.handle(msg(i, 1))))
        .collect();
    for i in 0..50 {
        bot.handle(msg(10_000 + i, 2)).await.unwrap();
    }
    assert_eq!(stored_count(&store, "2:2").await, 50);
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the flooded key is still stuck"
    );

    gate.add_permits(1000);
    let (mut handled, mut refused) = (0, 0);
    for t in flood {
        match t.await.unwrap() {
            Ok(_) => handled += 1,
            Err(Error::Overloaded { key }) => {
                assert_eq!(key, "1:1");
                refused += 1;
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(
        (handled, refused),
        (9, 991),
        "one running and eight waiting were kept"
    );
    assert_eq!(stored_count(&store, "1:1").await, 9);
    assert_eq!(bot.keys_in_flight(), 0);

    // The key takes updates again once its queue drained.
    bot.handle(msg(20_000, 1)).await.unwrap();
    assert_eq!(stored_count(&store, "1:1").await, 10);
}

/// Without a bound, every update of a burst is kept and handled in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unbounded_by_default() {
    let store = MemoryStore::new();
    let bot = Pipeline::<Count>::builder()
        .store(store.clone())
        .on_text(|cx: C| async move {
            tokio::task::yield_now().await;
            cx.session_mut(|s| s.count += 1)?;
            Ok(Outcome::Handled)
        })
        .build();
    let tasks: Vec<_> = (0..500)
        .map(|i| tokio::spawn(bot.handle(msg(i, 3))))
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(stored_count(&store, "3:3").await, 500);
}

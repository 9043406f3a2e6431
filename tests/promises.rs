//! The five ways Telegraf's session guide says data is lost, each shown impossible here.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use stagecraft::prelude::*;
use stagecraft::session::inspect;
use stagecraft::store::MemoryStore;
use stagecraft::testing::TestBot;
use stagecraft::transport::{Outgoing, Transport};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Count {
    count: u64,
}

type C = Cx<Count>;

fn msg(id: i64, chat: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"message_id":{id},"chat":{{"id":{chat}}},"from":{{"id":{chat}}},"text":"{text}"}}}}"#
    ))
    .unwrap()
}

async fn stored_count(store: &MemoryStore, key: &str) -> u64 {
    let rec = store.load(key).await.unwrap().expect("a stored session");
    inspect(&rec.bytes).unwrap().data["count"].as_u64().unwrap()
}

/// Rule 1: "always await async calls". A handler is a future the pipeline awaits to the
/// end: work after an `.await` is part of the update, its session change is saved and its
/// reply sent before `handle` returns.
#[tokio::test]
async fn rule1_handlers_cannot_forget_to_await() {
    let store = MemoryStore::new();
    let replies = RecordingTransport::new();
    let bot = Pipeline::<Count>::builder()
        .store(store.clone())
        .transport(replies.clone())
        .on_text(|cx: C| async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            cx.session_mut(|s| s.count += 1)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
            cx.reply("done after two awaits");
            Ok(Outcome::Handled)
        })
        .build();
    bot.handle(msg(1, 5, "hi")).await.unwrap();
    assert_eq!(stored_count(&store, "5:5").await, 1);
    assert_eq!(replies.texts(), ["done after two awaits"]);
}

/// Rule 2: "a parallel update's changes are also written". Two middlewares writing in one
/// update both count; parallel updates of the key each write their own increment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule2_two_writers_in_one_update_and_parallel_updates_lose_nothing() {
    let store = MemoryStore::new();
    let bot = Pipeline::<Count>::builder()
        .store(store.clone())
        .middleware(|cx: C, next: Next<Count, TelegramUpdate>| async move {
            cx.session_mut(|s| s.count += 1)?;
            next.run(cx).await
        })
        .on_text(|cx: C| async move {
            tokio::task::yield_now().await;
            cx.session_mut(|s| s.count += 1)?;
            Ok(Outcome::Handled)
        })
        .build();
    let futures: Vec<_> = (0..50).map(|i| bot.handle(msg(i, 9, "x"))).collect();
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(stored_count(&store, "9:9").await, 100);
    assert_eq!(bot.keys_in_flight(), 0);
}

fn failing_bot(
    policy: ErrorPolicy,
    store: MemoryStore,
    replies: RecordingTransport,
) -> Pipeline<Count> {
    Pipeline::<Count>::builder()
        .store(store)
        .transport(replies)
        .error_policy(policy)
        .on_text(|cx: C| async move {
            cx.session_mut(|s| s.count += 1)?;
            cx.reply("counted");
            if cx.update().message_text() == Some("fail") {
                return Err("the payment provider is down".into());
            }
            Ok(Outcome::Handled)
        })
        .build()
}

/// Rule 3, Telegraf's policy: the session is written even though the handler failed,
/// the replies made before the failure are sent, and the error is reported.
#[tokio::test]
async fn rule3_on_error_write_anyway_keeps_the_change_and_reports() {
    let (store, replies) = (MemoryStore::new(), RecordingTransport::new());
    let bot = failing_bot(ErrorPolicy::WriteAnyway, store.clone(), replies.clone());
    bot.handle(msg(1, 3, "ok")).await.unwrap();
    let err = bot.handle(msg(2, 3, "fail")).await.unwrap_err();
    assert!(matches!(err, Error::Handler(_)), "{err:?}");
    assert_eq!(stored_count(&store, "3:3").await, 2);
    assert_eq!(replies.texts(), ["counted", "counted"]);
}

/// Rule 3, the other policy: nothing of the failed update is written or sent.
#[tokio::test]
async fn rule3_on_error_roll_back_writes_nothing_and_sends_nothing() {
    let (store, replies) = (MemoryStore::new(), RecordingTransport::new());
    let bot = failing_bot(ErrorPolicy::RollBack, store.clone(), replies.clone());
    bot.handle(msg(1, 3, "ok")).await.unwrap();
    let before = store.load("3:3").await.unwrap().unwrap();
    assert!(bot.handle(msg(2, 3, "fail")).await.is_err());
    assert_eq!(
        store.load("3:3").await.unwrap().unwrap(),
        before,
        "the record did not move"
    );
    assert_eq!(stored_count(&store, "3:3").await, 1);
    assert_eq!(replies.texts(), ["counted"]);
    // The next update starts from the stored session, not from the rolled-back objects.
    bot.handle(msg(3, 3, "ok")).await.unwrap();
    assert_eq!(stored_count(&store, "3:3").await, 2);
}

/// A transport that checks, for each reply, that the session it speaks of is already stored.
#[derive(Debug)]
struct CheckingTransport {
    store: MemoryStore,
    seen: std::sync::Mutex<Vec<u64>>,
}

#[async_trait]
impl Transport for CheckingTransport {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        let Outgoing::Text { text, chat_id, .. } = msg else {
            return Ok(());
        };
        let said: u64 = text.parse()?;
        let stored = stored_count(&self.store, &format!("{chat_id}:{chat_id}")).await;
        assert_eq!(
            stored, said,
            "a reply went out before its session was stored"
        );
        self.seen.lock().unwrap().push(said);
        Ok(())
    }
}

/// Rule 4: "disable webhookReply". Whatever the transport, a reply is sent only after the
/// session it reflects has been stored, and the next update of the key starts after that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule4_replies_go_out_only_after_the_session_is_stored() {
    let store = MemoryStore::new();
    let transport = Arc::new(CheckingTransport {
        store: store.clone(),
        seen: Default::default(),
    });
    let bot = Pipeline::<Count>::builder()
        .store(store.clone())
        .transport(Arc::clone(&transport))
        .on_text(|cx: C| async move {
            let n = cx.session_mut(|s| {
                s.count += 1;
                s.count
            })?;
            cx.reply(n.to_string());
            Ok(Outcome::Handled)
        })
        .build();
    // As concurrent webhook requests would deliver them.
    let futures: Vec<_> = (0..30).map(|i| bot.handle(msg(i, 4, "x"))).collect();
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(
        *transport.seen.lock().unwrap(),
        (1..=30).collect::<Vec<_>>()
    );
}

fn stale_writer(store: MemoryStore) -> Pipeline<Count> {
    Pipeline::<Count>::builder()
        .store(store)
        .max_attempts(1000)
        .on_text(|cx: C| async move {
            // Read, await something slow, write what was read + 1: Telegraf's rule 5 example.
            let count = cx.session(|s| s.count)?;
            tokio::time::sleep(Duration::from_millis(1)).await;
            cx.session_mut(|s| s.count = count + 1)?;
            Ok(Outcome::Handled)
        })
        .build()
}

/// Rule 5: "don't write stale values after an await". In one process no other update of
/// the key can run during the await, so the value read is still current when written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule5_no_stale_write_after_an_await_in_one_process() {
    let store = MemoryStore::new();
    let bot = stale_writer(store.clone());
    let futures: Vec<_> = (0..40).map(|i| bot.handle(msg(i, 6, "x"))).collect();
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(stored_count(&store, "6:6").await, 40);
}

/// Rule 5 across processes: two pipelines with their own queues (as two replicas would
/// have) share one store. Their stale writes collide; compare-and-set catches every one
/// and the loser reruns on the fresh session, so no increment is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule5_no_stale_write_across_replicas_sharing_a_store() {
    let store = MemoryStore::new();
    let a = stale_writer(store.clone());
    let b = stale_writer(store.clone());
    let mut tasks = Vec::new();
    for i in 0..30 {
        tasks.push(tokio::spawn(a.handle(msg(i, 8, "x"))));
        tasks.push(tokio::spawn(b.handle(msg(100 + i, 8, "x"))));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(stored_count(&store, "8:8").await, 60);
}

/// The replies of an attempt that lost a conflict are never sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_of_a_lost_attempt_are_dropped() {
    let store = MemoryStore::new();
    let replies = RecordingTransport::new();
    let make = |store: MemoryStore, replies: RecordingTransport| {
        Pipeline::<Count>::builder()
            .store(store)
            .transport(replies)
            .max_attempts(1000)
            .on_text(|cx: C| async move {
                let count = cx.session(|s| s.count)?;
                tokio::time::sleep(Duration::from_millis(1)).await;
                cx.session_mut(|s| s.count = count + 1)?;
                cx.reply((count + 1).to_string());
                Ok(Outcome::Handled)
            })
            .build()
    };
    let a = make(store.clone(), replies.clone());
    let b = make(store.clone(), replies.clone());
    let mut tasks = Vec::new();
    for i in 0..20 {
        tasks.push(tokio::spawn(a.handle(msg(i, 2, "x"))));
        tasks.push(tokio::spawn(b.handle(msg(100 + i, 2, "x"))));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut said: Vec<u64> = replies.texts().iter().map(|t| t.parse().unwrap()).collect();
    said.sort_unstable();
    assert_eq!(
        said,
        (1..=40).collect::<Vec<_>>(),
        "each committed value announced exactly once"
    );
}

/// A conversation helper check: TestBot sees the same session as the pipeline.
#[tokio::test]
async fn testbot_reads_the_stored_session() {
    let bot = TestBot::<Count>::new(|b| {
        b.on_text(|cx: C| async move {
            cx.session_mut(|s| s.count += 1)?;
            Ok(Outcome::Handled)
        })
        .build()
    });
    bot.send("a").await.unwrap();
    bot.send("b").await.unwrap();
    assert_eq!(bot.stored().await.unwrap().data["count"], 2);
}

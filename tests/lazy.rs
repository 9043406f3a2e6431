//! The session costs store I/O only when it is needed.

mod common;

use std::sync::Arc;

use common::CountingStore;
use serde::{Deserialize, Serialize};
use stagecraft::prelude::*;
use stagecraft::session::SavePolicy;

#[derive(Debug, Default, Serialize, Deserialize)]
struct D {
    n: u32,
}

type C = Cx<D>;

fn msg(id: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"chat":{{"id":1}},"from":{{"id":1}},"text":"{text}"}}}}"#
    ))
    .unwrap()
}

fn bot(store: Arc<CountingStore>, policy: SavePolicy) -> Pipeline<D> {
    bot_with(store, policy, true)
}

/// `guarantees`: de-duplication on (the default). It needs the session before the first
/// handler (to check the recent update ids), as the outbox does (to find pending
/// replies), so only without both is an update no handler takes free of store I/O.
fn bot_with(store: Arc<CountingStore>, policy: SavePolicy, guarantees: bool) -> Pipeline<D> {
    let b = Pipeline::<D>::builder()
        .store_arc(store)
        .save_policy(policy);
    let b = if guarantees {
        b
    } else {
        b.outbox(false).dedup_window(0)
    };
    b.command("inc", |cx: C| async move {
        cx.session_mut(|d| d.n += 1)?;
        Ok(Outcome::Handled)
    })
    .command("read", |cx: C| async move {
        let n = cx.session(|d| d.n)?;
        cx.reply(n.to_string());
        Ok(Outcome::Handled)
    })
    .command("same", |cx: C| async move {
        cx.session_mut(|d| d.n += 0)?;
        Ok(Outcome::Handled)
    })
    .build()
}

#[tokio::test]
async fn an_update_no_handler_takes_reads_nothing() {
    let store = CountingStore::new();
    let lazy = bot_with(Arc::clone(&store), SavePolicy::Changed, false);
    assert_eq!(
        lazy.handle(msg(1, "just chatting")).await.unwrap(),
        Dispatch::Unhandled
    );
    assert_eq!(store.calls().0, 0);
    assert_eq!(store.calls().1, 0);

    // With de-duplication, the session is read first (one load), and
    // still nothing is written.
    let store = CountingStore::new();
    let guarded = bot(Arc::clone(&store), SavePolicy::Changed);
    assert_eq!(
        guarded.handle(msg(1, "just chatting")).await.unwrap(),
        Dispatch::Unhandled
    );
    assert_eq!(store.calls().0, 1);
    assert_eq!(store.calls().1, 0);
}

#[tokio::test]
async fn only_changed_sessions_are_written() {
    let store = CountingStore::new();
    let bot = bot(Arc::clone(&store), SavePolicy::Changed);
    bot.handle(msg(1, "/read")).await.unwrap();
    assert_eq!(
        store.calls().1,
        0,
        "reading a new session creates no record"
    );
    bot.handle(msg(2, "/inc")).await.unwrap();
    assert_eq!(store.calls().1, 1);
    bot.handle(msg(3, "/read")).await.unwrap();
    bot.handle(msg(4, "/same")).await.unwrap();
    assert_eq!(
        store.calls().1,
        1,
        "a read, or a change to the same value, writes nothing"
    );
    assert_eq!(store.calls().0, 4, "one load per update that ran a handler");
}

#[tokio::test]
async fn touched_policy_writes_on_read_like_telegraf() {
    let store = CountingStore::new();
    let bot = bot(Arc::clone(&store), SavePolicy::Touched);
    bot.handle(msg(1, "/read")).await.unwrap();
    bot.handle(msg(2, "/read")).await.unwrap();
    assert_eq!(store.calls().1, 2);
    assert_eq!(
        bot.handle(msg(3, "other")).await.unwrap(),
        Dispatch::Unhandled
    );
    assert_eq!(store.calls().1, 2, "untouched: no write");
}

/// The decoded-session cache never hides what another writer stored.
#[tokio::test]
async fn the_session_cache_sees_writes_from_elsewhere() {
    let store = CountingStore::new();
    let bot = bot(Arc::clone(&store), SavePolicy::Changed);
    bot.handle(msg(1, "/inc")).await.unwrap();
    // Another process rewrites the record (same length, other content).
    let rec = store.inner().load("1:1").await.unwrap().unwrap();
    let other = String::from_utf8(rec.bytes)
        .unwrap()
        .replace("\"n\":1", "\"n\":7");
    store
        .inner()
        .save("1:1", other.as_bytes(), Some(rec.version))
        .await
        .unwrap();
    let replies = RecordingTransport::new();
    let reader = Pipeline::<D>::builder()
        .store_arc(Arc::clone(&store) as Arc<dyn SessionStore>)
        .transport(replies.clone())
        .command("read", |cx: C| async move {
            let n = cx.session(|d| d.n)?;
            cx.reply(n.to_string());
            Ok(Outcome::Handled)
        })
        .build();
    reader.handle(msg(2, "/read")).await.unwrap();
    bot.handle(msg(3, "/inc")).await.unwrap();
    reader.handle(msg(4, "/read")).await.unwrap();
    assert_eq!(
        replies.texts(),
        ["7", "8"],
        "the first pipeline's cache saw the foreign write"
    );
}

/// A context kept beyond its update cannot touch the committed session.
#[tokio::test]
async fn a_context_used_after_its_update_is_finished() {
    let kept: Arc<std::sync::Mutex<Option<C>>> = Arc::default();
    let slot = Arc::clone(&kept);
    let bot = Pipeline::<D>::builder()
        .on_text(move |cx: C| {
            let slot = Arc::clone(&slot);
            async move {
                cx.session_mut(|d| d.n += 1)?;
                *slot.lock().unwrap() = Some(cx);
                Ok(Outcome::Handled)
            }
        })
        .build();
    bot.handle(msg(1, "x")).await.unwrap();
    let cx = kept.lock().unwrap().take().unwrap();
    assert!(matches!(
        cx.session_mut(|d| d.n += 1),
        Err(stagecraft::Error::Finished)
    ));
}

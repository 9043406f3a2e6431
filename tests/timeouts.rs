//! Durable timeouts: a scene's or a step's "no update within D" hook fires without an
//! update, once, from the store's index of due work; updates re-arm it, leaving cancels
//! it; it survives a restart of the pipeline and fires once across replicas; TTL expiry
//! can run hooks on time. On memory, SQLite, Redis, PostgreSQL and MySQL.

mod common;

use std::sync::Arc;
use std::time::Duration;

use stagecraft::clock::ManualClock;
use stagecraft::prelude::*;
use stagecraft::store::{MemoryStore, SessionStore};
use stagecraft::transport::Outgoing;

const T0: i64 = 1_700_000_000;

async fn stores(test: &str) -> Vec<common::NamedStore> {
    common::every_store(test).await
}

async fn cleanup(ns: Option<(String, String)>) {
    if let Some((url, ns)) = ns {
        common::drop_namespace(&url, &ns).await;
    }
}

fn text(id: i64, chat: i64, user: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"chat":{{"id":{chat}}},"from":{{"id":{user}}},"text":"{text}"}}}}"#
    ))
    .unwrap()
}

/// A bot with a `quiz` wizard: step 0 asks, the wizard waits at step 1 (timeout 60 s:
/// remind) for the answer, then at step 2 (timeout 30 s: leave with a message) for a
/// confirmation. The
/// `menu` scene has an idle TTL of 100 s with an expiry hook; `silent` has a TTL and no
/// hook (Telegraf's silent expiry).
fn bot(
    store: Arc<dyn SessionStore>,
    clock: &ManualClock,
    replies: &RecordingTransport,
) -> Pipeline<u32> {
    let quiz = Wizard::builder("quiz")
        .step(|cx: Cx<u32>| async move {
            cx.reply("Question?");
            Ok(Outcome::Next)
        })
        .step(|cx: Cx<u32>| async move {
            cx.reply("Sure?");
            Ok(Outcome::Next)
        })
        .step_timeout(60, |cx: Cx<u32>| async move {
            assert!(cx.is_event());
            cx.session_mut(|n| *n += 1)?;
            cx.reply("Still there? Send /cancel to stop.");
            Ok(Outcome::Handled)
        })
        .step(|cx: Cx<u32>| async move {
            cx.reply("Done.");
            Ok(Outcome::leave())
        })
        .step_timeout(30, |cx: Cx<u32>| async move {
            cx.reply("Too slow; bye.");
            Ok(Outcome::leave())
        })
        .build();
    let menu = Scene::builder("menu")
        .idle_ttl(100)
        .on_expire(|cx: Cx<u32>| async move {
            cx.reply("Menu closed after a while.");
            Ok(())
        })
        .build();
    let silent = Scene::builder("silent").ttl(100).build();
    let stage = Stage::builder()
        .scene(quiz)
        .scene(menu)
        .scene(silent)
        .command("cancel", |_cx: Cx<u32>| async move { Ok(Outcome::Clear) })
        .command("ping", |cx: Cx<u32>| async move {
            cx.reply("pong");
            Ok(Outcome::Handled)
        })
        .build()
        .unwrap();
    Pipeline::<u32>::builder()
        .store_arc(store)
        .clock(clock.clone())
        .transport(replies.clone())
        .stage(stage)
        .command(
            "quiz",
            |_cx: Cx<u32>| async move { Ok(Outcome::enter("quiz")) },
        )
        .command(
            "menu",
            |_cx: Cx<u32>| async move { Ok(Outcome::enter("menu")) },
        )
        .command("silent", |_cx: Cx<u32>| async move {
            Ok(Outcome::enter("silent"))
        })
        .on_text(|cx: Cx<u32>| async move {
            cx.reply("outside");
            Ok(Outcome::Handled)
        })
        .build()
}

fn texts_to(replies: &RecordingTransport) -> Vec<(i64, String)> {
    replies
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Outgoing::Text { chat_id, text, .. } => Some((chat_id, text)),
            _ => None,
        })
        .collect()
}

async fn wake(bot: &Pipeline<u32>) -> usize {
    let done = bot.wake_due().await.unwrap();
    assert_eq!(done.failed, 0, "{done:?}");
    done.timers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_timeout_fires_once_is_rearmed_by_updates_and_cancelled_by_leaving() {
    for (name, store, ns) in stores("timeout_once").await {
        let clock = ManualClock::at_secs(T0);
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), &clock, &replies);
        let (chat, user) = (-100, 7);
        // Entered: step 0 asked, the wizard waits at step 1 (60 s).
        bot.handle(text(1, chat, user, "/quiz")).await.unwrap();
        assert_eq!(texts_to(&replies).len(), 1, "{name}");
        // Not due before 60 s.
        clock.advance(Duration::from_secs(59));
        assert_eq!(wake(&bot).await, 0, "{name}: early");
        clock.advance(Duration::from_secs(1));
        assert_eq!(wake(&bot).await, 1, "{name}: due");
        assert_eq!(
            texts_to(&replies),
            [(chat, "Still there? Send /cancel to stop.".to_owned())],
            "{name}: the reminder goes to the user's chat"
        );
        // Once per silence.
        clock.advance(Duration::from_secs(600));
        assert_eq!(wake(&bot).await, 0, "{name}: fired twice");
        // The hook's change was committed; the stack is where it was.
        let key = bot.key_of(&text(0, chat, user, "")).unwrap();
        let info =
            stagecraft::record::inspect(&store.load(&key).await.unwrap().unwrap().bytes).unwrap();
        assert_eq!(info.data, serde_json::json!(1), "{name}");
        assert_eq!(info.scenes[0].cursor, Some(1), "{name}");
        assert_eq!(info.scenes[0].timer, None, "{name}: disarmed after firing");
        // A new update re-arms it from that moment (a stage command: the wizard stays
        // at its step).
        bot.handle(text(3, chat, user, "/ping")).await.unwrap();
        texts_to(&replies);
        clock.advance(Duration::from_secs(59));
        assert_eq!(wake(&bot).await, 0, "{name}: re-armed from the update");
        clock.advance(Duration::from_secs(1));
        assert_eq!(wake(&bot).await, 1, "{name}: re-armed timer fires");
        texts_to(&replies);
        // Leaving cancels: /cancel clears the stack, nothing fires later.
        bot.handle(text(4, chat, user, "/cancel")).await.unwrap();
        clock.advance(Duration::from_secs(10_000));
        assert_eq!(wake(&bot).await, 0, "{name}: fired after leaving");
        assert!(texts_to(&replies).is_empty(), "{name}");
        cleanup(ns).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_hook_can_leave_and_each_step_has_its_own() {
    for (name, store, ns) in stores("timeout_leave").await {
        let clock = ManualClock::at_secs(T0);
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), &clock, &replies);
        bot.handle(text(1, 5, 5, "/quiz")).await.unwrap();
        bot.handle(text(2, 5, 5, "Ann")).await.unwrap();
        // Now at step 2: its own 30 s timeout applies, not step 1's 60 s.
        texts_to(&replies);
        clock.advance(Duration::from_secs(30));
        assert_eq!(wake(&bot).await, 1, "{name}");
        assert_eq!(
            texts_to(&replies),
            [(5, "Too slow; bye.".to_owned())],
            "{name}"
        );
        // It left: the next message is outside any scene; nothing more is armed.
        bot.handle(text(4, 5, 5, "hello")).await.unwrap();
        assert_eq!(texts_to(&replies), [(5, "outside".to_owned())], "{name}");
        clock.advance(Duration::from_secs(10_000));
        assert_eq!(wake(&bot).await, 0, "{name}");
        cleanup(ns).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_hooks_run_on_time_and_silent_expiry_stays_silent() {
    for (name, store, ns) in stores("timeout_expiry").await {
        let clock = ManualClock::at_secs(T0);
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), &clock, &replies);
        bot.handle(text(1, 5, 5, "/menu")).await.unwrap();
        bot.handle(text(2, 6, 6, "/silent")).await.unwrap();
        texts_to(&replies);
        clock.advance(Duration::from_secs(100));
        assert_eq!(wake(&bot).await, 0, "{name}: active while now <= expires");
        clock.advance(Duration::from_secs(1));
        assert_eq!(wake(&bot).await, 1, "{name}: only the scene with a hook");
        assert_eq!(
            texts_to(&replies),
            [(5, "Menu closed after a while.".to_owned())],
            "{name}"
        );
        let key = bot.key_of(&text(0, 5, 5, "")).unwrap();
        let gone = store.load(&key).await.unwrap();
        let scenes = gone.map(|r| stagecraft::record::inspect(&r.bytes).unwrap().scenes);
        assert!(
            scenes.as_ref().is_none_or(Vec::is_empty),
            "{name}: {scenes:?}"
        );
        // The silent one expires lazily, as in Telegraf: the next update is outside.
        bot.handle(text(3, 6, 6, "hi")).await.unwrap();
        assert_eq!(texts_to(&replies), [(6, "outside".to_owned())], "{name}");
        // An expiry found by an update runs the hook too (and the update goes on).
        bot.handle(text(4, 8, 8, "/menu")).await.unwrap();
        clock.advance(Duration::from_secs(101));
        bot.handle(text(5, 8, 8, "hi")).await.unwrap();
        assert_eq!(
            texts_to(&replies),
            [
                (8, "Menu closed after a while.".to_owned()),
                (8, "outside".to_owned())
            ],
            "{name}"
        );
        assert_eq!(wake(&bot).await, 0, "{name}: already expired");
        cleanup(ns).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_survives_a_restart_and_fires_once_across_replicas() {
    for (name, store, ns) in stores("timeout_replicas").await {
        let clock = ManualClock::at_secs(T0);
        let replies = RecordingTransport::new();
        let first = bot(Arc::clone(&store), &clock, &replies);
        for chat in 1..=20 {
            first.handle(text(chat, chat, chat, "/quiz")).await.unwrap();
        }
        // The first process goes away while the deadlines pass.
        drop(first);
        texts_to(&replies);
        clock.advance(Duration::from_secs(3_600));
        // Two replicas start on the same store and race for every deadline.
        let a = bot(Arc::clone(&store), &clock, &replies);
        let b = bot(Arc::clone(&store), &clock, &replies);
        let (ra, rb) = tokio::join!(a.wake_due(), b.wake_due());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!((ra.failed, rb.failed), (0, 0), "{name}");
        assert_eq!(ra.timers + rb.timers, 20, "{name}: {ra:?} {rb:?}");
        let mut got = texts_to(&replies);
        got.sort();
        let want: Vec<_> = (1..=20)
            .map(|c| (c, "Still there? Send /cancel to stop.".to_owned()))
            .collect();
        assert_eq!(got, want, "{name}: each reminder once");
        assert_eq!(wake(&a).await + wake(&b).await, 0, "{name}");
        cleanup(ns).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_without_timeouts_leaves_stored_timers_alone() {
    // A rollback to a build that declares no timeouts: the stored timer is neither fired
    // nor indexed, and it is kept in the record for the build that knows it.
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_secs(T0);
    let replies = RecordingTransport::new();
    let with = bot(Arc::clone(&store), &clock, &replies);
    with.handle(text(1, 5, 5, "/quiz")).await.unwrap();
    let plain = Wizard::builder("quiz")
        .step(|_cx: Cx<u32>| async move { Ok(Outcome::Next) })
        .step(|cx: Cx<u32>| async move {
            cx.session_mut(|n| *n += 10)?;
            Ok(Outcome::Handled)
        })
        .build();
    let without = Pipeline::<u32>::builder()
        .store_arc(Arc::clone(&store))
        .clock(clock.clone())
        .transport(replies.clone())
        .stage(Stage::builder().scene(plain).build().unwrap())
        .build();
    without.handle(text(3, 5, 5, "y")).await.unwrap();
    clock.advance(Duration::from_secs(3_600));
    assert_eq!(without.wake_due().await.unwrap().timers, 0);
    let key = without.key_of(&text(0, 5, 5, "")).unwrap();
    let info =
        stagecraft::record::inspect(&store.load(&key).await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(info.data, serde_json::json!(10));
    assert!(info.scenes[0].timer.is_some(), "{:?}", info.scenes);
    let index = store.pending().unwrap();
    assert!(index.pending_keys(i64::MAX, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spawned_timers_fire_on_their_own_and_stop_when_dropped() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let clock = ManualClock::at_secs(T0);
    let replies = RecordingTransport::new();
    let bot = bot(Arc::clone(&store), &clock, &replies);
    let timers = bot.spawn_timers(Duration::from_millis(10));
    bot.handle(text(1, 5, 5, "/quiz")).await.unwrap();
    texts_to(&replies);
    clock.advance(Duration::from_secs(60));
    // No call to `wake_due` here: the task finds it (polled, not timed: it waits for as
    // long as the machine needs, up to a generous bound).
    let mut got = Vec::new();
    for _ in 0..1_000 {
        got = texts_to(&replies);
        if !got.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(got, [(5, "Still there? Send /cancel to stop.".to_owned())]);
    drop(timers);
    // Stopped: a timer due later stays unfired until someone looks.
    bot.handle(text(2, 6, 6, "/quiz")).await.unwrap();
    texts_to(&replies);
    clock.advance(Duration::from_secs(60));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(texts_to(&replies).is_empty());
    assert_eq!(wake(&bot).await, 1);
}

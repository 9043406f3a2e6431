//! The session cycle's owner: a kept context is finished after the commit, each stage
//! of a pipeline runs once, `TestBot` reads the key of its bot's strategy, and events
//! run for a key under the same queue and lease as its updates.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use stagecraft::prelude::*;
use stagecraft::testing::TestBot;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct D {
    n: u32,
    log: Vec<String>,
}

type C = Cx<D>;

fn msg(id: i64, chat: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_json(&format!(
        r#"{{"update_id":{id},"message":{{"chat":{{"id":{chat}}},"from":{{"id":{chat}}},"text":"{text}"}}}}"#
    ))
    .unwrap()
}

fn finished<T: std::fmt::Debug>(r: stagecraft::Result<T>, what: &str) {
    assert!(
        matches!(r, Err(Error::Finished)),
        "{what} after the commit: {r:?}"
    );
}

/// A context kept beyond its handler (in a spawned task, say) is finished once the
/// update is committed: every method returning a `Result` says so, instead of handing
/// out a fresh default session (the cache took the committed one).
#[tokio::test]
async fn a_kept_context_is_finished_after_the_commit() {
    let kept: Arc<Mutex<Option<C>>> = Arc::default();
    let slot = Arc::clone(&kept);
    let stage = Stage::builder()
        .scene(
            Wizard::builder("w")
                .step(move |cx: C| {
                    let slot = Arc::clone(&slot);
                    async move {
                        cx.session_mut(|d| d.n = 41)?;
                        *slot.lock().unwrap() = Some(cx.clone());
                        Ok(Outcome::Handled)
                    }
                })
                .build(),
        )
        .build()
        .unwrap();
    let bot = Pipeline::<D>::builder()
        .stage(stage)
        .command("go", |_cx: C| async move { Ok(Outcome::enter("w")) })
        .build();
    bot.handle(msg(1, 1, "/go")).await.unwrap();
    let cx = kept
        .lock()
        .unwrap()
        .take()
        .expect("the step kept its context");
    finished(cx.session(|d| d.n), "session");
    finished(cx.session_mut(|d| d.n += 1), "session_mut");
    finished(cx.clear_session(), "clear_session");
    finished(cx.scene_state(|s: &JsonState| s.clone()), "scene_state");
    finished(
        cx.scene_state_mut(|s: &mut JsonState| s.0 = 1.into()),
        "scene_state_mut",
    );
    finished(cx.set_scene_state(JsonState::object()), "set_scene_state");
    finished(cx.wizard().next(), "wizard().next");
    finished(cx.apply(Outcome::Next).await, "apply(Next)");
    finished(cx.apply(Outcome::leave()).await, "apply(leave)");
    cx.reply("too late");
    assert!(cx.pending_replies().is_empty(), "a late reply is dropped");
    // Nothing the kept context tried reached the store.
    let stored = bot.store().load("1:1").await.unwrap().unwrap();
    let info = stagecraft::record::inspect(&stored.bytes).unwrap();
    assert_eq!(info.data["n"], 41);
    assert_eq!(info.scenes.len(), 1);
}

/// Each stage added to a pipeline runs once per update, in chain order, and a handler
/// inside a stage applies its imperative transitions with that stage.
#[tokio::test]
async fn each_stage_runs_once_and_interprets_its_own_scenes() {
    fn counting(name: &'static str) -> stagecraft::stage::StageBuilder<D, TelegramUpdate> {
        Stage::builder().on_update(move |cx: C| async move {
            cx.session_mut(|d| d.log.push(name.to_owned()))?;
            Ok(Outcome::Pass)
        })
    }
    let first = counting("first")
        .scene(Scene::builder("a").build())
        .build()
        .unwrap();
    let second = counting("second")
        .command("inner", |cx: C| async move {
            // Imperative: must enter the second stage's scene.
            cx.scene().enter("b").await?;
            Ok(Outcome::Handled)
        })
        .scene(
            Scene::builder("b")
                .on_enter(|cx: C| async move {
                    cx.reply("entered b");
                    Ok(Outcome::Handled)
                })
                .build(),
        )
        .build()
        .unwrap();
    let bot = TestBot::<D>::new(|b| {
        b.stage(first)
            .stage(second)
            .on_text(|cx: C| async move {
                let log = cx.session(|d| d.log.join(","))?;
                cx.reply(log);
                Ok(Outcome::Handled)
            })
            .build()
    });
    assert_eq!(bot.send("hello").await.unwrap(), ["first,second"]);
    assert_eq!(bot.send("/inner").await.unwrap(), ["entered b"]);
    assert_eq!(bot.scenes().await, [("b".to_owned(), None)]);
}

/// `TestBot` reads the record under the key its bot's strategy gives, not a fixed
/// user-in-chat key.
#[tokio::test]
async fn test_bot_reads_the_key_of_every_strategy() {
    for (strategy, key) in [
        (KeyStrategy::<TelegramUpdate>::UserInChat, "3:4"),
        (KeyStrategy::Chat, "4"),
        (KeyStrategy::User, "3"),
        (KeyStrategy::ChatThread, "4"),
    ] {
        let stage = Stage::builder()
            .scene(Scene::builder("s").build())
            .build()
            .unwrap();
        let bot = TestBot::<D>::new(|b| {
            b.key(strategy)
                .stage(stage)
                .command("go", |_cx: C| async move { Ok(Outcome::enter("s")) })
                .build()
        })
        .as_user(3, 4);
        bot.send("/go").await.unwrap();
        assert_eq!(bot.key(), key);
        assert_eq!(bot.scenes().await, [("s".to_owned(), None)], "key {key}");
        assert!(bot.stored().await.is_some(), "key {key}");
    }
}

/// An event runs for a key without an update: in call order with the key's updates
/// (it takes a place in the key's queue), with its session loaded and committed, its
/// transition applied and its replies delivered after the commit.
#[tokio::test]
async fn an_event_runs_in_the_key_queue_like_an_update() {
    let replies = RecordingTransport::new();
    let stage = Stage::builder()
        .scene(
            Scene::builder("reminded")
                .on_enter(|cx: C| async move {
                    cx.reply(format!("entered (event: {})", cx.is_event()));
                    Ok(Outcome::Handled)
                })
                .build(),
        )
        .build()
        .unwrap();
    let bot = Pipeline::<D>::builder()
        .transport(replies.clone())
        .stage(stage)
        .on_text(|cx: C| async move {
            let text = cx.update().message_text().unwrap_or_default().to_owned();
            if text == "slow" {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            cx.session_mut(|d| d.log.push(text.clone()))?;
            cx.reply(text);
            Ok(Outcome::Handled)
        })
        .build();
    let slow = bot.handle(msg(1, 9, "slow"));
    let event = bot.run_event("9:9", msg(0, 9, ""), |cx: C| async move {
        assert!(cx.is_event());
        let seen = cx.session(|d| d.log.join(","))?;
        cx.session_mut(|d| d.log.push("event".into()))?;
        cx.reply(format!("event saw {seen}"));
        Ok(Outcome::enter("reminded"))
    });
    let after = bot.handle(msg(2, 9, "after"));
    // Awaited in reverse order: the queue order is the call order.
    let (a, e, s) = tokio::join!(after, event, slow);
    for r in [a, e, s] {
        r.unwrap();
    }
    assert_eq!(
        replies.texts(),
        ["slow", "event saw slow", "entered (event: true)", "after"]
    );
    let stored = bot.store().load("9:9").await.unwrap().unwrap();
    let info = stagecraft::record::inspect(&stored.bytes).unwrap();
    assert_eq!(
        info.data["log"],
        serde_json::json!(["slow", "event", "after"])
    );
    assert_eq!(info.scenes[0].scene, "reminded");
    assert_eq!(bot.keys_in_flight(), 0);
}

/// An event's handler error follows the error policy like an update's.
#[tokio::test]
async fn an_event_error_follows_the_error_policy() {
    let bot = Pipeline::<D>::builder()
        .error_policy(ErrorPolicy::RollBack)
        .build();
    let err = bot
        .run_event("5:5", msg(0, 5, ""), |cx: C| async move {
            cx.session_mut(|d| d.n = 7)?;
            Err("the reminder failed".into())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Handler(_)), "{err:?}");
    assert!(
        bot.store().load("5:5").await.unwrap().is_none(),
        "rolled back"
    );
}

/// Across processes an event takes its key's lease like an update: while someone else
/// holds it, the event waits (here: until the pipeline's lease wait runs out).
#[cfg(feature = "redis")]
#[tokio::test]
async fn an_event_takes_the_key_lease() {
    use stagecraft::pipeline::LeaseConfig;
    use stagecraft::store::{LeaseAttempt, SessionStore};
    let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") else {
        return;
    };
    let ns = common::unique_name("event");
    let store: Arc<dyn SessionStore> = Arc::new(
        stagecraft::store::RedisStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(&format!("{ns}:"))
            .unwrap(),
    );
    let bot = Pipeline::<D>::builder()
        .store_arc(Arc::clone(&store))
        .leases(LeaseConfig::new().wait(Duration::from_millis(200)))
        .build();
    let leases = store.leases().expect("the Redis store has leases");
    let LeaseAttempt::Acquired(outside) = leases
        .acquire_lease("6:6", Duration::from_secs(30))
        .await
        .unwrap()
    else {
        panic!("the lease of a fresh key is free");
    };
    let bump = |cx: C| async move {
        cx.session_mut(|d| d.n += 1)?;
        Ok(Outcome::Handled)
    };
    let err = bot.run_event("6:6", msg(0, 6, ""), bump).await.unwrap_err();
    assert!(matches!(err, Error::LeaseTimeout { .. }), "{err:?}");
    assert!(leases.release_lease(&outside).await.unwrap());
    bot.run_event("6:6", msg(0, 6, ""), bump).await.unwrap();
    let stored = store.load("6:6").await.unwrap().unwrap();
    assert_eq!(
        stagecraft::record::inspect(&stored.bytes).unwrap().data["n"],
        1
    );
    store.delete("6:6", stored.version).await.unwrap();
}

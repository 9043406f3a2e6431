//! Stage: T0–T5, and commands addressed to a bot.

use serde_json::json;

use crate::common::*;
use stagecraft::prelude::*;

// Telegraf's Stage reads `ctx.scene.session` on every update, so every keyed update
// writes `{"__scenes":{}}`; stagecraft creates no session until something changes, and
// looking at the scene (`current_scene`, `cursor`) is not a change (C2).
#[tokio::test]
async fn diff_t0_c2_stage_and_scene_reads_never_create_a_session() {
    let store = CountingStore::new();
    let bot = Bot::with_store(store.clone(), |b| {
        b.stage(
            Stage::builder()
                .scene(Scene::builder("s").on_text(say("in s")).build())
                .command("where", where_handler())
                .build()
                .unwrap(),
        )
        .command("go", go(|| Outcome::enter("s")))
        .on_text(say("outside"))
        .build()
    });
    assert_eq!(bot.send("hello").await.unwrap(), ["outside"]);
    assert_eq!(bot.send("/where").await.unwrap(), ["scene=none cursor=-"]);
    assert_eq!(store.calls().1, 0, "no write");
    assert!(
        raw(&bot).await.is_none(),
        "no session record for a user who never entered a scene"
    );

    bot.send("/go").await.unwrap();
    assert_eq!(bot.scenes().await, [frame("s", None)]);
    assert_eq!(store.calls().1, 1);
    bot.send("/where").await.unwrap();
    assert_eq!(
        store.calls().1,
        1,
        "reading the current scene writes nothing"
    );
}

#[tokio::test]
async fn t1_order_is_middleware_then_stage_handlers_then_scene_then_handlers_after_the_stage() {
    let bot = Bot::new(|b| {
        b.middleware(|cx: C, next: Next<Data, TelegramUpdate>| async move {
            cx.reply("mw");
            next.run(cx).await
        })
        .stage(
            Stage::builder()
                .scene(
                    Scene::builder("s")
                        .command("where", say("scene where"))
                        .command("peek", say("scene peek"))
                        .command("x", say("scene x"))
                        .build(),
                )
                .command("where", where_handler())
                .command("peek", say_then("stage peek", || Outcome::Pass))
                .build()
                .unwrap(),
        )
        .command("go", go(|| Outcome::enter("s")))
        .on_message(say("outside"))
        .build()
    });
    assert_eq!(bot.send("hi").await.unwrap(), ["mw", "outside"]);
    assert_eq!(bot.send("/go").await.unwrap(), ["mw"]);
    assert_eq!(
        bot.send("/where").await.unwrap(),
        ["mw", "scene=s cursor=-"],
        "stage handlers run first"
    );
    assert_eq!(
        bot.send("/peek").await.unwrap(),
        ["mw", "stage peek", "scene peek"],
        "Pass reaches the scene"
    );
    assert_eq!(bot.send("/x").await.unwrap(), ["mw", "scene x"]);
    assert_eq!(
        bot.send("hi").await.unwrap(),
        ["mw", "outside"],
        "unmatched by the scene: after the stage"
    );
}

// Telegraf silently skips a Stage registered without (or before) `session()`; a
// stagecraft Pipeline owns the session cycle, so a stage always has one.
#[tokio::test]
async fn diff_t1_the_session_always_wraps_the_stage() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(Scene::builder("s").on_text(say("in s")).build())
                .build()
                .unwrap(),
        )
        .command("go", go(|| Outcome::enter("s")))
        .build()
    });
    bot.send("/go").await.unwrap();
    assert_eq!(bot.send("next update").await.unwrap(), ["in s"]);
    assert_eq!(bot.scenes().await, [frame("s", None)]);
}

// Telegraf keeps an unregistered scene id in the session (and `leave()` cannot clear
// it); stagecraft drops the frame with a warning so the user is not stuck.
#[tokio::test]
async fn diff_t2_c4_unknown_stored_scene_is_dropped_and_the_user_is_not_stuck() {
    let build = |b: stagecraft::pipeline::PipelineBuilder<Data, TelegramUpdate>| {
        b.stage(
            Stage::builder()
                .scene(Scene::builder("s").on_text(say("in s")).build())
                .build()
                .unwrap(),
        )
        .on_text(|cx: C| async move {
            let n = cx.session(|d| d.count)?;
            cx.reply(format!("outside count={n}"));
            Ok(Outcome::Handled)
        })
        .build()
    };
    let bot = Bot::new(build);
    let record = json!({"data": {"count": 3},
        "scenes": [{"scene": "gone", "entered_at": 1_700_000_000, "state": {"json": {}}}]});
    bot.store()
        .save(&bot.key(), record.to_string().as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(
        bot.send("hi").await.unwrap(),
        [
            stagecraft::stage::DEFAULT_RECOVERY_NOTICE,
            "outside count=3"
        ],
        "the user hears what happened, and the update goes on"
    );
    assert!(
        bot.scenes().await.is_empty(),
        "the stale frame is gone from the stack"
    );
    let stored = raw(&bot).await.unwrap();
    assert_eq!(stored["data"], json!({"count": 3}));
    assert_eq!(
        stored["lost"][0]["what"], "frame",
        "a copy is kept: {stored}"
    );
    assert_eq!(stored["lost"][0]["value"]["scene"], "gone", "{stored}");

    // A stale frame on top of a live one: the live one is active again.
    let bot = Bot::new(build);
    let record = json!({"data": {"count": 0}, "scenes": [
        {"scene": "s", "entered_at": 1_700_000_000, "state": {"json": {}}},
        {"scene": "gone", "entered_at": 1_700_000_000, "state": {"json": {}}}]});
    bot.store()
        .save(&bot.key(), record.to_string().as_bytes(), None)
        .await
        .unwrap();
    assert_eq!(
        bot.send("hi").await.unwrap(),
        [stagecraft::stage::DEFAULT_RECOVERY_NOTICE, "in s"]
    );
    assert_eq!(bot.scenes().await, [frame("s", None)]);
}

#[tokio::test]
async fn t3_default_scene_is_active_without_enter_and_active_again_after_leave() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("lobby")
                        .on_enter(say("lobby enter"))
                        .on_leave(said("lobby leave"))
                        .command("leave", go(Outcome::leave))
                        .on_text(|cx: C| async move {
                            cx.reply(format!("lobby: {}", text_of(&cx)));
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .default_scene("lobby")
                .build()
                .unwrap(),
        )
        .on_text(say("outside"))
        .build()
    });
    assert_eq!(
        bot.send("hi").await.unwrap(),
        ["lobby: hi"],
        "active, enter hook not run"
    );
    assert_eq!(bot.send("/leave").await.unwrap(), ["lobby leave"]);
    assert_eq!(
        bot.send("again").await.unwrap(),
        ["lobby: again"],
        "the default is back, still no enter hook"
    );
}

#[tokio::test]
async fn t4_stage_build_rejects_unknown_default_scene_and_duplicate_id_replaces() {
    let err = Stage::<Data, TelegramUpdate>::builder()
        .scene(Scene::builder("a").build())
        .default_scene("nope")
        .build()
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownScene(id) if id == "nope"),
        "{err:?}"
    );

    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(Scene::builder("a").on_text(say("first a")).build())
                .scene(Scene::builder("a").on_text(say("second a")).build())
                .build()
                .unwrap(),
        )
        .command("go", go(|| Outcome::enter("a")))
        .build()
    });
    bot.send("/go").await.unwrap();
    assert_eq!(bot.send("hi").await.unwrap(), ["second a"]);
}

// Telegraf's `Stage.enter/leave/reenter(...)` helper middlewares are plain `Outcome`
// values here, returned from any handler.
#[tokio::test]
async fn t5_outcomes_serve_as_the_stage_enter_leave_reenter_helpers() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("s")
                        .on_enter(|cx: C| async move {
                            let name = cx.scene_state(Form::clone)?.name;
                            cx.reply(format!("enter s ({name})"));
                            Ok(Outcome::Handled)
                        })
                        .on_leave(said("leave s"))
                        .state::<Form>()
                        .command("again", go(|| Outcome::Reenter))
                        .command("out", go(Outcome::leave))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command(
            "in",
            go(|| Outcome::enter_with("s", Form { name: "ann".into() })),
        )
        .command("again", say("no scene to reenter"))
        .build()
    });
    assert_eq!(bot.send("/in").await.unwrap(), ["enter s (ann)"]);
    assert_eq!(
        bot.send("/again").await.unwrap(),
        ["leave s", "enter s (ann)"]
    );
    assert_eq!(bot.send("/out").await.unwrap(), ["leave s"]);
    assert!(bot.scenes().await.is_empty());
    assert_eq!(bot.send("/again").await.unwrap(), ["no scene to reenter"]);
}

// As Telegraf's `command()`: `/cmd@name` is for the bot called `name` only.
#[tokio::test]
async fn commands_with_a_bot_suffix_match_only_that_bot() {
    let build = |name: Option<&'static str>| {
        Bot::new(move |b| {
            let b = match name {
                Some(n) => b.bot_username(n),
                None => b,
            };
            b.command("start", say("started"))
                .on_message(say("not a command for me"))
                .build()
        })
    };
    let bot = build(Some("my_bot"));
    assert_eq!(bot.send("/start").await.unwrap(), ["started"]);
    assert_eq!(bot.send("/start@my_bot").await.unwrap(), ["started"]);
    assert_eq!(bot.send("/start@My_Bot").await.unwrap(), ["started"]);
    assert_eq!(
        bot.send("/start@other_bot").await.unwrap(),
        ["not a command for me"]
    );

    let bot = build(None);
    assert_eq!(
        bot.send("/start@other_bot").await.unwrap(),
        ["started"],
        "no username set: any suffix"
    );
}

/// A middleware may answer a transition instead of calling `next`: it is applied.
#[tokio::test]
async fn a_transition_answered_by_a_middleware_is_applied() {
    use stagecraft::prelude::*;
    let bot = stagecraft::testing::TestBot::<()>::new(|b| {
        b.middleware(|cx: Cx<()>, next: Next<(), TelegramUpdate>| async move {
            if cx.update().message_text() == Some("go") {
                return Ok(Outcome::enter("s"));
            }
            next.run(cx).await
        })
        .stage(
            Stage::builder()
                .scene(
                    Scene::builder("s")
                        .on_enter(|cx: Cx<()>| async move {
                            cx.reply("in s");
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .build()
    });
    assert_eq!(bot.send("go").await.unwrap(), ["in s"]);
    assert_eq!(bot.scenes().await, [("s".to_owned(), None)]);
}

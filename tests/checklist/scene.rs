//! Scenes: C1–C7, and typed scene state.

use serde_json::json;
use stagecraft::scene::JsonState;
use stagecraft::stage::StageBuilder;

use crate::common::*;
use stagecraft::prelude::*;

const T0: i64 = 1_700_000_000;

// Telegraf stores one scene as `session.__scenes = {current, expires, state, cursor}`;
// stagecraft stores `{"v": 1, "data": S, "scenes": [frame, ...]}` (a stack) beside the bot's data,
// each frame with its typed state under its typetag name, and no `scenes` after leaving.
#[tokio::test]
async fn diff_c1_stored_shape_is_data_plus_a_scene_stack() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("w")
                        .ttl(60)
                        .command("done", go(Outcome::leave))
                        .step(say_then("w0", || Outcome::Next))
                        .step(say("w1"))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("go", go(|| Outcome::enter("w")))
        .build()
    });
    bot.send("/go").await.unwrap();
    assert_eq!(
        raw(&bot).await.unwrap(),
        json!({"v": 1, "data": {"count": 0}, "scenes": [
            {"scene": "w", "cursor": 1, "entered_at": T0, "expires": T0 + 60, "state": {"json": {}}}],
            "at": T0})
    );
    bot.send("/done").await.unwrap();
    assert_eq!(
        raw(&bot).await.unwrap(),
        json!({"v": 1, "data": {"count": 0}, "at": T0})
    );
}

fn enter_stage() -> StageBuilder<Data, TelegramUpdate> {
    Stage::builder()
        .ttl(100)
        .scene(
            Scene::builder("a")
                .on_leave(|cx: C| async move {
                    cx.reply(format!("leave a (current {:?})", cx.current_scene()));
                    Ok(())
                })
                .command(
                    "b",
                    go(|| Outcome::enter_with("b", Form { name: "x".into() })),
                )
                .command("bad", |cx: C| async move {
                    match cx.scene().enter("nope").await {
                        Err(Error::UnknownScene(id)) => cx.reply(format!("unknown {id}")),
                        other => cx.reply(format!("unexpected {other:?}")),
                    }
                    Ok(Outcome::Handled)
                })
                .command("worse", go(|| Outcome::enter("nope")))
                .build(),
        )
        .scene(
            Scene::builder("b")
                .ttl(30)
                .state::<Form>()
                .on_enter(|cx: C| async move {
                    let name = cx.scene_state(Form::clone)?.name;
                    cx.reply(format!("enter b via {} name={name}", text_of(&cx)));
                    Ok(Outcome::Handled)
                })
                .command("c", go(|| Outcome::enter("c")))
                .build(),
        )
        .scene(Scene::builder("c").on_enter(say("enter c")).build())
}

#[tokio::test]
async fn c3_enter_leaves_first_sets_state_and_ttl_and_runs_enter_with_the_update() {
    let bot = Bot::new(|b| {
        b.stage(enter_stage().build().unwrap())
            .command("a", go(|| Outcome::enter("a")))
            .build()
    });
    bot.send("/a").await.unwrap();
    assert_eq!(
        bot.send("/b").await.unwrap(),
        ["leave a (current Some(\"a\"))", "enter b via /b name=x"],
        "old leave hook, then the enter hook with the entering update and the given state"
    );
    let b = &bot.stored().await.unwrap().scenes[0];
    assert_eq!(
        (b.scene.as_str(), b.expires),
        ("b", Some(T0 + 30)),
        "the scene's own ttl"
    );
    bot.advance(5);
    assert_eq!(bot.send("/c").await.unwrap(), ["enter c"]);
    let c = &bot.stored().await.unwrap().scenes[0];
    assert_eq!(
        (c.scene.as_str(), c.entered_at, c.expires),
        ("c", T0 + 5, Some(T0 + 105)),
        "the stage ttl"
    );
    assert_eq!(
        bot.stored().await.unwrap().scenes.len(),
        1,
        "enter replaces the current scene"
    );
}

#[tokio::test]
async fn c3_entering_an_unknown_scene_is_an_error_without_side_effects() {
    let bot = Bot::new(|b| {
        b.stage(enter_stage().build().unwrap())
            .command("a", go(|| Outcome::enter("a")))
            .build()
    });
    bot.send("/a").await.unwrap();
    let before = bot.store().load(&bot.key()).await.unwrap().unwrap();

    assert_eq!(
        bot.send("/bad").await.unwrap(),
        ["unknown nope"],
        "no leave hook ran"
    );
    let err = bot.send("/worse").await.unwrap_err();
    assert!(
        matches!(&err, Error::UnknownScene(id) if id == "nope"),
        "{err:?}"
    );
    assert!(bot.replies().sent().is_empty(), "no leave hook ran");
    assert_eq!(
        bot.store().load(&bot.key()).await.unwrap().unwrap(),
        before,
        "stack untouched"
    );
    assert_eq!(bot.scenes().await, [frame("a", None)]);
}

// Telegraf's silent enter keeps the previous `cursor` (a wizard resumes at the old step)
// and the old `expires`; stagecraft's silent enter runs no hooks but starts a fresh frame.
#[tokio::test]
async fn diff_c3_silent_enter_runs_no_hooks_and_starts_a_fresh_frame() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("w")
                        .on_enter(say("enter w"))
                        .on_leave(said("leave w"))
                        .command("quiet", |cx: C| async move {
                            cx.scene()
                                .enter_with("w", JsonState::object(), true)
                                .await?;
                            cx.reply(format!("quiet, cursor {:?}", cx.cursor()));
                            Ok(Outcome::Handled)
                        })
                        .step(say_then("w0", || Outcome::Next))
                        .step(say_then("w1", || Outcome::Next))
                        .step(say("w2"))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("w", go(|| Outcome::enter("w")))
        .build()
    });
    assert_eq!(bot.send("/w").await.unwrap(), ["enter w", "w0"]);
    assert_eq!(bot.send("x").await.unwrap(), ["w1"]);
    assert_eq!(bot.scenes().await, [frame("w", Some(2))]);
    assert_eq!(
        bot.send("/quiet").await.unwrap(),
        ["quiet, cursor Some(0)"],
        "no leave, enter or step"
    );
    assert_eq!(bot.scenes().await, [frame("w", Some(0))]);
    assert_eq!(bot.send("y").await.unwrap(), ["w0"]);
}

#[tokio::test]
async fn c4_leave_runs_hooks_before_reset_and_is_a_no_op_without_a_scene() {
    let store = CountingStore::new();
    let bot = Bot::with_store(store.clone(), |b| {
        b.stage(enter_stage().build().unwrap())
            .command("a", go(|| Outcome::enter("a")))
            .command("leave", |cx: C| async move {
                cx.scene().leave().await?;
                cx.reply(format!("left, now {:?}", cx.current_scene()));
                Ok(Outcome::Handled)
            })
            .build()
    });
    assert_eq!(bot.send("/leave").await.unwrap(), ["left, now None"]);
    assert_eq!(
        store.calls().1,
        0,
        "leaving without a scene changes nothing"
    );

    bot.send("/a").await.unwrap();
    // Scene `a` does not take `/leave`: it reaches the bot-level handler.
    assert_eq!(
        bot.send("/leave").await.unwrap(),
        ["leave a (current Some(\"a\"))", "left, now None"]
    );
    assert!(bot.scenes().await.is_empty());
}

// Telegraf runs a scene entered inside a leave handler and then wipes it (and makes a
// recursive `leave()` a no-op); stagecraft refuses both with `Error::Transition`.
#[tokio::test]
async fn diff_c4_transitions_inside_a_leave_hook_are_refused() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("a")
                        .on_leave(|cx: C| async move {
                            for (what, r) in [
                                ("enter", cx.scene().enter("b").await),
                                ("leave", cx.scene().leave().await),
                            ] {
                                match r {
                                    Err(Error::Transition(_)) => {
                                        cx.reply(format!("{what} refused"))
                                    }
                                    other => cx.reply(format!("{what}: unexpected {other:?}")),
                                }
                            }
                            Ok(())
                        })
                        .command("out", go(Outcome::leave))
                        .build(),
                )
                .scene(Scene::builder("b").on_enter(say("enter b")).build())
                .build()
                .unwrap(),
        )
        .command("a", go(|| Outcome::enter("a")))
        .build()
    });
    bot.send("/a").await.unwrap();
    assert_eq!(
        bot.send("/out").await.unwrap(),
        ["enter refused", "leave refused"]
    );
    assert!(bot.scenes().await.is_empty());
}

#[tokio::test]
async fn c5_reenter_keeps_the_state_and_resets_the_cursor_and_is_a_no_op_without_a_scene() {
    let store = CountingStore::new();
    let bot = Bot::with_store(store.clone(), |b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("w")
                        .state::<Form>()
                        .on_enter(|cx: C| async move {
                            cx.reply(format!("enter name={}", cx.scene_state(Form::clone)?.name));
                            Ok(Outcome::Handled)
                        })
                        .on_leave(said("leave w"))
                        .command("again", go(|| Outcome::Reenter))
                        .step(say_then("w0", || Outcome::Next))
                        .step(|cx: C| async move {
                            let name = text_of(&cx);
                            cx.scene_state_mut(|s: &mut Form| s.name = name)?;
                            cx.reply("w1");
                            Ok(Outcome::Next)
                        })
                        .step(say("w2"))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("w", go(|| Outcome::enter("w")))
        .command("again", |cx: C| async move {
            cx.scene().reenter().await?;
            cx.reply(format!("reenter without scene: {:?}", cx.current_scene()));
            Ok(Outcome::Handled)
        })
        .build()
    });
    assert_eq!(
        bot.send("/again").await.unwrap(),
        ["reenter without scene: None"]
    );
    assert_eq!(store.calls().1, 0);

    assert_eq!(bot.send("/w").await.unwrap(), ["enter name=", "w0"]);
    assert_eq!(bot.send("Ann").await.unwrap(), ["w1"]);
    assert_eq!(bot.scenes().await, [frame("w", Some(2))]);
    assert_eq!(
        bot.send("/again").await.unwrap(),
        ["leave w", "enter name=Ann", "w0"],
        "cursor back to 0"
    );
    assert_eq!(bot.scenes().await, [frame("w", Some(1))]);
}

fn ttl_bot(idle: bool) -> Bot {
    Bot::new(move |b| {
        let p = Scene::builder("p")
            .on_leave(said("left p"))
            .on_text(|cx: C| async move {
                cx.reply(format!("p: {}", text_of(&cx)));
                Ok(Outcome::Handled)
            });
        let p = if idle { p.idle_ttl(300) } else { p.ttl(300) };
        b.stage(Stage::builder().scene(p.build()).build().unwrap())
            .command("p", go(|| Outcome::enter("p")))
            .on_text(say("outside"))
            .build()
    })
}

#[tokio::test]
async fn c6_absolute_ttl_is_valid_through_its_last_second_then_silently_gone() {
    let bot = ttl_bot(false);
    bot.send("/p").await.unwrap();
    bot.advance(300);
    assert_eq!(
        bot.send("a").await.unwrap(),
        ["p: a"],
        "valid while now <= expires"
    );
    bot.advance(1);
    assert_eq!(
        bot.send("b").await.unwrap(),
        ["outside"],
        "expired silently: no leave hook"
    );
    assert!(bot.scenes().await.is_empty());

    // Activity does not extend it.
    bot.send("/p").await.unwrap();
    bot.advance(200);
    assert_eq!(bot.send("c").await.unwrap(), ["p: c"]);
    bot.advance(101);
    assert_eq!(bot.send("d").await.unwrap(), ["outside"]);
}

// Telegraf's TTL is only absolute (#1829 asks for an idle timeout); `idle_ttl` is an
// idle timeout refreshed by every update the scene sees, still expiring silently.
#[tokio::test]
async fn diff_c6_idle_ttl_is_refreshed_by_activity() {
    let bot = ttl_bot(true);
    bot.send("/p").await.unwrap();
    bot.advance(200);
    assert_eq!(bot.send("a").await.unwrap(), ["p: a"]);
    bot.advance(200);
    assert_eq!(
        bot.send("b").await.unwrap(),
        ["p: b"],
        "400 s after enter, 200 s idle"
    );
    bot.advance(300);
    assert_eq!(
        bot.send("c").await.unwrap(),
        ["p: c"],
        "exactly at the idle limit"
    );
    assert_eq!(
        bot.stored().await.unwrap().scenes[0].expires,
        Some(T0 + 700 + 300)
    );
    bot.advance(301);
    assert_eq!(
        bot.send("d").await.unwrap(),
        ["outside"],
        "silently gone after 301 s idle"
    );
    assert!(bot.scenes().await.is_empty());
}

#[tokio::test]
async fn c7_state_defaults_to_an_empty_object_and_the_setter_replaces_it() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("s")
                        .command("set", |cx: C| async move {
                            cx.set_scene_state(JsonState(json!({"a": 1})))?;
                            Ok(Outcome::Handled)
                        })
                        .on_text(|cx: C| async move {
                            cx.reply(cx.scene_state(JsonState::clone)?.0.to_string());
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("s", go(|| Outcome::enter("s")))
        .build()
    });
    bot.send("/s").await.unwrap();
    assert_eq!(bot.send("read").await.unwrap(), ["{}"]);
    bot.send("/set").await.unwrap();
    assert_eq!(bot.send("read").await.unwrap(), [r#"{"a":1}"#]);
    assert_eq!(
        raw(&bot).await.unwrap()["scenes"][0]["state"],
        json!({"json": {"a": 1}})
    );
}

#[tokio::test]
async fn typed_scene_state_round_trips_with_its_tag_and_a_wrong_type_is_a_state_type_error() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("f")
                        .state::<Form>()
                        .command("wrong", |cx: C| async move {
                            match cx.scene_state_mut(|p: &mut Picker| p.options.clear()) {
                                Err(Error::StateType { scene, expected }) => {
                                    cx.reply(format!(
                                        "{scene} is not {}",
                                        expected.rsplit("::").next().unwrap_or("")
                                    ));
                                }
                                other => cx.reply(format!("unexpected {other:?}")),
                            }
                            Ok(Outcome::Handled)
                        })
                        .on_text(|cx: C| async move {
                            let text = text_of(&cx);
                            let before = cx.scene_state_mut(|f: &mut Form| {
                                std::mem::replace(&mut f.name, text)
                            })?;
                            cx.reply(format!("was {before:?}"));
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("f", go(|| Outcome::enter("f")))
        .build()
    });
    bot.send("/f").await.unwrap();
    assert_eq!(bot.send("Ann").await.unwrap(), ["was \"\""]);
    let stored = bot.stored().await.unwrap();
    assert_eq!(
        stored.scenes[0].state_tag.as_deref(),
        Some("checklist.form.v1")
    );
    assert_eq!(
        raw(&bot).await.unwrap()["scenes"][0]["state"],
        json!({"checklist.form.v1": {"name": "Ann"}})
    );
    assert_eq!(
        bot.send("Bob").await.unwrap(),
        ["was \"Ann\""],
        "read back from the store"
    );
    assert_eq!(bot.send("/wrong").await.unwrap(), ["f is not Picker"]);
}

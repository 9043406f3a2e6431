//! The scene stack (beyond Telegraf, which has one current scene: #915, #1142).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use stagecraft::pipeline::PipelineBuilder;
use stagecraft::stage::{Enter, MAX_DEPTH, MAX_TRANSITIONS};

use crate::common::*;
use stagecraft::prelude::*;

/// A `menu` scene that pushes a `picker` wizard and resumes with its result.
fn menu_bot() -> Bot {
    Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("menu")
                        .ttl(60)
                        .on_leave(said("left menu"))
                        .command("pick", go(|| Outcome::push("picker")))
                        .on_resume(|cx: C| async move {
                            let wrong = cx.take_result::<u32>().map_err(|e| e.to_string());
                            let right = cx.take_result::<String>()?;
                            cx.reply(format!("menu resumed: {wrong:?} {right:?}"));
                            Ok(Outcome::Handled)
                        })
                        .on_text(say("in menu"))
                        .build(),
                )
                .scene(
                    Wizard::builder("picker")
                        .on_leave(said("left picker"))
                        .command("cancel", go(Outcome::leave))
                        .step(say_then("Choose a colour", || Outcome::Next))
                        .step(|cx: C| async move { Ok(Outcome::leave_with(text_of(&cx))) })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("menu", go(|| Outcome::enter("menu")))
        .on_text(say("outside"))
        .build()
    })
}

#[tokio::test]
async fn stack_push_keeps_the_parent_and_leave_with_resumes_it_with_the_result() {
    let bot = menu_bot();
    bot.send("/menu").await.unwrap();
    assert_eq!(
        bot.send("/pick").await.unwrap(),
        ["Choose a colour"],
        "the parent's leave hook does not run"
    );
    assert_eq!(
        bot.scenes().await,
        [frame("menu", None), frame("picker", Some(1))]
    );
    assert_eq!(
        bot.send("blue").await.unwrap(),
        [
            "left picker",
            "menu resumed: Err(\"the scene's result is a `alloc::string::String`, not a `u32`\") Some(\"blue\")"
        ]
    );
    assert_eq!(bot.scenes().await, [frame("menu", None)]);
    assert_eq!(bot.send("hi").await.unwrap(), ["in menu"]);

    // A plain leave resumes the parent with no result.
    bot.send("/pick").await.unwrap();
    assert_eq!(
        bot.send("/cancel").await.unwrap(),
        ["left picker", "menu resumed: Ok(None) None"]
    );
}

#[tokio::test]
async fn stack_expired_parent_is_dropped_silently_when_the_child_leaves() {
    let bot = menu_bot();
    bot.send("/menu").await.unwrap();
    bot.send("/pick").await.unwrap();
    bot.advance(120);
    assert_eq!(
        bot.send("red").await.unwrap(),
        ["left picker"],
        "no resume, no leave hook for the parent"
    );
    assert!(bot.scenes().await.is_empty());
    assert_eq!(bot.send("hi").await.unwrap(), ["outside"]);
}

fn abc_bot() -> Bot {
    Bot::new(|b| {
        let scene = |id: &'static str, leave: &'static str, enter: &'static str| {
            Scene::builder(id)
                .on_enter(say(enter))
                .on_leave(said(leave))
                .build()
        };
        b.stage(
            Stage::builder()
                .scene(scene("a", "leave a", "enter a"))
                .scene(scene("b", "leave b", "enter b"))
                .scene(scene("c", "leave c", "enter c"))
                .scene(scene("d", "leave d", "enter d"))
                .command("push_a", go(|| Outcome::push("a")))
                .command("push_b", go(|| Outcome::push("b")))
                .command("push_c", go(|| Outcome::push("c")))
                .command("replace", go(|| Outcome::Replace(Enter::new("d"))))
                .command("clear", go(|| Outcome::Clear))
                .build()
                .unwrap(),
        )
        .build()
    })
}

#[tokio::test]
async fn stack_replace_leaves_everything_then_enters_one_scene() {
    let bot = abc_bot();
    for cmd in ["/push_a", "/push_b", "/push_c"] {
        bot.send(cmd).await.unwrap();
    }
    assert_eq!(
        bot.scenes().await,
        [frame("a", None), frame("b", None), frame("c", None)]
    );
    assert_eq!(
        bot.send("/replace").await.unwrap(),
        ["leave c", "leave b", "leave a", "enter d"]
    );
    assert_eq!(bot.scenes().await, [frame("d", None)]);
}

#[tokio::test]
async fn stack_clear_leaves_every_scene_top_first() {
    let bot = abc_bot();
    for cmd in ["/push_a", "/push_b", "/push_c"] {
        bot.send(cmd).await.unwrap();
    }
    assert_eq!(
        bot.send("/clear").await.unwrap(),
        ["leave c", "leave b", "leave a"]
    );
    assert!(bot.scenes().await.is_empty());
}

#[tokio::test]
async fn stack_depth_is_capped_with_a_transition_error() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(Scene::builder("n").build())
                .command("deeper", go(|| Outcome::push("n")))
                .build()
                .unwrap(),
        )
        .build()
    });
    for _ in 0..MAX_DEPTH {
        bot.send("/deeper").await.unwrap();
    }
    assert_eq!(bot.scenes().await.len(), MAX_DEPTH);
    let err = bot.send("/deeper").await.unwrap_err();
    assert!(matches!(err, Error::Transition(_)), "{err:?}");
    assert_eq!(bot.scenes().await.len(), MAX_DEPTH);
}

#[tokio::test]
async fn stack_enter_loop_is_a_transition_loop_error() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("ping")
                        .on_enter(go(|| Outcome::enter("pong")))
                        .build(),
                )
                .scene(
                    Scene::builder("pong")
                        .on_enter(go(|| Outcome::enter("ping")))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("ping", go(|| Outcome::enter("ping")))
        .build()
    });
    let err = bot.send("/ping").await.unwrap_err();
    assert!(
        matches!(err, Error::TransitionLoop(n) if n == MAX_TRANSITIONS),
        "{err:?}"
    );
}

/// A `form` scene with typed state that pushes a `pick` wizard with typed state.
fn form_bot(store: Arc<dyn SessionStore>, entered: Arc<AtomicUsize>) -> Bot {
    Bot::with_store(store, move |b: PipelineBuilder<Data, TelegramUpdate>| {
        let (e1, e2) = (Arc::clone(&entered), entered);
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("form")
                        .state::<Form>()
                        .on_enter(move |_cx: C| {
                            e1.fetch_add(1, Ordering::SeqCst);
                            async move { Ok(Outcome::Handled) }
                        })
                        .command(
                            "colour",
                            go(|| {
                                Outcome::push_with(
                                    "pick",
                                    Picker {
                                        options: vec!["red".into(), "green".into()],
                                    },
                                )
                            }),
                        )
                        .on_resume(|cx: C| async move {
                            let colour = cx.take_result::<String>()?.unwrap_or_default();
                            let name = cx.scene_state(Form::clone)?.name;
                            cx.reply(format!("{name} picked {colour}"));
                            Ok(Outcome::leave())
                        })
                        .build(),
                )
                .scene(
                    Wizard::builder("pick")
                        .state::<Picker>()
                        .on_enter(move |_cx: C| {
                            e2.fetch_add(1, Ordering::SeqCst);
                            async move { Ok(Outcome::Handled) }
                        })
                        .step(|cx: C| async move {
                            let options = cx.scene_state(Picker::clone)?.options.join("/");
                            cx.reply(format!("pick {options}"));
                            Ok(Outcome::Next)
                        })
                        .step(|cx: C| async move {
                            let text = text_of(&cx);
                            if cx.scene_state(|p: &Picker| p.options.contains(&text))? {
                                return Ok(Outcome::leave_with(text));
                            }
                            cx.reply("not an option");
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command(
            "form",
            go(|| Outcome::enter_with("form", Form { name: "Ann".into() })),
        )
        .on_text(say("outside"))
        .build()
    })
}

#[tokio::test]
async fn stack_of_typed_states_round_trips_through_the_store_and_is_restored_not_reentered() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let entered = Arc::new(AtomicUsize::new(0));
    let first = form_bot(Arc::clone(&store), Arc::clone(&entered));
    first.send("/form").await.unwrap();
    assert_eq!(first.send("/colour").await.unwrap(), ["pick red/green"]);
    assert_eq!(entered.load(Ordering::SeqCst), 2);
    drop(first);

    let stored =
        stagecraft::session::inspect(&store.load("1:1").await.unwrap().unwrap().bytes).unwrap();
    let tags: Vec<_> = stored
        .scenes
        .iter()
        .map(|f| (f.scene.as_str(), f.cursor, f.state_tag.as_deref()))
        .collect();
    assert_eq!(
        tags,
        [
            ("form", None, Some("checklist.form.v1")),
            ("pick", Some(1), Some("checklist.picker.v1"))
        ]
    );

    // A second bot (a restart) on the same store continues where the first stopped.
    let second = form_bot(Arc::clone(&store), Arc::clone(&entered));
    assert_eq!(
        second.send("blue").await.unwrap(),
        ["not an option"],
        "the child's typed state came back"
    );
    assert_eq!(
        second.send("green").await.unwrap(),
        ["Ann picked green"],
        "and the parent's"
    );
    assert_eq!(
        entered.load(Ordering::SeqCst),
        2,
        "restoring runs no enter hook"
    );
    assert!(second.scenes().await.is_empty());
}

#[tokio::test]
async fn stack_resuming_a_parent_with_idle_ttl_counts_as_activity() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("menu")
                        .idle_ttl(300)
                        .command("pick", go(|| Outcome::push("picker")))
                        .on_resume(say("menu resumed"))
                        .on_text(say("in menu"))
                        .build(),
                )
                .scene(Scene::builder("picker").on_text(go(Outcome::leave)).build())
                .build()
                .unwrap(),
        )
        .command("menu", go(|| Outcome::enter("menu")))
        .on_text(say("outside"))
        .build()
    });
    bot.send("/menu").await.unwrap();
    bot.send("/pick").await.unwrap();
    bot.advance(250);
    assert_eq!(bot.send("blue").await.unwrap(), ["menu resumed"]);
    bot.advance(100);
    assert_eq!(
        bot.send("hi").await.unwrap(),
        ["in menu"],
        "idle for 100 s since it resumed, not 350 s"
    );

    // A parent idle for longer than its TTL while the child ran is gone.
    bot.send("/pick").await.unwrap();
    bot.advance(301);
    assert_eq!(bot.send("red").await.unwrap(), Vec::<String>::new());
    assert!(bot.scenes().await.is_empty());
}

/// A user busy in a sub-scene is not idle: each update in the child starts the idle TTL
/// of the parents beneath it again, so the parent is there, with its state, when the
/// child returns its result.
#[tokio::test]
async fn stack_a_parent_does_not_go_idle_while_the_user_is_active_in_its_child() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Scene::builder("menu")
                        .idle_ttl(60)
                        .command("pick", go(|| Outcome::push("picker")))
                        .on_resume(|cx: C| async move {
                            let colour = cx.take_result::<String>()?.unwrap_or_default();
                            cx.reply(format!("menu resumed with {colour}"));
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .scene(
                    Wizard::builder("picker")
                        .step(say_then("Choose a colour", || Outcome::Next))
                        .step(say_then("Sure?", || Outcome::Next))
                        .step(|cx: C| async move {
                            let t = cx.update().text().unwrap_or_default().to_owned();
                            Ok(Outcome::leave_with(t))
                        })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("menu", go(|| Outcome::enter("menu")))
        .on_text(say("outside"))
        .build()
    });
    bot.send("/menu").await.unwrap();
    bot.send("/pick").await.unwrap();
    // 80 s in the child, never 60 s idle.
    bot.advance(40);
    assert_eq!(bot.send("go").await.unwrap(), ["Sure?"]);
    bot.advance(40);
    assert_eq!(bot.send("red").await.unwrap(), ["menu resumed with red"]);
    assert_eq!(bot.scenes().await, [frame("menu", None)]);
}

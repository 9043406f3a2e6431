//! Wizards: W1–W5, and the run-now cursor moves.

use crate::common::*;
use stagecraft::prelude::*;

/// A wizard whose step 1 moves the cursor in every supported way, then replies where
/// it is; every step reports itself and the update it ran with.
fn mover_bot() -> Bot {
    let report = |i: usize| {
        move |cx: C| async move {
            cx.reply(format!("step{i} by {}", text_of(&cx)));
            Ok(if i == 0 {
                Outcome::Next
            } else {
                Outcome::Handled
            })
        }
    };
    Bot::new(move |b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("m")
                        .on_leave(said("left m"))
                        .step(report(0))
                        .step(|cx: C| async move {
                            let text = text_of(&cx);
                            let outcome = match text.as_str() {
                                "next" => {
                                    cx.wizard().next()?;
                                    Outcome::Handled
                                }
                                "back" => {
                                    cx.wizard().back()?;
                                    Outcome::Handled
                                }
                                "sel2" => {
                                    cx.wizard().select_step(2)?;
                                    Outcome::Handled
                                }
                                "o_next" => Outcome::Next,
                                "o_back" => Outcome::Back,
                                "o_goto2" => Outcome::Goto(2),
                                "jump" => Outcome::Goto(7),
                                "neg" => Outcome::Goto(-1),
                                "now" => Outcome::NextNow,
                                "now0" => Outcome::GotoNow(0),
                                "past" => Outcome::GotoNow(9),
                                _ => Outcome::Handled,
                            };
                            cx.reply(format!(
                                "step1 by {text}, cursor {:?}",
                                cx.wizard().cursor()
                            ));
                            Ok(outcome)
                        })
                        .step(report(2))
                        .build(),
                )
                .command("m", go(|| Outcome::enter("m")))
                .build()
                .unwrap(),
        )
        .on_message(say("outside"))
        .build()
    })
}

#[tokio::test]
async fn w1_out_of_range_cursor_leaves_on_the_next_update_which_is_consumed() {
    let bot = mover_bot();
    for (bad, cursor) in [("jump", 7), ("neg", -1)] {
        assert_eq!(bot.send("/m").await.unwrap(), ["step0 by /m"]);
        bot.send(bad).await.unwrap();
        assert_eq!(
            bot.scenes().await,
            [frame("m", Some(cursor))],
            "{bad}: the cursor is not bounds-checked"
        );
        assert_eq!(
            bot.send("after").await.unwrap(),
            ["left m"],
            "{bad}: left, and not passed on"
        );
        assert!(bot.scenes().await.is_empty());
        assert_eq!(bot.send("later").await.unwrap(), ["outside"]);
    }

    // Running off the end with the last step's `Next`.
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("two")
                        .on_leave(said("left two"))
                        .step(say_then("q", || Outcome::Next))
                        .step(say_then("done", || Outcome::Next))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("two", go(|| Outcome::enter("two")))
        .on_message(say("outside"))
        .build()
    });
    bot.send("/two").await.unwrap();
    assert_eq!(bot.send("a").await.unwrap(), ["done"]);
    assert_eq!(
        bot.scenes().await,
        [frame("two", Some(2))],
        "still in the wizard past its end"
    );
    assert_eq!(bot.send("b").await.unwrap(), ["left two"]);
    assert!(bot.scenes().await.is_empty());
}

#[tokio::test]
async fn w2_enter_runs_enter_hooks_then_step0_with_the_entering_update() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("w")
                        .on_enter(|cx: C| async move {
                            cx.reply(format!("enter hook 1 by {}", text_of(&cx)));
                            Ok(Outcome::Handled)
                        })
                        .on_enter(say("enter hook 2"))
                        .step(|cx: C| async move {
                            cx.reply(format!("step0 by {}", text_of(&cx)));
                            Ok(Outcome::Next)
                        })
                        .step(say("step1"))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("w", go(|| Outcome::enter("w")))
        .build()
    });
    assert_eq!(
        bot.send("/w").await.unwrap(),
        ["enter hook 1 by /w", "enter hook 2", "step0 by /w"]
    );
    assert_eq!(bot.scenes().await, [frame("w", Some(1))]);
    assert_eq!(bot.send("x").await.unwrap(), ["step1"]);
}

// In Telegraf an enter handler that does not call `next()` keeps step 0 from running;
// a stagecraft enter hook stops step 0 only by answering a transition.
#[tokio::test]
async fn diff_w2_an_enter_hook_stops_step0_only_by_a_transition() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("gate")
                        .on_enter(|cx: C| async move {
                            if text_of(&cx).ends_with("closed") {
                                cx.reply("gate closed");
                                return Ok(Outcome::leave());
                            }
                            cx.reply("gate open");
                            Ok(Outcome::Handled)
                        })
                        .on_leave(said("left gate"))
                        .step(say_then("step0", || Outcome::Next))
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("gate", go(|| Outcome::enter("gate")))
        .build()
    });
    assert_eq!(
        bot.send("/gate closed").await.unwrap(),
        ["gate closed", "left gate"],
        "step 0 did not run"
    );
    assert!(bot.scenes().await.is_empty());
    assert_eq!(
        bot.send("/gate").await.unwrap(),
        ["gate open", "step0"],
        "a non-transition answer goes on to step 0"
    );
    assert_eq!(bot.scenes().await, [frame("gate", Some(1))]);
}

#[tokio::test]
async fn w3_cursor_moves_run_no_step_and_the_cursor_is_live() {
    let bot = mover_bot();
    // (answer at step 1, reply, cursor after, what the next update runs)
    let cases = [
        ("next", "step1 by next, cursor Some(2)", 2, "step2 by then"),
        ("sel2", "step1 by sel2, cursor Some(2)", 2, "step2 by then"),
        ("back", "step1 by back, cursor Some(0)", 0, "step0 by then"),
        (
            "o_next",
            "step1 by o_next, cursor Some(1)",
            2,
            "step2 by then",
        ),
        (
            "o_goto2",
            "step1 by o_goto2, cursor Some(1)",
            2,
            "step2 by then",
        ),
        (
            "o_back",
            "step1 by o_back, cursor Some(1)",
            0,
            "step0 by then",
        ),
    ];
    for (answer, reply, cursor, then) in cases {
        bot.send("/m").await.unwrap();
        assert_eq!(
            bot.send(answer).await.unwrap(),
            [reply],
            "{answer}: no step ran"
        );
        assert_eq!(bot.scenes().await, [frame("m", Some(cursor))], "{answer}");
        assert_eq!(
            bot.send("then").await.unwrap(),
            [then],
            "{answer}: the new step runs on the next update"
        );
    }
}

// Telegraf has no way to run the new step with the same update (#1002, #419);
// `NextNow`/`GotoNow` move the cursor and run the step at once (past the end: leave).
#[tokio::test]
async fn diff_w3_next_now_and_goto_now_run_the_step_with_the_same_update() {
    let bot = mover_bot();
    bot.send("/m").await.unwrap();
    assert_eq!(
        bot.send("now").await.unwrap(),
        ["step1 by now, cursor Some(1)", "step2 by now"]
    );
    assert_eq!(bot.scenes().await, [frame("m", Some(2))]);

    bot.send("/m").await.unwrap();
    assert_eq!(
        bot.send("now0").await.unwrap(),
        ["step1 by now0, cursor Some(1)", "step0 by now0"]
    );
    assert_eq!(bot.scenes().await, [frame("m", Some(1))]);

    assert_eq!(
        bot.send("past").await.unwrap(),
        ["step1 by past, cursor Some(1)", "left m"]
    );
    assert!(bot.scenes().await.is_empty());
}

// Telegraf's `ctx.wizard.next()` after `ctx.scene.leave()` stores `cursor: NaN`
// (`null`); stagecraft refuses cursor moves without an active wizard.
#[tokio::test]
async fn diff_w3_cursor_moves_without_an_active_wizard_are_errors() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("w")
                        .step(|cx: C| async move {
                            cx.scene().leave().await?;
                            let after_leave = cx.wizard().next();
                            cx.reply(format!("after leave: {after_leave:?}"));
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .scene(
                    Scene::builder("plain")
                        .on_text(|cx: C| async move {
                            let r = cx.wizard().select_step(1);
                            cx.reply(format!("plain: {}", matches!(r, Err(Error::Transition(_)))));
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("w", go(|| Outcome::enter("w")))
        .command("plain", go(|| Outcome::enter("plain")))
        .build()
    });
    assert_eq!(
        bot.send("/w").await.unwrap(),
        ["after leave: Err(NoActiveScene)"]
    );
    assert!(
        raw(&bot).await.is_none_or(|r| r.get("scenes").is_none()),
        "no frame, no NaN cursor"
    );
    bot.send("/plain").await.unwrap();
    assert_eq!(bot.send("x").await.unwrap(), ["plain: true"]);
}

#[tokio::test]
async fn w4_a_step_answering_pass_lets_the_update_continue_past_the_stage() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("w")
                        .step(say_then("w0", || Outcome::Next))
                        .step(|cx: C| async move {
                            if text_of(&cx).starts_with('/') {
                                return Ok(Outcome::Pass);
                            }
                            cx.reply("w1 took it");
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("w", go(|| Outcome::enter("w")))
        .command("help", say("help from outside"))
        .build()
    });
    bot.send("/w").await.unwrap();
    assert_eq!(bot.send("/help").await.unwrap(), ["help from outside"]);
    assert_eq!(
        bot.scenes().await,
        [frame("w", Some(1))],
        "the wizard stays where it was"
    );
    assert_eq!(bot.send("x").await.unwrap(), ["w1 took it"]);
}

#[tokio::test]
async fn w5_entering_another_scene_from_a_step_leaves_the_old_and_runs_the_new_step0() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("a")
                        .on_leave(said("leave a"))
                        .step(say_then("a0", || Outcome::Next))
                        .step(|cx: C| async move {
                            if text_of(&cx) == "outcome" {
                                return Ok(Outcome::enter("b"));
                            }
                            cx.scene().enter("b").await?;
                            cx.reply(format!(
                                "now {:?} cursor {:?}",
                                cx.current_scene(),
                                cx.wizard().cursor()
                            ));
                            Ok(Outcome::Handled)
                        })
                        .build(),
                )
                .scene(
                    Wizard::builder("b")
                        .on_enter(say("enter b"))
                        .step(|cx: C| async move {
                            cx.reply(format!("b0 by {}", text_of(&cx)));
                            Ok(Outcome::Next)
                        })
                        .step(say("b1"))
                        .build(),
                )
                .command("a", go(|| Outcome::enter("a")))
                .build()
                .unwrap(),
        )
        .build()
    });
    bot.send("/a").await.unwrap();
    assert_eq!(
        bot.send("call").await.unwrap(),
        [
            "leave a",
            "enter b",
            "b0 by call",
            "now Some(\"b\") cursor Some(1)"
        ],
        "the wizard handle now refers to b"
    );
    assert_eq!(bot.scenes().await, [frame("b", Some(1))]);

    bot.send("/a").await.unwrap();
    assert_eq!(
        bot.send("outcome").await.unwrap(),
        ["leave a", "enter b", "b0 by outcome"]
    );
    assert_eq!(bot.scenes().await, [frame("b", Some(1))]);
}

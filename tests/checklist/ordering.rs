//! Per-key ordering (S4/S6): one key's updates run one at a time, in arrival order;
//! different keys run concurrently.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::common::*;
use stagecraft::prelude::*;

async fn join_all(handles: Vec<tokio::task::JoinHandle<stagecraft::Result<Dispatch>>>) {
    for h in handles {
        h.await.expect("task").expect("update");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s4_hundred_concurrent_updates_of_one_key_lose_no_increment() {
    let bot = Bot::new(|b| {
        b.on_text(|cx: C| async move {
            let n = cx.session(|d| d.count)?;
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            cx.session_mut(|d| d.count = n + 1)?;
            Ok(Outcome::Handled)
        })
        .build()
    });
    let handles = (0..100)
        .map(|i| tokio::spawn(bot.pipeline().handle(bot.message(&i.to_string()))))
        .collect();
    join_all(handles).await;
    assert_eq!(raw(&bot).await.unwrap()["data"]["count"], 100);
    assert_eq!(bot.pipeline().keys_in_flight(), 0);
}

// Telegraf shares one session object between a key's concurrent updates and lets them
// interleave at every await (S4/S6); stagecraft queues them per key (FIFO).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_s4_s6_updates_of_one_key_never_interleave_and_keep_arrival_order() {
    let running = Arc::new(AtomicUsize::new(0));
    let max_running = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let (r, m, o) = (
        Arc::clone(&running),
        Arc::clone(&max_running),
        Arc::clone(&order),
    );
    let bot = Bot::new(move |b| {
        b.on_text(move |cx: C| {
            let (running, max_running, order) = (Arc::clone(&r), Arc::clone(&m), Arc::clone(&o));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_running.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                order.lock().unwrap().push(text_of(&cx).parse::<u32>()?);
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(Outcome::Handled)
            }
        })
        .build()
    });
    // Create every future first (each joins the key's queue when `handle` is called),
    // then spawn them in reverse: the queue, not the scheduler, decides the order.
    let futures: Vec<_> = (0..50)
        .map(|i| bot.pipeline().handle(bot.message(&i.to_string())))
        .collect();
    let handles = futures.into_iter().rev().map(tokio::spawn).collect();
    join_all(handles).await;
    assert_eq!(
        max_running.load(Ordering::SeqCst),
        1,
        "never two handlers of one key at once"
    );
    assert_eq!(*order.lock().unwrap(), (0..50).collect::<Vec<_>>());
}

// Telegraf (#643): two quick answers to one wizard step both run that step and the
// cursor moves twice, skipping a question; here each answer runs its own step in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diff_s6_two_quick_answers_run_one_wizard_step_each_in_order() {
    let bot = Bot::new(|b| {
        b.stage(
            Stage::builder()
                .scene(
                    Wizard::builder("signup")
                        .state::<Form>()
                        .step(say_then("What is your name?", || Outcome::Next))
                        .step(|cx: C| async move {
                            let name = text_of(&cx);
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            cx.reply(format!("How old are you, {name}?"));
                            cx.scene_state_mut(|s: &mut Form| s.name = name)?;
                            Ok(Outcome::Next)
                        })
                        .step(|cx: C| async move {
                            let name = cx.scene_state(Form::clone)?.name;
                            cx.reply(format!("Confirm: {name}, {}.", text_of(&cx)));
                            Ok(Outcome::leave())
                        })
                        .build(),
                )
                .build()
                .unwrap(),
        )
        .command("start", go(|| Outcome::enter("signup")))
        .build()
    });
    assert_eq!(bot.send("/start").await.unwrap(), ["What is your name?"]);
    let _ = bot.replies().take();
    let handles = vec![
        tokio::spawn(bot.pipeline().handle(bot.message("Ann"))),
        tokio::spawn(bot.pipeline().handle(bot.message("42"))),
    ];
    join_all(handles).await;
    assert_eq!(
        bot.replies().texts(),
        ["How old are you, Ann?", "Confirm: Ann, 42."]
    );
    assert!(bot.scenes().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s6_updates_of_different_keys_run_concurrently() {
    // `wait` blocks until a `release` update signals it (or the timeout passes).
    let build = |wait: Duration| {
        let signal = Arc::new(Notify::new());
        Bot::new(move |b| {
            b.on_text(move |cx: C| {
                let signal = Arc::clone(&signal);
                async move {
                    if text_of(&cx) == "release" {
                        signal.notify_one();
                        cx.reply("released");
                    } else {
                        let got = tokio::time::timeout(wait, signal.notified()).await.is_ok();
                        cx.reply(if got { "was released" } else { "timed out" });
                    }
                    Ok(Outcome::Handled)
                }
            })
            .build()
        })
    };
    // Two users: the first is released by the second while it waits.
    let bot = build(Duration::from_secs(10));
    let waiting = tokio::spawn(bot.pipeline().handle(bot.message_from(1, 1, "wait")));
    let releasing = tokio::spawn(bot.pipeline().handle(bot.message_from(2, 2, "release")));
    join_all(vec![waiting, releasing]).await;
    let mut texts = bot.replies().texts();
    texts.sort();
    assert_eq!(texts, ["released", "was released"]);

    // The same two updates of one key: the release waits behind the waiter.
    let bot = build(Duration::from_millis(200));
    let waiting = tokio::spawn(bot.pipeline().handle(bot.message("wait")));
    let releasing = tokio::spawn(bot.pipeline().handle(bot.message("release")));
    join_all(vec![waiting, releasing]).await;
    assert_eq!(bot.replies().texts(), ["timed out", "released"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_in_flight_is_zero_after_a_burst() {
    let bot = Bot::new(|b| {
        b.on_text(|cx: C| async move {
            tokio::time::sleep(Duration::from_millis(2)).await;
            cx.session_mut(|d| d.count += 1)?;
            Ok(Outcome::Handled)
        })
        .build()
    });
    let futures: Vec<_> = (0..100)
        .map(|i| bot.pipeline().handle(bot.message_from(i % 20, 7, "x")))
        .collect();
    assert_eq!(
        bot.pipeline().keys_in_flight(),
        20,
        "queued at call time, one entry per key"
    );
    join_all(futures.into_iter().map(tokio::spawn).collect()).await;
    assert_eq!(bot.pipeline().keys_in_flight(), 0);
    for user in 0..20 {
        assert_eq!(
            raw_at(bot.store().as_ref(), &format!("{user}:7"))
                .await
                .unwrap()["data"]["count"],
            5
        );
    }
}

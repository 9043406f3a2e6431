//! Session: S1–S8, plus decoding and save policies.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use stagecraft::clock::ManualClock;
use stagecraft::session::{DecodePolicy, SavePolicy};
use stagecraft::store::Version;

use crate::common::*;
use stagecraft::prelude::*;

/// A handler logging `key` and whether the session could be read, for updates that
/// cannot be replied to (no chat).
fn key_logger(
    log: Arc<Mutex<Vec<String>>>,
) -> impl stagecraft::handler::Handler<Data, TelegramUpdate> {
    move |cx: C| {
        let log = Arc::clone(&log);
        async move {
            let session = match cx.session_mut(|d| d.count += 1) {
                Ok(()) => "session".to_owned(),
                Err(Error::NoSession) => "no session".to_owned(),
                Err(e) => format!("error {e}"),
            };
            log.lock()
                .unwrap()
                .push(format!("{:?} {session}", cx.key()));
            Ok(Outcome::Handled)
        }
    }
}

#[tokio::test]
async fn s1_default_key_is_user_in_chat_and_missing_parts_mean_no_session() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let bot = Bot::new(|b| b.on_update(key_logger(Arc::clone(&log))).build()).as_user(7, -100_500);

    bot.pipeline().handle(bot.message("hi")).await.unwrap();
    // A callback on a message: `from` is the presser, the chat is the message's.
    bot.pipeline().handle(bot.callback("btn")).await.unwrap();
    // A callback on an inline message has no chat; an inline query has no chat either.
    let inline_cb =
        tg(json!({"update_id": 90, "callback_query": {"id": "q", "from": {"id": 7}, "data": "x"}}));
    bot.pipeline().handle(inline_cb).await.unwrap();
    let inline_query = tg(
        json!({"update_id": 91, "inline_query": {"id": "iq", "from": {"id": 7}, "query": "", "offset": ""}}),
    );
    bot.pipeline().handle(inline_query).await.unwrap();
    // A channel post has no `from`.
    bot.pipeline()
        .handle(channel_post(92, -100_500, "post"))
        .await
        .unwrap();

    assert_eq!(
        *log.lock().unwrap(),
        [
            "Some(\"7:-100500\") session",
            "Some(\"7:-100500\") session",
            "None no session",
            "None no session",
            "None no session",
        ]
    );
    // Only the keyed updates reached the store, all under the one user-in-chat key.
    assert_eq!(keys(bot.store().as_ref()).await, ["7:-100500"]);
    assert_eq!(raw(&bot).await.unwrap()["data"]["count"], 2);
}

// Telegraf gives such updates `ctx.session === undefined` and silently discards
// assignments; stagecraft makes the absence explicit with `Error::NoSession`.
#[tokio::test]
async fn diff_s1_channel_post_has_no_session_but_chain_and_stage_run() {
    let store = CountingStore::new();
    let bot = Bot::with_store(store.clone(), |b| {
        b.middleware(|cx: C, next: Next<Data, TelegramUpdate>| async move {
            cx.reply("middleware");
            next.run(cx).await
        })
        .stage(
            Stage::builder()
                .scene(
                    Scene::builder("s")
                        .on_enter(say("entered s"))
                        .on_text(say("in s"))
                        .build(),
                )
                .command("where", where_handler())
                .build()
                .unwrap(),
        )
        .command("go", |cx: C| async move {
            match cx.session(|d| d.count) {
                Err(Error::NoSession) => cx.reply("no session"),
                other => cx.reply(format!("unexpected {other:?}")),
            }
            match cx.session_mut(|d| d.count = 9) {
                Err(Error::NoSession) => cx.reply("cannot write"),
                other => cx.reply(format!("unexpected {other:?}")),
            }
            cx.scene().enter("s").await?;
            cx.reply(format!("now in {:?}", cx.current_scene()));
            Ok(Outcome::Handled)
        })
        .build()
    });

    let texts = bot.texts_of(channel_post(1, -100, "/go")).await.unwrap();
    assert_eq!(
        texts,
        [
            "middleware",
            "no session",
            "cannot write",
            "entered s",
            "now in Some(\"s\")"
        ]
    );
    // The scene lived only for that update.
    assert_eq!(
        bot.texts_of(channel_post(2, -100, "/where")).await.unwrap(),
        ["middleware", "scene=none cursor=-"]
    );
    assert_eq!(
        store.calls(),
        (0, 0, 0),
        "no store I/O at all for updates without a session"
    );
    assert!(keys(store.as_ref()).await.is_empty());
}

#[tokio::test]
async fn s2_key_strategies_produce_the_expected_stored_keys() {
    let forum = json!({"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": -100},
        "from": {"id": 7}, "message_thread_id": 3, "text": "hi"}});
    let plain = json!({"update_id": 2, "message": {"message_id": 2, "date": 0, "chat": {"id": -100},
        "from": {"id": 7}, "text": "hi"}});
    let custom =
        || KeyStrategy::custom(|u: &TelegramUpdate| Some(format!("custom:{}", u.chat_id()?)));
    let cases: Vec<(KeyStrategy<TelegramUpdate>, &serde_json::Value, &str)> = vec![
        (KeyStrategy::UserInChat, &forum, "7:-100"),
        (KeyStrategy::Chat, &forum, "-100"),
        (KeyStrategy::User, &forum, "7"),
        (KeyStrategy::ChatThread, &forum, "-100:3"),
        (KeyStrategy::ChatThread, &plain, "-100"),
        (custom(), &forum, "custom:-100"),
    ];
    for (key, update, expected) in cases {
        let name = format!("{key:?}");
        let store = Arc::new(MemoryStore::new());
        let bot = Pipeline::<Data>::builder()
            .store_arc(store.clone())
            .key(key)
            .on_text(counter())
            .build();
        bot.handle(tg(update.clone())).await.unwrap();
        assert_eq!(keys(store.as_ref()).await, [expected], "{name}");
    }

    // A custom key answering `None` means no session.
    let store = Arc::new(MemoryStore::new());
    let bot = Pipeline::<Data>::builder()
        .store_arc(store.clone())
        .key(KeyStrategy::custom(|_: &TelegramUpdate| None))
        .on_text(|cx: C| async move {
            assert!(matches!(cx.session(|_| ()), Err(Error::NoSession)));
            Ok(Outcome::Handled)
        })
        .build();
    bot.handle(tg(forum)).await.unwrap();
    assert!(keys(store.as_ref()).await.is_empty());
}

// Telegraf's `property` option lets several session middlewares share one chain; a
// stagecraft pipeline has one session, so independent sessions are separate pipelines
// (here on one store, told apart by their keys).
#[tokio::test]
async fn s2_several_pipelines_with_different_keys_coexist_on_one_store() {
    let store = Arc::new(MemoryStore::new());
    let per_user = Pipeline::<Data>::builder()
        .store_arc(store.clone())
        .on_text(counter())
        .build();
    let per_chat = Pipeline::<Data>::builder()
        .store_arc(store.clone())
        .key(KeyStrategy::custom(|u: &TelegramUpdate| {
            Some(format!("chat:{}", u.chat_id()?))
        }))
        .on_text(counter())
        .build();
    let bot = Bot::new(|b| b.build());
    for user in 1..=5 {
        let u = bot.message_from(user, 50, "hi");
        per_user.handle(u.clone()).await.unwrap();
        per_chat.handle(u).await.unwrap();
    }
    let all = keys(store.as_ref()).await;
    assert_eq!(all, ["1:50", "2:50", "3:50", "4:50", "5:50", "chat:50"]);
    for user in 1..=5 {
        assert_eq!(
            raw_at(store.as_ref(), &format!("{user}:50")).await.unwrap()["data"]["count"],
            1
        );
    }
    assert_eq!(
        raw_at(store.as_ref(), "chat:50").await.unwrap()["data"]["count"],
        5
    );
}

#[tokio::test]
async fn s3_missing_session_starts_from_the_default_factory_once_per_load() {
    let made = Arc::new(AtomicUsize::new(0));
    let store = Arc::new(MemoryStore::new());
    let replies = RecordingTransport::new();
    let factory_calls = Arc::clone(&made);
    let bot = Pipeline::<Data>::builder_with(move || {
        factory_calls.fetch_add(1, Ordering::SeqCst);
        Data {
            count: 10,
            nick: None,
        }
    })
    .store_arc(store.clone())
    .transport(replies.clone())
    .on_text(counter())
    .build();
    let tb = Bot::new(|b| b.build());

    bot.handle(tb.message_from(1, 1, "a")).await.unwrap();
    bot.handle(tb.message_from(1, 1, "b")).await.unwrap();
    bot.handle(tb.message_from(2, 1, "c")).await.unwrap();
    assert_eq!(replies.texts(), ["count=11", "count=12", "count=11"]);
    assert_eq!(
        made.load(Ordering::SeqCst),
        2,
        "the factory runs only when the store has nothing"
    );
    assert_eq!(
        raw_at(store.as_ref(), "1:1").await.unwrap()["data"]["count"],
        12
    );
    assert_eq!(
        raw_at(store.as_ref(), "2:1").await.unwrap()["data"]["count"],
        11
    );
}

#[tokio::test]
async fn s5_session_is_written_after_each_update_and_cleared_session_is_deleted() {
    let store = CountingStore::new();
    let bot = Bot::with_store(store.clone(), |b| {
        b.command("forget", |cx: C| async move {
            cx.clear_session()?;
            cx.reply("forgotten");
            Ok(Outcome::Handled)
        })
        .on_text(counter())
        .build()
    });
    assert_eq!(bot.send("a").await.unwrap(), ["count=1"]);
    assert_eq!(raw(&bot).await.unwrap()["data"]["count"], 1);
    assert_eq!(bot.send("b").await.unwrap(), ["count=2"]);
    assert_eq!(raw(&bot).await.unwrap()["data"]["count"], 2);
    assert_eq!(store.calls().1, 2, "one write per changed update");

    assert_eq!(bot.send("/forget").await.unwrap(), ["forgotten"]);
    assert!(
        raw(&bot).await.is_none(),
        "a cleared session is deleted from the store"
    );
    assert_eq!(store.calls().2, 1);
    assert_eq!(
        bot.send("c").await.unwrap(),
        ["count=1"],
        "and starts afresh"
    );
}

#[tokio::test]
async fn s5_failed_update_still_writes_the_session_and_reports_the_error() {
    let bot = Bot::new(|b| {
        b.command("fail", |cx: C| async move {
            cx.session_mut(|d| d.count = 5)?;
            cx.reply("before the error");
            Err("boom".into())
        })
        .on_text(counter())
        .build()
    });
    bot.send("a").await.unwrap();
    let err = bot.send("/fail").await.unwrap_err();
    assert!(matches!(err, Error::Handler(_)), "{err:?}");
    assert_eq!(
        raw(&bot).await.unwrap()["data"]["count"],
        5,
        "written as the handler left it"
    );
    assert_eq!(
        bot.replies().texts(),
        ["before the error"],
        "replies made before the error are sent"
    );
}

// Telegraf always writes a touched session, even when the chain threw; `RollBack` is an
// opt-in that keeps the stored session and drops the update's held-back replies.
#[tokio::test]
async fn diff_s5_rollback_policy_writes_nothing_and_drops_replies() {
    let bot = Bot::new(|b| {
        b.error_policy(ErrorPolicy::RollBack)
            .stage(
                Stage::builder()
                    .scene(Scene::builder("s").on_enter(say("entered s")).build())
                    .build()
                    .unwrap(),
            )
            .command("fail", |cx: C| async move {
                cx.session_mut(|d| d.count = 5)?;
                cx.scene().enter("s").await?;
                cx.reply("before the error");
                Err("boom".into())
            })
            .on_text(counter())
            .build()
    });
    bot.send("a").await.unwrap();
    let before = bot.store().load(&bot.key()).await.unwrap().unwrap();
    let err = bot.send("/fail").await.unwrap_err();
    assert!(matches!(err, Error::Handler(_)), "{err:?}");
    let after = bot.store().load(&bot.key()).await.unwrap().unwrap();
    assert_eq!(after, before, "record and version untouched");
    assert!(
        bot.scenes().await.is_empty(),
        "the scene entered before the error is gone"
    );
    assert!(
        bot.replies().sent().is_empty(),
        "held-back replies are dropped"
    );
    assert_eq!(bot.send("b").await.unwrap(), ["count=2"]);
}

// Telegraf writes whenever the session was read or assigned (`touched`), even with no
// change; stagecraft's default `SavePolicy::Changed` writes only a changed encoding.
#[tokio::test]
async fn diff_s5_default_policy_writes_only_a_changed_session() {
    let store = CountingStore::new();
    let bot = Bot::with_store(store.clone(), |b| {
        b.command("read", |cx: C| async move {
            let n = cx.session(|d| d.count)?;
            cx.reply(format!("read {n}"));
            Ok(Outcome::Handled)
        })
        .command("same", |cx: C| async move {
            cx.session_mut(|d| d.nick = d.nick.take())?;
            cx.reply("same");
            Ok(Outcome::Handled)
        })
        .on_text(counter())
        .build()
    });
    assert_eq!(bot.send("/read").await.unwrap(), ["read 0"]);
    assert!(
        raw(&bot).await.is_none(),
        "reading a new session does not create it"
    );
    assert_eq!(store.calls().1, 0);

    bot.send("a").await.unwrap();
    let v1 = bot.store().load(&bot.key()).await.unwrap().unwrap().version;
    bot.send("/read").await.unwrap();
    bot.send("/same").await.unwrap();
    assert_eq!(
        store.calls().1,
        1,
        "reads and no-op writes are not written back"
    );
    assert_eq!(
        bot.store().load(&bot.key()).await.unwrap().unwrap().version,
        v1
    );
}

// `SavePolicy::Touched` is Telegraf's behaviour: every update that read or wrote the
// session writes it back (one write per update, not coalesced); untouched updates don't.
#[tokio::test]
async fn s5_touched_policy_writes_every_touched_update() {
    let store = CountingStore::new();
    let bot = Bot::with_store(store.clone(), |b| {
        b.save_policy(SavePolicy::Touched)
            .command("read", |cx: C| async move {
                let n = cx.session(|d| d.count)?;
                cx.reply(format!("read {n}"));
                Ok(Outcome::Handled)
            })
            .command("ignore", say("ignored"))
            .on_text(counter())
            .build()
    });
    bot.send("/ignore").await.unwrap();
    assert_eq!(store.calls().1, 0, "an untouched update writes nothing");
    assert!(raw(&bot).await.is_none());

    bot.send("/read").await.unwrap();
    assert_eq!(store.calls().1, 1, "a mere read creates the session");
    assert_eq!(raw(&bot).await.unwrap()["data"]["count"], 0);
    let v1 = bot.store().load(&bot.key()).await.unwrap().unwrap().version;
    for _ in 0..3 {
        bot.send("/read").await.unwrap();
    }
    assert_eq!(store.calls().1, 4, "one write per touched update");
    assert_ne!(
        bot.store().load(&bot.key()).await.unwrap().unwrap().version,
        v1
    );
    bot.send("/ignore").await.unwrap();
    assert_eq!(store.calls().1, 4);
}

#[tokio::test]
async fn s7_memory_store_has_no_ttl_by_default_and_optional_ttl_expires_lazily() {
    // No TTL: records outlive any amount of time.
    let bot = Bot::new(|b| b.on_text(counter()).build());
    bot.send("a").await.unwrap();
    bot.advance(10 * 365 * 24 * 3600);
    assert_eq!(bot.send("b").await.unwrap(), ["count=2"]);

    // With a TTL: a record expires `ttl` after its last save.
    let clock = ManualClock::at_secs(1_700_000_000);
    let store = MemoryStore::new()
        .with_ttl(Duration::from_secs(60))
        .with_clock(Arc::new(clock.clone()));
    let bot = Bot::with_store(Arc::new(store.clone()), |b| b.on_text(counter()).build());
    bot.send("a").await.unwrap();
    clock.advance(Duration::from_secs(59));
    assert_eq!(
        bot.send("b").await.unwrap(),
        ["count=2"],
        "still alive; the save renews it"
    );
    clock.advance(Duration::from_secs(59));
    assert_eq!(bot.send("c").await.unwrap(), ["count=3"]);
    clock.advance(Duration::from_secs(61));
    assert!(
        bot.store().load(&bot.key()).await.unwrap().is_none(),
        "expired on read"
    );
    assert_eq!(bot.send("d").await.unwrap(), ["count=1"], "a fresh session");
}

// Telegraf's in-memory store keeps live object references; stagecraft stores encoded
// bytes (JSON by default), like Telegraf's persistent stores: `None` fields skipped.
#[tokio::test]
async fn diff_s7_records_are_encoded_json_not_live_references() {
    let bot = Bot::new(|b| {
        b.command("nick", |cx: C| async move {
            cx.session_mut(|d| d.nick = Some("ann".into()))?;
            Ok(Outcome::Handled)
        })
        .command("unnick", |cx: C| async move {
            cx.session_mut(|d| d.nick = None)?;
            Ok(Outcome::Handled)
        })
        .build()
    });
    bot.send("/nick").await.unwrap();
    assert_eq!(
        raw(&bot).await.unwrap(),
        json!({"v": 1, "data": {"count": 0, "nick": "ann"}, "at": 1_700_000_000})
    );
    bot.send("/unnick").await.unwrap();
    assert_eq!(
        raw(&bot).await.unwrap(),
        json!({"v": 1, "data": {"count": 0}, "at": 1_700_000_000})
    );
}

// Telegraf would hand garbage to the bot (or throw from JSON.parse and then overwrite
// the record with a fresh session); under `DecodePolicy::Fail` stagecraft fails the
// update and keeps the bytes (the default mends it, see tests/continuity.rs).
#[tokio::test]
async fn diff_undecodable_session_fails_and_leaves_stored_bytes_untouched() {
    let failing = |b: stagecraft::pipeline::PipelineBuilder<Data, TelegramUpdate>| {
        b.decode_policy(DecodePolicy::Fail)
            .on_text(counter())
            .build()
    };
    let bot = Bot::new(failing);
    let v = bot
        .store()
        .save(&bot.key(), b"\x00garbage", None)
        .await
        .unwrap();
    let err = bot.send("a").await.unwrap_err();
    assert!(
        matches!(&err, Error::Decode { key, .. } if key == "1:1"),
        "{err:?}"
    );
    let stored = bot.store().load(&bot.key()).await.unwrap().unwrap();
    assert_eq!(
        (stored.bytes.as_slice(), stored.version),
        (&b"\x00garbage"[..], v)
    );
    assert!(bot.replies().sent().is_empty());

    // A scene state whose typetag name is not registered is undecodable too.
    let bot = Bot::new(failing);
    let bytes = br#"{"data":{"count":4},"scenes":[{"scene":"s","entered_at":1700000000,"state":{"nope.v9":{}}}]}"#;
    let v = bot.store().save(&bot.key(), bytes, None).await.unwrap();
    let err = bot.send("a").await.unwrap_err();
    assert!(matches!(err, Error::Decode { .. }), "{err:?}");
    let stored = bot.store().load(&bot.key()).await.unwrap().unwrap();
    assert_eq!((stored.bytes.as_slice(), stored.version), (&bytes[..], v));
}

#[tokio::test]
async fn diff_decode_policy_reset_starts_afresh_and_overwrites() {
    let bot = Bot::new(|b| {
        b.decode_policy(DecodePolicy::Reset)
            .on_text(counter())
            .build()
    });
    let v: Version = bot
        .store()
        .save(&bot.key(), b"\x00garbage", None)
        .await
        .unwrap();
    assert_eq!(bot.send("a").await.unwrap(), ["count=1"]);
    let stored = bot.store().load(&bot.key()).await.unwrap().unwrap();
    assert_ne!(stored.version, v);
    let stored = raw(&bot).await.unwrap();
    assert_eq!(stored["data"], json!({"count": 1}));
    assert_eq!(
        stored["lost"][0]["what"], "record",
        "a copy is kept: {stored}"
    );
}

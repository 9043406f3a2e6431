//! Rich replies (keyboards, parse modes, media, edits, deletions, callback answers),
//! message ids kept by name, and buttons bound to their step: through `TestBot`, and
//! through the stage on real stores (memory, SQLite, and Redis when
//! `STAGECRAFT_REDIS_URL` is set), with and without the outbox.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use async_trait::async_trait;
use regex::Regex;
use serde::{Deserialize, Serialize};
use stagecraft::clock::ManualClock;
use stagecraft::pipeline::PipelineBuilder;
use stagecraft::prelude::*;
use stagecraft::record::inspect;
use stagecraft::replay::{REPLAY_EPOCH_S, replay};
use stagecraft::stage::DEFAULT_STALE_BUTTON_NOTICE;
use stagecraft::store::{SessionStore, SqliteStore};
use stagecraft::testing::TestBot;
use stagecraft::transport::{
    Button, Delivered, MessageRef, Outgoing, ParseMode, Reply, ReplyMarkup, Transport,
    split_callback_tag,
};

#[derive(Debug, Default, Serialize, Deserialize)]
struct Quiz {
    answers: Vec<String>,
}

type C = Cx<Quiz>;

/// A wizard that asks with buttons (and remembers the question), and takes the answer
/// pressed or typed: the press is answered, the question edited, its keyboard removed.
fn quiz_stage(notice: Option<&'static str>) -> Stage<Quiz, TelegramUpdate> {
    Stage::builder()
        .stale_button_notice(notice)
        .scene(
            Wizard::builder("ask")
                .step(|cx: C| async move {
                    cx.send(
                        Reply::text("<b>Sure?</b>")
                            .parse_mode(ParseMode::Html)
                            .inline_keyboard([
                                vec![Button::callback("Yes", "yes"), Button::callback("No", "no")],
                                vec![Button::url("Docs", "https://example.org/docs")],
                            ])
                            .remember("question"),
                    )?;
                    Ok(Outcome::Next)
                })
                .step(|cx: C| async move {
                    let answer = match cx.update().callback_payload() {
                        Some(p) => {
                            let p = p.to_owned();
                            cx.send(Reply::answer_callback(Some(format!("You chose {p}"))))?;
                            cx.send(Reply::edit_markup(MessageRef::Callback))?;
                            p
                        }
                        None => cx.update().message_text().unwrap_or_default().to_owned(),
                    };
                    cx.send(Reply::edit_text("question", format!("Sure? {answer}")))?;
                    cx.session_mut(|q| q.answers.push(answer.clone()))?;
                    cx.reply(format!("ok {answer}"));
                    Ok(Outcome::leave())
                })
                .build(),
        )
        .build()
        .unwrap()
}

fn quiz(b: PipelineBuilder<Quiz, TelegramUpdate>, notice: Option<&'static str>) -> Pipeline<Quiz> {
    b.stage(quiz_stage(notice))
        .command("ask", |_cx: C| async move { Ok(Outcome::enter("ask")) })
        .command("media", |cx: C| async move {
            cx.send(
                Reply::photo("AgACAgIAAx0")
                    .caption("*bold*")
                    .parse_mode(ParseMode::MarkdownV2)
                    .remember("pic"),
            )?;
            cx.send(Reply::document("https://example.org/a.pdf").caption("the file"))?;
            cx.send(Reply::text("Pick one").reply_keyboard([vec!["red", "green"], vec!["blue"]]))?;
            Ok(Outcome::Handled)
        })
        .command("nokb", |cx: C| async move {
            cx.send(Reply::text("Keyboard gone").remove_keyboard())?;
            Ok(Outcome::Handled)
        })
        .command("forget", |cx: C| async move {
            cx.send(Reply::delete("pic"))?;
            Ok(Outcome::Handled)
        })
        .command("menu", |cx: C| async move {
            cx.send(Reply::text("Menu").inline_keyboard([[
                Button::callback("Alert", "alert"),
                Button::callback("Raw", "raw:1").unbound(),
            ]]))?;
            Ok(Outcome::Handled)
        })
        .command("long", |cx: C| async move {
            let made = cx
                .send(Reply::text("x").inline_keyboard([[Button::callback("L", "y".repeat(57))]]));
            match made {
                Err(e) => cx.reply(e.to_string()),
                Ok(()) => cx.reply("sent"),
            }
            Ok(Outcome::Handled)
        })
        .callback("alert", |cx: C| async move {
            cx.send(Reply::answer_callback(Some("Careful!".into())).alert())?;
            Ok(Outcome::Handled)
        })
        .callback_pattern(Regex::new("^raw|^plain").unwrap(), |cx: C| async move {
            let data = cx.update().callback_data().unwrap_or_default().to_owned();
            cx.answer_callback(None);
            cx.reply(format!("data {data}"));
            Ok(Outcome::Handled)
        })
        .build()
}

fn lines(calls: &[Outgoing]) -> Vec<String> {
    calls.iter().map(Outgoing::to_json_line).collect()
}

/// The callback data of the button `label` of the newest message showing one.
fn data_of(bot: &TestBot<Quiz>, label: &str) -> String {
    bot.markup()
        .unwrap()
        .buttons()
        .into_iter()
        .find(|b| b.text == label)
        .and_then(|b| b.callback_data.clone())
        .unwrap()
}

#[tokio::test]
async fn keyboards_parse_modes_and_media_are_sent_as_bot_api_calls() {
    let bot = TestBot::<Quiz>::new(|b| quiz(b, Some(DEFAULT_STALE_BUTTON_NOTICE)));
    let calls = bot.calls_of(bot.message("/media")).await.unwrap();
    assert_eq!(
        lines(&calls),
        [
            r#"{"method":"sendPhoto","chat_id":1,"photo":"AgACAgIAAx0","caption":"*bold*","parse_mode":"MarkdownV2"}"#,
            r#"{"method":"sendDocument","chat_id":1,"document":"https://example.org/a.pdf","caption":"the file"}"#,
            r#"{"method":"sendMessage","chat_id":1,"text":"Pick one","reply_markup":{"keyboard":[[{"text":"red"},{"text":"green"}],[{"text":"blue"}]],"resize_keyboard":true}}"#,
        ]
    );
    assert_eq!(
        calls[0].remember(),
        Some("pic"),
        "the name rides with the call"
    );
    assert!(matches!(bot.markup(), Some(ReplyMarkup::Keyboard(_))));

    let calls = bot.calls_of(bot.message("/nokb")).await.unwrap();
    assert_eq!(
        lines(&calls),
        [
            r#"{"method":"sendMessage","chat_id":1,"text":"Keyboard gone","reply_markup":{"remove_keyboard":true}}"#
        ]
    );

    // The photo's id was kept under its name; deleting it by name.
    let pic = bot.messages()[0].0;
    let calls = bot.calls_of(bot.message("/forget")).await.unwrap();
    assert_eq!(
        lines(&calls),
        [format!(
            r#"{{"method":"deleteMessage","chat_id":1,"message_id":{pic}}}"#
        )]
    );
    assert!(bot.messages().iter().all(|(id, _)| *id != pic), "gone");
    let info = bot.stored().await.unwrap();
    assert_eq!(info.sent, [("pic".to_owned(), pic)]);
}

#[tokio::test]
async fn a_press_reaches_its_step_edits_the_question_and_is_answered() {
    let bot = TestBot::<Quiz>::new(|b| quiz(b, Some(DEFAULT_STALE_BUTTON_NOTICE)));
    bot.send("/ask").await.unwrap();
    let (question, _) = bot.messages().last().cloned().unwrap();
    let markup = bot.markup().unwrap();
    let buttons = markup.buttons();
    assert_eq!(buttons.len(), 3);
    let (tag, payload) = split_callback_tag(buttons[0].callback_data.as_deref().unwrap()).unwrap();
    assert_eq!((tag.len(), payload), (6, "yes"));
    assert_eq!(buttons[1].payload(), Some("no"));
    assert_eq!(buttons[2].url.as_deref(), Some("https://example.org/docs"));
    assert_eq!(
        bot.stored().await.unwrap().sent,
        [("question".to_owned(), question)],
        "kept once delivered"
    );

    assert_eq!(bot.press("Yes").await.unwrap(), ["ok yes"]);
    let calls = bot.last_calls();
    assert_eq!(calls[0].method(), "answerCallbackQuery");
    assert_eq!(calls[0].text_of(), Some("You chose yes"));
    assert_eq!(
        lines(&calls)[1..],
        [
            format!(r#"{{"method":"editMessageReplyMarkup","chat_id":1,"message_id":{question}}}"#),
            format!(
                r#"{{"method":"editMessageText","chat_id":1,"message_id":{question},"text":"Sure? yes"}}"#
            ),
            r#"{"method":"sendMessage","chat_id":1,"text":"ok yes"}"#.to_owned(),
        ]
    );
    // The question as the edits left it: new text, no keyboard.
    let (_, edited) = bot
        .messages()
        .into_iter()
        .find(|(id, _)| *id == question)
        .unwrap();
    assert_eq!(edited.text_of(), Some("Sure? yes"));
    assert_eq!(edited.reply_markup(), None);
    assert!(bot.press("No").await.is_err(), "no button left to press");
    assert!(bot.scenes().await.is_empty());
}

#[tokio::test]
async fn a_press_of_a_step_that_is_over_changes_nothing_and_is_answered() {
    for notice in [Some(DEFAULT_STALE_BUTTON_NOTICE), Some("Too late."), None] {
        let bot = TestBot::<Quiz>::new(|b| quiz(b, notice));
        bot.send("/ask").await.unwrap();
        let (question, _) = bot.messages().last().cloned().unwrap();
        let no = data_of(&bot, "No");
        bot.send("typed").await.unwrap();
        assert_eq!(
            bot.stored().await.unwrap().data["answers"],
            serde_json::json!(["typed"])
        );
        let before = bot.stored_bytes().await.unwrap();

        // The wizard is over: the old No is answered, and nothing else happens.
        let calls = bot.calls_of(bot.callback_on(question, &no)).await.unwrap();
        assert_eq!(calls.len(), 1, "{notice:?}: {calls:?}");
        assert!(matches!(calls[0], Outgoing::AnswerCallback { .. }));
        assert_eq!(calls[0].text_of(), notice, "{notice:?}");
        assert_eq!(
            bot.stored_bytes().await.unwrap(),
            before,
            "{notice:?}: unchanged"
        );

        // Asked again (a second later: a frame is told apart by when it was entered),
        // the old button still does not count, the new one does.
        bot.advance(1);
        bot.send("/ask").await.unwrap();
        let calls = bot.calls_of(bot.callback_on(question, &no)).await.unwrap();
        assert_eq!(calls.len(), 1, "{notice:?}: {calls:?}");
        assert_eq!(bot.press("No").await.unwrap(), ["ok no"], "{notice:?}");
    }
}

#[tokio::test]
async fn unbound_and_hand_made_callback_data_reach_the_handlers_as_before() {
    let bot = TestBot::<Quiz>::new(|b| quiz(b, Some(DEFAULT_STALE_BUTTON_NOTICE)));
    bot.send("/menu").await.unwrap();
    let (menu, _) = bot.messages().last().cloned().unwrap();
    // A bound button sent outside any scene: the route matches its payload.
    assert!(bot.press("Alert").await.unwrap().is_empty());
    let answer = bot.last_call().unwrap();
    assert!(
        answer
            .to_json_line()
            .ends_with(r#""text":"Careful!","show_alert":true}"#),
        "{answer:?}"
    );
    // An unbound button keeps its data as given.
    assert_eq!(bot.press("Raw").await.unwrap(), ["data raw:1"]);
    // Data made by hand (no tag) reaches the handlers exactly as today.
    assert_eq!(
        bot.texts_of(bot.callback("plain")).await.unwrap(),
        ["data plain"]
    );
    // In a scene now: the menu's bound button belongs to no scene, so it is stale...
    bot.send("/ask").await.unwrap();
    assert!(bot.press_on(menu, "Alert").await.unwrap().is_empty());
    assert_eq!(
        bot.last_call().unwrap().text_of(),
        Some(DEFAULT_STALE_BUTTON_NOTICE)
    );
    // ...and its unbound one reaches the step that is active.
    assert_eq!(bot.press_on(menu, "Raw").await.unwrap(), ["ok raw:1"]);
    // Data that only looks like a tag is not one.
    bot.send("/ask").await.unwrap();
    assert_eq!(
        bot.texts_of(bot.callback("~ZZZZZZ:yes")).await.unwrap(),
        ["ok ~ZZZZZZ:yes"],
        "the wizard's step takes it as its payload"
    );
}

#[tokio::test]
async fn callback_data_that_does_not_fit_is_refused_clearly() {
    let bot = TestBot::<Quiz>::new(|b| quiz(b, None));
    let texts = bot.send("/long").await.unwrap();
    assert_eq!(
        texts,
        [
            "cannot make this reply: the callback data of button `L` is 57 bytes; 56 fit beside the step tag (Telegram takes 1 to 64)"
        ]
    );
    // An edit of a message no reply remembered, and an answer outside a callback.
    let refusals = TestBot::<Quiz>::new(|b| {
        b.on_text(|cx: C| async move {
            let a = cx.send(Reply::edit_text("nothing", "x")).unwrap_err();
            let b = cx.send(Reply::answer_callback(None)).unwrap_err();
            let c = cx
                .send(Reply::edit_markup(MessageRef::Callback))
                .unwrap_err();
            cx.reply(format!("{a} | {b} | {c}"));
            Ok(Outcome::Handled)
        })
        .build()
    });
    assert_eq!(
        refusals.send("hi").await.unwrap(),
        [
            "cannot make this reply: no message is known as `nothing` (not sent with remember, or its delivery is not confirmed yet) | cannot make this reply: the update is not a callback query | cannot make this reply: the update is not a press of a button on a message"
        ]
    );
}

#[tokio::test]
async fn a_message_id_is_known_from_the_update_after_its_delivery() {
    let bot = TestBot::<Quiz>::new(|b| {
        b.command("ask", |cx: C| async move {
            let before = cx.sent_message("q");
            cx.send(Reply::text("Question?").remember("q"))?;
            let still = cx.sent_message("q");
            cx.reply(format!("before {before:?} still {still:?}"));
            Ok(Outcome::Handled)
        })
        .on_text(|cx: C| async move {
            cx.reply(format!("it was {:?}", cx.sent_message("q")));
            Ok(Outcome::Handled)
        })
        .build()
    });
    assert_eq!(
        bot.send("/ask").await.unwrap(),
        ["Question?", "before None still None"]
    );
    let id = bot.messages()[0].0;
    assert_eq!(
        bot.send("and?").await.unwrap(),
        [format!("it was Some({id})")]
    );
    // Asked again: the name takes the new message's id.
    bot.send("/ask").await.unwrap();
    let newer = bot.messages()[3].0;
    assert_ne!(id, newer);
    assert_eq!(
        bot.send("and?").await.unwrap(),
        [format!("it was Some({newer})")]
    );
}

/// A transport that sends through `inner` and can be down; it forwards the message ids
/// `inner` reports only when `ids` is set (otherwise it is a transport that knows none).
#[derive(Debug, Clone)]
struct Flaky {
    up: Arc<AtomicBool>,
    ids: bool,
    inner: RecordingTransport,
}

impl Flaky {
    fn new(up: bool, ids: bool) -> Self {
        Self {
            up: Arc::new(AtomicBool::new(up)),
            ids,
            inner: RecordingTransport::new(),
        }
    }
}

#[async_trait]
impl Transport for Flaky {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        self.deliver(msg).await.map(drop)
    }

    async fn deliver(&self, msg: &Outgoing) -> Result<Delivered, BoxError> {
        if !self.up.load(Ordering::SeqCst) {
            return Err("transport down".into());
        }
        let delivered = self.inner.deliver(msg).await?;
        Ok(if self.ids {
            delivered
        } else {
            Delivered::done()
        })
    }
}

fn msg(id: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_value(serde_json::json!({"update_id": id, "message": {
        "message_id": id, "date": 0, "chat": {"id": 1, "type": "private"},
        "from": {"id": 1, "is_bot": false}, "text": text}}))
    .unwrap()
}

fn press(id: i64, message_id: i64, data: &str) -> TelegramUpdate {
    TelegramUpdate::from_value(serde_json::json!({"update_id": id, "callback_query": {
        "id": format!("cb{id}"), "from": {"id": 1}, "data": data,
        "message": {"message_id": message_id, "date": 0, "chat": {"id": 1}}}}))
    .unwrap()
}

#[tokio::test]
async fn without_reported_ids_nothing_is_kept_and_an_edit_by_name_is_refused() {
    let transport = Flaky::new(true, false);
    let bot = quiz(
        Pipeline::<Quiz>::builder().transport(transport.clone()),
        None,
    );
    bot.handle(msg(1, "/ask")).await.unwrap();
    let question = transport.inner.sent();
    let data = question[0].reply_markup().unwrap().buttons()[0]
        .callback_data
        .clone()
        .unwrap();
    let err = bot.handle(press(2, 1, &data)).await.unwrap_err();
    let chain = stagecraft::error::error_chain(&err);
    assert!(
        chain.contains("no message is known as `question`"),
        "{chain}"
    );
}

async fn stores(test: &str) -> Vec<(String, Arc<dyn SessionStore>)> {
    let mut out: Vec<(String, Arc<dyn SessionStore>)> = vec![(
        "memory".into(),
        Arc::new(stagecraft::store::MemoryStore::new()),
    )];
    let path = std::env::temp_dir().join(format!("{}.db", common::unique_name(test)));
    out.push((
        format!("sqlite {}", path.display()),
        Arc::new(SqliteStore::open(&path).await.unwrap()),
    ));
    #[cfg(feature = "redis")]
    if let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") {
        let prefix = format!("{}:", common::unique_name(test));
        out.push((
            "redis".into(),
            Arc::new(
                stagecraft::store::RedisStore::connect(&url)
                    .await
                    .unwrap()
                    .with_prefix(&prefix)
                    .unwrap(),
            ),
        ));
    }
    out
}

/// On every store, with and without the outbox: the question's id is read back from the
/// store by another process (a second pipeline on the same store), a press edits it,
/// and a stale press leaves the stored record byte for byte as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_and_bound_buttons_hold_on_every_store() {
    for outbox in [false, true] {
        for (name, store) in stores(&format!("ids{outbox}")).await {
            let what = format!("{name}, outbox {outbox}");
            let first = Flaky::new(true, true);
            let bot = quiz(
                Pipeline::<Quiz>::builder()
                    .store_arc(Arc::clone(&store))
                    .outbox(outbox)
                    .transport(first.clone()),
                Some(DEFAULT_STALE_BUTTON_NOTICE),
            );
            bot.handle(msg(1, "/ask")).await.unwrap();
            let asked = first.inner.sent();
            let buttons = asked[0].reply_markup().unwrap().buttons();
            let (yes, no) = (
                buttons[0].callback_data.clone().unwrap(),
                buttons[1].callback_data.clone().unwrap(),
            );
            let stored = store.load("1:1").await.unwrap().unwrap();
            let info = inspect(&stored.bytes).unwrap();
            assert_eq!(info.sent, [("question".to_owned(), 1)], "{what}");
            assert!(info.outbox.is_empty(), "{what}: delivered");

            // Another process takes the press: the id comes from the store.
            let second = Flaky::new(true, true);
            let other = quiz(
                Pipeline::<Quiz>::builder()
                    .store_arc(Arc::clone(&store))
                    .outbox(outbox)
                    .transport(second.clone()),
                Some(DEFAULT_STALE_BUTTON_NOTICE),
            );
            other.handle(press(2, 1, &yes)).await.unwrap();
            let got = lines(&second.inner.sent());
            assert_eq!(
                got[1..3],
                [
                    r#"{"method":"editMessageReplyMarkup","chat_id":1,"message_id":1}"#,
                    r#"{"method":"editMessageText","chat_id":1,"message_id":1,"text":"Sure? yes"}"#,
                ],
                "{what}"
            );
            let before = store.load("1:1").await.unwrap().unwrap();
            other.handle(press(3, 1, &no)).await.unwrap();
            assert_eq!(
                second.inner.sent().last().unwrap().text_of(),
                Some(DEFAULT_STALE_BUTTON_NOTICE),
                "{what}"
            );
            let after = store.load("1:1").await.unwrap().unwrap();
            assert_eq!(
                after.bytes, before.bytes,
                "{what}: the stale press wrote nothing"
            );
            assert_eq!(
                inspect(&after.bytes).unwrap().data["answers"],
                serde_json::json!(["yes"]),
                "{what}"
            );
        }
    }
}

/// With the outbox, a keyboard that could not be delivered waits in the record (tagged,
/// with the name to keep its id under), goes out before the key's next update, and its
/// id is known to that update.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboards_wait_in_the_outbox_and_keep_their_ids() {
    for (name, store) in stores("kbd_outbox").await {
        let transport = Flaky::new(false, true);
        let bot = quiz(
            Pipeline::<Quiz>::builder()
                .store_arc(Arc::clone(&store))
                .outbox(true)
                .transport(transport.clone()),
            None,
        );
        let err = bot.handle(msg(1, "/ask")).await.unwrap_err();
        assert!(
            matches!(err, stagecraft::Error::Transport(_)),
            "{name}: {err:?}"
        );
        let stored = store.load("1:1").await.unwrap().unwrap();
        let info = inspect(&stored.bytes).unwrap();
        assert_eq!(info.outbox.len(), 1, "{name}");
        let waiting = &info.outbox[0];
        assert_eq!(waiting.remember(), Some("question"), "{name}");
        let data = waiting.reply_markup().unwrap().buttons()[0]
            .callback_data
            .clone()
            .unwrap();
        assert_eq!(
            split_callback_tag(&data).map(|(_, p)| p),
            Some("yes"),
            "{name}"
        );
        assert!(info.sent.is_empty(), "{name}: not delivered, no id");

        transport.up.store(true, Ordering::SeqCst);
        bot.handle(msg(2, "maybe")).await.unwrap();
        let got = lines(&transport.inner.sent());
        assert!(
            got[0].contains(r#""text":"<b>Sure?</b>","parse_mode":"HTML""#),
            "{name}: {got:?}"
        );
        assert_eq!(
            got[1..],
            [
                r#"{"method":"editMessageText","chat_id":1,"message_id":1,"text":"Sure? maybe"}"#,
                r#"{"method":"sendMessage","chat_id":1,"text":"ok maybe"}"#,
            ],
            "{name}"
        );
        let info = inspect(&store.load("1:1").await.unwrap().unwrap().bytes).unwrap();
        assert_eq!(info.sent, [("question".to_owned(), 1)], "{name}");
        assert!(info.outbox.is_empty(), "{name}");
    }
}

/// A record whose outbox was written before replies had keyboards (plain transcript
/// lines) is still read and delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_written_before_rich_replies_is_still_delivered() {
    for (name, store) in stores("old_outbox").await {
        let old = br#"{"v":1,"data":{"answers":[]},"seen":[7],"outbox":[{"method":"sendMessage","chat_id":1,"text":"old reply"},{"method":"answerCallbackQuery","callback_query_id":"q1","text":"old answer"}]}"#;
        store.save("1:1", old, None).await.unwrap();
        let transport = Flaky::new(true, true);
        let bot = quiz(
            Pipeline::<Quiz>::builder()
                .store_arc(Arc::clone(&store))
                .outbox(true)
                .transport(transport.clone()),
            None,
        );
        bot.handle(msg(8, "/media")).await.unwrap();
        let got = lines(&transport.inner.sent());
        assert_eq!(
            got[..2],
            [
                r#"{"method":"sendMessage","chat_id":1,"text":"old reply"}"#,
                r#"{"method":"answerCallbackQuery","callback_query_id":"q1","text":"old answer"}"#,
            ],
            "{name}"
        );
        assert_eq!(got.len(), 5, "{name}: {got:?}");
        let info = inspect(&store.load("1:1").await.unwrap().unwrap().bytes).unwrap();
        assert!(info.outbox.is_empty(), "{name}");
        // The old reply took id 1 (its name, had it one, was not kept then), the photo 2.
        assert_eq!(info.sent, [("pic".to_owned(), 2)], "{name}");
    }
}

/// The demo's recorded presses give their transcript on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_buttons_replay_on_every_store() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios/buttons");
    let input = std::fs::read_to_string(dir.join("presses.jsonl")).unwrap();
    let expected: Vec<String> = std::fs::read_to_string(dir.join("presses.transcript.jsonl"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    for outbox in [false, true] {
        for (name, store) in stores(&format!("demo_buttons{outbox}")).await {
            let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
            let replies = RecordingTransport::new();
            let bot = demo_bot::build(
                Pipeline::<demo_bot::Demo>::builder()
                    .store_arc(store)
                    .outbox(outbox)
                    .clock(clock.clone())
                    .transport(replies.clone()),
            )
            .unwrap();
            let summary = replay(&bot, &clock, input.as_bytes()).await.unwrap();
            assert!(summary.is_clean(), "{name}: {summary:?}");
            assert_eq!(replies.lines(), expected, "{name}, outbox {outbox}");
        }
    }
}

/// The `stagecraft::reply` warnings emitted while a test runs, as field maps.
#[derive(Clone, Default)]
struct Warnings(Arc<std::sync::Mutex<Vec<std::collections::BTreeMap<String, String>>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Fields<'a>(&'a mut std::collections::BTreeMap<String, String>);
        impl tracing::field::Visit for Fields<'_> {
            fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                self.0.insert(f.name().to_owned(), format!("{v:?}"));
            }
        }
        let meta = event.metadata();
        if meta.target() == "stagecraft::reply" && *meta.level() == tracing::Level::WARN {
            let mut fields = std::collections::BTreeMap::new();
            event.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().push(fields);
        }
    }
}

/// A reply that fails takes the ones after it along (their order holds), and says so:
/// how many were not sent, and whether the outbox keeps them.
#[tokio::test]
async fn a_failed_reply_says_how_many_were_not_sent() {
    use tracing_subscriber::layer::SubscriberExt;
    let warnings = Warnings::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(warnings.clone()));
    for outbox in [false, true] {
        let transport = Flaky::new(false, true);
        let bot = Pipeline::<Quiz>::builder()
            .outbox(outbox)
            .transport(transport.clone())
            .on_text(|cx: C| async move {
                cx.session_mut(|q| q.answers.push("x".into()))?;
                cx.send(Reply::text("one").remember("one"))?;
                cx.reply("two");
                cx.reply("three");
                Ok(Outcome::Handled)
            })
            .build();
        let err = bot.handle(msg(1, "hi")).await.unwrap_err();
        assert!(matches!(err, stagecraft::Error::Transport(_)), "{err:?}");
        let seen = warnings.0.lock().unwrap().drain(..).collect::<Vec<_>>();
        let failed = seen
            .iter()
            .find(|w| w.get("not_sent").is_some())
            .unwrap_or_else(|| panic!("no warning: {seen:?}"));
        assert_eq!(failed["not_sent"], "3", "{failed:?}");
        assert_eq!(failed["kept"], outbox.to_string(), "{failed:?}");
        assert!(
            failed["message"].contains("the 2 after it were not sent"),
            "{failed:?}"
        );
        assert_eq!(failed["method"], "\"sendMessage\"", "{failed:?}");
        assert!(transport.inner.sent().is_empty());
    }
}

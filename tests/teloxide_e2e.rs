//! The reference bot inside a real teloxide `Dispatcher` with long polling, against a
//! tiny local Bot API server (`teloxide_e2e/fake_bot_api.rs`): the replies the server
//! records must be the recorded transcripts, chat by chat.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;
#[path = "teloxide_e2e/fake_bot_api.rs"]
mod fake_bot_api;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use stagecraft::adapters::teloxide::{StageHandlerExt, TeloxideBuilderExt, enter_stage};
use stagecraft::prelude::*;
use teloxide::dispatching::{Dispatcher, UpdateFilterExt, UpdateHandler};
use teloxide::prelude::*;
use teloxide::types::Update as TgUpdate;

use fake_bot_api::{Call, FakeBotApi};

/// How long the bot may take to send every expected reply.
const DEADLINE: Duration = Duration::from_secs(30);
/// A whole test, as a last resort against hangs.
const TEST_DEADLINE: Duration = Duration::from_secs(60);

type Texts = BTreeMap<i64, Vec<String>>;

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scenarios")
}

/// A recorded conversation: its updates and the expected texts per chat.
struct Scenario {
    name: String,
    updates: Vec<Value>,
    expected: Texts,
}

/// Makes a scenario update acceptable to teloxide's strict types: every message has a
/// `date`, every chat a `type` (and a title or first name).
fn patch(mut update: Value) -> Value {
    for kind in [
        "message",
        "edited_message",
        "channel_post",
        "edited_channel_post",
    ] {
        let Some(msg) = update.get_mut(kind) else {
            continue;
        };
        if msg.get("date").is_none() {
            msg["date"] = json!(1_700_000_000);
        }
        let chat = &mut msg["chat"];
        let id = chat["id"].as_i64().unwrap_or_default();
        if chat.get("type").is_none() {
            if id > 0 {
                chat["type"] = json!("private");
                chat["first_name"] = json!(format!("U{id}"));
            } else {
                chat["type"] = json!("group");
                chat["title"] = json!(format!("G{id}"));
            }
        }
    }
    update
}

fn scenarios() -> Vec<Scenario> {
    let mut files: Vec<_> = std::fs::read_dir(scenarios_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.ends_with(".jsonl") && !name.ends_with(".transcript.jsonl")
        })
        .collect();
    files.sort();
    assert!(files.len() >= 4, "scenario files are missing: {files:?}");
    files
        .into_iter()
        .map(|file| {
            let updates = std::fs::read_to_string(&file)
                .unwrap()
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .filter(|v| v.get("update_id").is_some())
                .map(patch)
                .collect();
            let mut expected = Texts::new();
            let transcript =
                std::fs::read_to_string(file.with_extension("transcript.jsonl")).unwrap();
            for line in transcript.lines().filter(|l| !l.trim().is_empty()) {
                let v: Value = serde_json::from_str(line).unwrap();
                assert_eq!(v["method"], "sendMessage", "{line}");
                expected
                    .entry(v["chat_id"].as_i64().unwrap())
                    .or_default()
                    .push(v["text"].as_str().unwrap().to_owned());
            }
            Scenario {
                name: file.file_name().unwrap().to_string_lossy().into_owned(),
                updates,
                expected,
            }
        })
        .collect()
}

/// Gives the updates of all batches increasing ids from 1, in order (the scenario files
/// each start at 1; a real update stream never repeats an id).
fn renumber(batches: Vec<Vec<Value>>) -> Vec<Vec<Value>> {
    let mut id = 0;
    batches
        .into_iter()
        .map(|batch| {
            batch
                .into_iter()
                .map(|mut u| {
                    id += 1;
                    u["update_id"] = json!(id);
                    u
                })
                .collect()
        })
        .collect()
}

fn count(texts: &Texts) -> usize {
    texts.values().map(Vec::len).sum()
}

fn bot_for(server: &FakeBotApi) -> Bot {
    Bot::new("123456:TEST-TOKEN").set_api_url(server.url().parse().unwrap())
}

/// The reference bot as a teloxide handler, replying through `bot`.
fn demo_handler(bot: &Bot) -> (Pipeline<demo_bot::Demo, TgUpdate>, UpdateHandler<BoxError>) {
    let pipeline = demo_bot::build(
        Pipeline::<demo_bot::Demo, TgUpdate>::builder()
            .teloxide_bot(bot.clone())
            .bot_username(fake_bot_api::BOT_USERNAME),
    )
    .unwrap();
    let handler = dptree::entry().branch(enter_stage(pipeline.clone()));
    (pipeline, handler)
}

/// Runs `dispatcher` with long polling until `server` recorded `calls` calls (or the
/// deadline passed), then stops it with its shutdown token. Returns whether the calls
/// arrived in time.
async fn drive<K>(
    mut dispatcher: Dispatcher<Bot, BoxError, K>,
    server: &FakeBotApi,
    calls: usize,
) -> bool
where
    K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
{
    let token = dispatcher.shutdown_token();
    let mut task = tokio::spawn(async move { dispatcher.dispatch().await });
    let arrived = tokio::select! {
        arrived = server.wait_for_calls(calls, DEADLINE) => arrived,
        res = &mut task => panic!("the dispatcher stopped by itself: {res:?}"),
    };
    // Let any extra (wrong) reply arrive before stopping, so the comparison sees it.
    tokio::time::sleep(Duration::from_millis(150)).await;
    if let Ok(stopped) = token.shutdown() {
        let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
    }
    if tokio::time::timeout(Duration::from_secs(10), &mut task)
        .await
        .is_err()
    {
        task.abort();
        panic!("the dispatcher did not stop within 10 s of its shutdown");
    }
    arrived
}

/// Runs the test body with a hard deadline, so a bug fails the test instead of hanging it.
async fn bounded(body: impl Future<Output = ()>) {
    tokio::time::timeout(TEST_DEADLINE, body)
        .await
        .expect("the test did not finish in time");
}

/// Runs the reference bot on `batches` and compares the replies with `expected`.
async fn run_demo(batches: Vec<Vec<Value>>, expected: &Texts, what: &str) {
    let server = FakeBotApi::start(renumber(batches)).await;
    let bot = bot_for(&server);
    let (pipeline, handler) = demo_handler(&bot);
    let dispatcher = Dispatcher::builder(bot, handler).build();
    let arrived = drive(dispatcher, &server, count(expected)).await;
    let got = server.texts_by_chat();
    assert!(
        arrived,
        "{what}: timed out after {DEADLINE:?} with {} of {} replies: {got:#?}",
        count(&got),
        count(expected)
    );
    assert_eq!(&got, expected, "{what}");
    assert!(
        server.calls().iter().all(|c| matches!(
            c,
            Call::SendMessage {
                thread_id: None,
                ..
            }
        )),
        "{what}: unexpected calls {:?}",
        server.calls()
    );
    assert_eq!(pipeline.keys_in_flight(), 0, "{what}: keys left in flight");
    let methods = server.methods();
    for m in ["getme", "getupdates", "sendmessage"] {
        assert!(methods.iter().any(|x| x == m), "{what}: never called {m}");
    }
}

/// Each recorded conversation alone, one update per `getUpdates` answer, as a person
/// types: the replies are the transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_through_the_dispatcher_gives_its_transcript() {
    bounded(async {
        for s in scenarios() {
            let batches = s.updates.iter().map(|u| vec![u.clone()]).collect();
            run_demo(batches, &s.expected, &s.name).await;
        }
    })
    .await;
}

/// All conversations at once, interleaved round-robin into one update stream served
/// in batches of five: each chat's replies are its own transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_scenarios_interleaved_keep_each_chat_in_order() {
    bounded(async {
        let all = scenarios();
        let mut expected = Texts::new();
        for s in &all {
            expected.extend(s.expected.clone());
        }
        let longest = all.iter().map(|s| s.updates.len()).max().unwrap_or(0);
        let mut stream = Vec::new();
        for i in 0..longest {
            for s in &all {
                if let Some(u) = s.updates.get(i) {
                    stream.push(u.clone());
                }
            }
        }
        let batches = stream.chunks(5).map(<[Value]>::to_vec).collect();
        run_demo(batches, &expected, "interleaved").await;
    })
    .await;
}

/// Quick bursts: every conversation arrives whole in a single `getUpdates` answer, the
/// updates of one chat back to back, and all chats in the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_chat_bursts_in_one_batch_keep_the_transcript() {
    bounded(async {
        let all = scenarios();
        let mut expected = Texts::new();
        let mut batch = Vec::new();
        for s in &all {
            expected.extend(s.expected.clone());
            batch.extend(s.updates.iter().cloned());
        }
        run_demo(vec![batch.clone()], &expected, "one batch").await;
        // And each conversation as its own burst.
        for s in &all {
            run_demo(vec![s.updates.clone()], &s.expected, &s.name).await;
        }
    })
    .await;
}

fn group_message(chat: i64, user: i64, text: &str) -> Value {
    let mut msg = json!({
        "update_id": 0,
        "message": {
            "message_id": 1,
            "date": 1_700_000_000,
            "chat": {"id": chat, "type": "group", "title": "Group"},
            "from": {"id": user, "is_bot": false, "first_name": format!("U{user}")},
            "text": text,
        }
    });
    if text.starts_with('/') {
        let len = text.split_whitespace().next().unwrap_or_default().len();
        msg["message"]["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
    }
    msg
}

async fn stored(pipeline: &Pipeline<demo_bot::Demo, TgUpdate>, key: &str) -> Value {
    let loaded = pipeline
        .store()
        .load(key)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no session stored under {key}"));
    serde_json::from_slice(&loaded.bytes).unwrap()
}

/// Two members of one group run the signup wizard at the same time, their updates
/// interleaved in the same `getUpdates` answers. teloxide distributes by chat (both
/// users share one worker) or, here also, by user (two workers, running concurrently);
/// either way stagecraft's user-in-chat key gives each member their own session, and
/// each member's updates are handled in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_users_in_one_group_each_get_their_own_session() {
    const GROUP: i64 = -500;
    let (ann, ben) = (11, 12);
    let script = [
        (ann, "/start"),
        (ben, "/start"),
        (ann, "Ann"),
        (ben, "Ben"),
        (ann, "30"),
        (ben, "40"),
        (ann, "yes"),
        (ben, "no"),
        (ann, "hi"),
        (ben, "hi"),
    ];
    let updates: Vec<Value> = script
        .iter()
        .map(|(user, text)| group_message(GROUP, *user, text))
        .collect();
    // The replies to each member's five updates.
    let replies_ann: [&[&str]; 5] = [
        &["What is your name?"],
        &["How old are you, Ann?"],
        &["Confirm: Ann, 30. Reply yes or no."],
        &["Saved Ann, 30.", "Left signup."],
        &["Outside scenes (5 updates). Send /start or /profile."],
    ];
    let replies_ben: [&[&str]; 5] = [
        &["What is your name?"],
        &["How old are you, Ben?"],
        &["Confirm: Ben, 40. Reply yes or no."],
        &["Discarded.", "Left signup."],
        &["Outside scenes (5 updates). Send /start or /profile."],
    ];
    let expected_ann: Vec<&str> = replies_ann.concat();
    let expected_ben: Vec<&str> = replies_ben.concat();
    bounded(async {
        for per_user in [false, true] {
            let what = if per_user {
                "per-user distribution"
            } else {
                "per-chat distribution"
            };
            let server =
                FakeBotApi::start(renumber(vec![updates[..6].to_vec(), updates[6..].to_vec()]))
                    .await;
            let bot = bot_for(&server);
            let (pipeline, handler) = demo_handler(&bot);
            let builder = Dispatcher::builder(bot, handler);
            let arrived = if per_user {
                let dispatcher = builder
                    .distribution_function(|u: &TgUpdate| u.from().map(|u| u.id))
                    .build();
                drive(dispatcher, &server, 12).await
            } else {
                drive(builder.build(), &server, 12).await
            };
            let got = server.texts_by_chat();
            assert!(arrived, "{what}: timed out: {got:#?}");
            let texts = &got[&GROUP];
            if per_user {
                // Concurrent: only each member's own replies have an order. The names
                // tell them apart; the shared prompts are counted.
                let own = |name: &str| -> Vec<&String> {
                    texts.iter().filter(|t| t.contains(name)).collect()
                };
                assert_eq!(
                    own("Ann"),
                    expected_ann
                        .iter()
                        .filter(|t| t.contains("Ann"))
                        .collect::<Vec<_>>(),
                    "{what}"
                );
                assert_eq!(
                    own("Ben"),
                    expected_ben
                        .iter()
                        .filter(|t| t.contains("Ben"))
                        .collect::<Vec<_>>(),
                    "{what}"
                );
                let mut all: Vec<&str> = texts.iter().map(String::as_str).collect();
                let mut want: Vec<&str> =
                    expected_ann.iter().chain(&expected_ben).copied().collect();
                all.sort_unstable();
                want.sort_unstable();
                assert_eq!(all, want, "{what}");
            } else {
                // One worker for the chat: the replies follow the update order exactly.
                let want: Vec<&str> = replies_ann
                    .iter()
                    .zip(&replies_ben)
                    .flat_map(|(a, b)| a.iter().chain(b.iter()).copied())
                    .collect();
                assert_eq!(texts, &want, "{what}");
            }
            let ann_session = stored(&pipeline, &format!("{ann}:{GROUP}")).await;
            let ben_session = stored(&pipeline, &format!("{ben}:{GROUP}")).await;
            assert_eq!(
                ann_session["data"]["profile"],
                json!({"name": "Ann", "age": 30}),
                "{what}"
            );
            assert_eq!(ann_session["data"]["updates"], 5, "{what}");
            assert!(
                ben_session["data"].get("profile").is_none(),
                "{what}: {ben_session}"
            );
            assert_eq!(ben_session["data"]["updates"], 5, "{what}");
        }
    })
    .await;
}

/// A private-chat message from user 7.
fn private_message(text: &str) -> Value {
    let mut msg = group_message(7, 7, text);
    msg["message"]["chat"] = json!({"id": 7, "type": "private", "first_name": "A"});
    msg
}

/// What the pipeline leaves unhandled continues down the dptree chain to ordinary
/// teloxide handlers; a pipeline error reaches the dispatcher's error handler; callback
/// answers, forum-topic replies and the `Bot` extension go through to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhandled_updates_continue_and_errors_reach_the_error_handler() {
    type C = Cx<(), TgUpdate>;
    bounded(async {
        let callback = json!({
            "update_id": 0,
            "callback_query": {
                "id": "cb-1",
                "from": {"id": 7, "is_bot": false, "first_name": "A"},
                "chat_instance": "ci",
                "data": "vote:a",
                "message": {
                    "message_id": 3, "date": 1_700_000_000,
                    "chat": {"id": 7, "type": "private", "first_name": "A"},
                    "from": {"id": fake_bot_api::BOT_ID, "is_bot": true, "first_name": "Bot"},
                    "text": "Vote?"
                }
            }
        });
        let mut topic = group_message(-1001, 7, "/ping");
        topic["message"]["chat"] =
            json!({"id": -1001, "type": "supergroup", "title": "F", "is_forum": true});
        topic["message"]["message_thread_id"] = json!(42);
        topic["message"]["is_topic_message"] = json!(true);
        let batches = renumber(vec![
            vec![private_message("/ping")],
            vec![private_message("hello")],
            vec![private_message("/fail")],
            vec![callback],
            vec![topic],
        ]);
        let server = FakeBotApi::start(batches).await;
        let bot = bot_for(&server);
        let pipeline = Pipeline::<(), TgUpdate>::builder()
            .teloxide_bot(bot.clone())
            .command("ping", |cx: C| async move {
                cx.reply("pong");
                Ok(Outcome::Handled)
            })
            .command("fail", |_cx: C| async move { Err("boom".into()) })
            .callback("vote:a", |cx: C| async move {
                cx.answer_callback(Some("counted".to_owned()));
                let bot = cx.extension::<Bot>().expect("the bot is an extension");
                let chat = ChatId(cx.update().chat_id().unwrap_or_default());
                bot.send_message(chat, "sent with the Bot extension")
                    .await?;
                Ok(Outcome::Handled)
            })
            .build();
        let handler: UpdateHandler<BoxError> = dptree::entry()
            .branch(
                Update::filter_message()
                    .enter_stage(pipeline.clone())
                    .endpoint(|bot: Bot, msg: Message| async move {
                        let text = format!("fallback: {}", msg.text().unwrap_or_default());
                        bot.send_message(msg.chat.id, text).await?;
                        Ok(())
                    }),
            )
            .branch(Update::filter_callback_query().chain(enter_stage(pipeline)));
        let errors = Arc::new(Mutex::new(Vec::<String>::new()));
        let recorded = Arc::clone(&errors);
        let dispatcher = Dispatcher::builder(bot, handler)
            .error_handler(Arc::new(move |e: BoxError| {
                recorded
                    .lock()
                    .unwrap()
                    .push(stagecraft::replay::error_chain(e.as_ref()));
                async {}
            }))
            .build();
        let arrived = drive(dispatcher, &server, 5).await;
        let calls = server.calls();
        assert!(arrived, "timed out: {calls:#?}");
        let text = |chat_id: i64, thread_id: Option<i64>, text: &str| Call::SendMessage {
            chat_id,
            thread_id,
            text: text.to_owned(),
        };
        let private: Vec<_> = calls
            .iter()
            .filter(|c| !matches!(c, Call::SendMessage { chat_id: -1001, .. }))
            .cloned()
            .collect();
        assert_eq!(
            private,
            [
                text(7, None, "pong"),
                text(7, None, "fallback: hello"),
                text(7, None, "sent with the Bot extension"),
                Call::AnswerCallback {
                    id: "cb-1".to_owned(),
                    text: Some("counted".to_owned())
                },
            ]
        );
        assert!(calls.contains(&text(-1001, Some(42), "pong")), "{calls:#?}");
        let errors = errors.lock().unwrap().clone();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("boom"), "{errors:?}");
    })
    .await;
}

/// Each reply goes to Telegram as its Bot API call, with its parse mode and keyboard; the
/// id Telegram gives a message is kept under its name, and a later update edits and
/// deletes it by that name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transport_sends_every_reply_as_its_bot_api_call() {
    use stagecraft::transport::{Button, MessageRef, ParseMode, Reply};
    type C = Cx<(), TgUpdate>;
    bounded(async {
        let server = FakeBotApi::start(Vec::new()).await;
        let pipeline = Pipeline::<(), TgUpdate>::builder()
            .teloxide_bot(bot_for(&server))
            .command("send", |cx: C| async move {
                cx.send(
                    Reply::text("<b>Sure?</b>")
                        .parse_mode(ParseMode::Html)
                        .inline_keyboard([[Button::callback("Yes", "yes"), Button::url("Docs", "https://example.org/")]])
                        .remember("question"),
                )?;
                cx.send(Reply::photo("AgACAgIAAxkBAAIC").caption("a photo").remember("pic"))?;
                cx.send(Reply::document("https://example.org/a.pdf").caption("a file"))?;
                cx.send(Reply::text("Pick").reply_keyboard([["red", "blue"]]))?;
                Ok(Outcome::Handled)
            })
            .command("change", |cx: C| async move {
                cx.send(
                    Reply::edit_text("question", "<i>Sure.</i>")
                        .parse_mode(ParseMode::Html)
                        .inline_keyboard([[Button::callback("Undo", "undo").unbound()]]),
                )?;
                cx.send(Reply::edit_markup("question"))?;
                cx.send(Reply::delete(MessageRef::Sent("pic".into())))?;
                cx.send(Reply::text("Done").remove_keyboard())?;
                Ok(Outcome::Handled)
            })
            .callback("undo", |cx: C| async move {
                cx.send(Reply::answer_callback(Some("Undone".into())).alert())?;
                cx.send(Reply::edit_text(MessageRef::Callback, "undone"))?;
                Ok(Outcome::Handled)
            })
            .build();
        // (teloxide reads an update from text: from a `Value`, its kind is an error.)
        let update = |v: Value| serde_json::from_str::<TgUpdate>(&patch(v).to_string()).unwrap();
        pipeline.handle(update(private_message("/send"))).await.unwrap();
        let mut change = private_message("/change");
        change["update_id"] = json!(2);
        pipeline.handle(update(change)).await.unwrap();
        let press = json!({"update_id": 3, "callback_query": {"id": "cb-9",
            "from": {"id": 7, "is_bot": false, "first_name": "A"}, "chat_instance": "ci",
            "data": "undo", "message": {"message_id": 1, "date": 1_700_000_000,
            "chat": {"id": 7, "type": "private", "first_name": "A"},
            "from": {"id": fake_bot_api::BOT_ID, "is_bot": true, "first_name": "Bot"}, "text": "x"}}});
        pipeline.handle(update(press)).await.unwrap();

        let requests = server.requests();
        let methods: Vec<&str> = requests.iter().map(|(m, _)| m.as_str()).collect();
        assert_eq!(
            methods,
            [
                "sendmessage", "sendphoto", "senddocument", "sendmessage",
                "editmessagetext", "editmessagereplymarkup", "deletemessage", "sendmessage",
                "answercallbackquery", "editmessagetext",
            ],
            "{requests:#?}"
        );
        let json = |i: usize| serde_json::from_str::<Value>(&requests[i].1).unwrap();
        let asked = json(0);
        assert_eq!(asked["parse_mode"], "HTML");
        let yes = asked["reply_markup"]["inline_keyboard"][0][0]["callback_data"]
            .as_str()
            .unwrap();
        assert!(yes.starts_with('~') && yes.ends_with(":yes"), "{asked}");
        assert_eq!(asked["reply_markup"]["inline_keyboard"][0][1]["url"], "https://example.org/");
        // Media go as multipart forms: a file id, a URL.
        assert!(requests[1].1.contains("AgACAgIAAxkBAAIC") && requests[1].1.contains("a photo"));
        assert!(requests[2].1.contains("https://example.org/a.pdf"));
        assert_eq!(json(3)["reply_markup"]["keyboard"][0][1]["text"], "blue");
        // The question was message 2, the photo 3 (the server numbers from 2).
        let edit = json(4);
        assert_eq!((edit["message_id"].as_i64(), edit["text"].as_str()), (Some(2), Some("<i>Sure.</i>")));
        assert_eq!(edit["reply_markup"]["inline_keyboard"][0][0]["callback_data"], "undo");
        assert_eq!(json(5)["message_id"], 2);
        assert!(json(5).get("reply_markup").is_none(), "the keyboard is removed");
        assert_eq!(json(6)["message_id"], 3);
        assert_eq!(json(7)["reply_markup"]["remove_keyboard"], true);
        let answer = json(8);
        assert_eq!((answer["text"].as_str(), answer["show_alert"].as_bool()), (Some("Undone"), Some(true)));
        assert_eq!((json(9)["message_id"].as_i64(), json(9)["text"].as_str()), (Some(1), Some("undone")));
    })
    .await;
}

/// Telegram's flood control: a reply refused with 429 is sent again after the
/// `retry_after` it asked for, and the replies after it follow in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_refused_with_429_is_sent_again_after_retry_after() {
    type C = Cx<(), TgUpdate>;
    bounded(async {
        let server = FakeBotApi::start(Vec::new()).await;
        server.throttle(1);
        let pipeline = Pipeline::<(), TgUpdate>::builder()
            .teloxide_bot(bot_for(&server))
            .on_text(|cx: C| async move {
                cx.reply("first");
                cx.reply("second");
                Ok(Outcome::Handled)
            })
            .build();
        let update =
            serde_json::from_str::<TgUpdate>(&patch(private_message("hi")).to_string()).unwrap();
        pipeline.handle(update).await.unwrap();
        let sends: Vec<String> = server
            .methods()
            .into_iter()
            .filter(|m| m == "sendmessage")
            .collect();
        assert_eq!(sends.len(), 3, "refused once, then both: {sends:?}");
        assert_eq!(server.texts_by_chat()[&7], ["first", "second"]);

        // A wait longer than allowed is not waited out: the error is the reply's.
        server.throttle(1);
        let strict = Pipeline::<(), TgUpdate>::builder()
            .transport(
                stagecraft::adapters::teloxide::TeloxideTransport::new(bot_for(&server))
                    .max_retry_after(Duration::ZERO),
            )
            .on_text(|cx: C| async move {
                cx.reply("third");
                Ok(Outcome::Handled)
            })
            .build();
        let mut again = private_message("again");
        again["update_id"] = json!(2);
        let update = serde_json::from_str::<TgUpdate>(&patch(again).to_string()).unwrap();
        let err = strict.handle(update).await.unwrap_err();
        let chain = stagecraft::replay::error_chain(&err);
        assert!(chain.contains("etry after"), "{chain}");
    })
    .await;
}

/// Any teloxide requester carries the replies: here `DefaultParseMode<Bot>`, whose parse
/// mode goes with every text that has none of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requester_with_adaptors_carries_the_replies() {
    use stagecraft::adapters::teloxide::TeloxideTransport;
    use stagecraft::transport::{ParseMode as Mode, Reply};
    use teloxide::types::ParseMode;
    type C = Cx<(), TgUpdate>;
    bounded(async {
        let server = FakeBotApi::start(Vec::new()).await;
        let transport =
            TeloxideTransport::with_requester(bot_for(&server).parse_mode(ParseMode::Html));
        assert!(
            format!("{transport:?}").contains("DefaultParseMode"),
            "{transport:?}"
        );
        let pipeline = Pipeline::<(), TgUpdate>::builder()
            .transport(transport)
            .on_text(|cx: C| async move {
                cx.reply("<b>default</b>");
                cx.send(Reply::text("*own*").parse_mode(Mode::MarkdownV2))?;
                Ok(Outcome::Handled)
            })
            .build();
        let update =
            serde_json::from_str::<TgUpdate>(&patch(private_message("hi")).to_string()).unwrap();
        pipeline.handle(update).await.unwrap();
        let bodies: Vec<Value> = server
            .requests()
            .iter()
            .map(|(_, b)| serde_json::from_str(b).unwrap())
            .collect();
        assert_eq!(bodies[0]["parse_mode"], "HTML", "{bodies:?}");
        assert_eq!(bodies[1]["parse_mode"], "MarkdownV2", "{bodies:?}");
    })
    .await;
}

/// A keyboard, a press, an edit and a stale press through the real `Dispatcher` with long
/// polling, every reply through `Throttle<Bot>` (teloxide's flood-control adaptor) in
/// both the dispatcher and the transport.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyboard_a_press_an_edit_and_a_stale_press_through_the_dispatcher_with_throttle() {
    use stagecraft::adapters::teloxide::TeloxideTransport;
    use stagecraft::transport::{Button, MessageRef, Reply};
    use teloxide::adaptors::throttle::Limits;
    use teloxide::requests::RequesterExt;

    bounded(async {
        let chat = 777;
        let start = patch(private_chat_message(1, chat, "/ask"));
        let server = FakeBotApi::start(vec![vec![start]]).await;
        let bot = bot_for(&server).throttle(Limits::default());
        type C = Cx<u32, TgUpdate>;
        let stage = Stage::builder()
            .scene(
                Wizard::builder("ask")
                    .step(|cx: C| async move {
                        cx.send(
                            Reply::text("Coffee?")
                                .inline_keyboard([[
                                    Button::callback("Yes", "yes"),
                                    Button::callback("No", "no"),
                                ]])
                                .remember("question"),
                        )?;
                        Ok(Outcome::Next)
                    })
                    .step(|cx: C| async move {
                        let answer = cx.update().callback_payload().unwrap_or("?").to_owned();
                        cx.send(Reply::answer_callback(Some(format!("You said {answer}"))))?;
                        cx.send(Reply::edit_text(MessageRef::Callback, format!("Coffee? {answer}")))?;
                        cx.session_mut(|n| *n += 1)?;
                        Ok(Outcome::leave())
                    })
                    .build(),
            )
            .build()
            .unwrap();
        let pipeline = Pipeline::<u32, TgUpdate>::builder()
            .transport(TeloxideTransport::with_requester(bot.clone()))
            .stage(stage)
            .command("ask", |_cx: C| async move { Ok(Outcome::enter("ask")) })
            .build();
        let handler: UpdateHandler<BoxError> =
            dptree::entry().branch(enter_stage(pipeline.clone()));
        let mut dispatcher = Dispatcher::builder(bot, handler).build();
        let token = dispatcher.shutdown_token();
        let task = tokio::spawn(async move { dispatcher.dispatch().await });

        // The keyboard.
        assert!(server.wait_for_calls(1, DEADLINE).await, "{:?}", server.calls());
        let (_, body) = server
            .requests()
            .into_iter()
            .find(|(m, _)| m == "sendmessage")
            .expect("the question was sent");
        let body: Value = serde_json::from_str(&body).unwrap();
        let buttons = &body["reply_markup"]["inline_keyboard"][0];
        let (yes, no) = (
            buttons[0]["callback_data"].as_str().unwrap().to_owned(),
            buttons[1]["callback_data"].as_str().unwrap().to_owned(),
        );
        assert!(yes.ends_with(":yes") && no.ends_with(":no"), "{yes} {no}");
        let question_id = 2; // the fake numbers messages from 2

        // A press of Yes: answered, the question edited, the wizard done.
        server.push_batch(vec![press(2, chat, question_id, "cb-yes", &yes)]);
        assert!(server.wait_for_calls(3, DEADLINE).await, "{:?}", server.calls());
        // A later press of the old No: answered with the stale notice, nothing else.
        server.push_batch(vec![press(3, chat, question_id, "cb-no", &no)]);
        assert!(server.wait_for_calls(4, DEADLINE).await, "{:?}", server.calls());
        tokio::time::sleep(Duration::from_millis(300)).await;
        if let Ok(stopped) = token.shutdown() {
            let _ = tokio::time::timeout(Duration::from_secs(10), stopped).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;

        let calls = server.calls();
        assert_eq!(calls.len(), 4, "{calls:?}");
        assert!(
            matches!(&calls[1], Call::AnswerCallback { id, text } if id == "cb-yes" && text.as_deref() == Some("You said yes")),
            "{calls:?}"
        );
        assert!(
            matches!(&calls[2], Call::Other { method, body } if method == "editmessagetext" && body.contains("Coffee? yes")),
            "{calls:?}"
        );
        assert!(
            matches!(&calls[3], Call::AnswerCallback { id, text } if id == "cb-no" && text.as_deref() == Some(stagecraft::stage::DEFAULT_STALE_BUTTON_NOTICE)),
            "{calls:?}"
        );
        // The stale press changed nothing: the press of Yes counted once.
        let key = format!("{chat}:{chat}");
        let stored = pipeline.store().load(&key).await.unwrap().unwrap();
        let info = stagecraft::record::inspect(&stored.bytes).unwrap();
        assert_eq!(info.data, json!(1));
        assert!(info.scenes.is_empty());
    })
    .await;
}

fn private_chat_message(id: i64, chat: i64, text: &str) -> Value {
    json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
        "chat": {"id": chat, "type": "private", "first_name": "U"},
        "from": {"id": chat, "is_bot": false, "first_name": "U"}, "text": text,
        "entities": [{"type": "bot_command", "offset": 0, "length": text.len()}]}})
}

fn press(id: i64, chat: i64, message_id: i64, query: &str, data: &str) -> Value {
    json!({"update_id": id, "callback_query": {"id": query,
        "from": {"id": chat, "is_bot": false, "first_name": "U"},
        "chat_instance": "ci", "data": data,
        "message": {"message_id": message_id, "date": 1_700_000_000,
            "chat": {"id": chat, "type": "private", "first_name": "U"},
            "from": {"id": fake_bot_api::BOT_ID, "is_bot": true, "first_name": "Bot"},
            "text": "Coffee?"}}})
}

//! Who shares a session with whom: messages sent on behalf of a chat (a group's
//! anonymous administrators, users posting as a channel) and what the text and callback
//! data of an update can (not) choose.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

mod common;

use serde_json::{Value, json};
use stagecraft::Pipeline;
use stagecraft::clock::ManualClock;
use stagecraft::prelude::*;
use stagecraft::replay::{REPLAY_EPOCH_S, replay};
use stagecraft::store::{ListFilter, MemoryStore, SessionStore};
use stagecraft::transport::RecordingTransport;

/// The placeholder `from` of messages a group's anonymous administrators send.
const GROUP_ANONYMOUS_BOT: i64 = 1_087_968_824;
/// The placeholder `from` of messages users send as one of their channels.
const CHANNEL_BOT: i64 = 136_817_688;
const GROUP: i64 = -1_001_000;
const CHANNEL_1: i64 = -1_002_001;
const CHANNEL_2: i64 = -1_002_002;
const MEMBER: i64 = 7;

/// A group message in the Bot API's shape, as Telegram sends it: `from` and, when sent
/// on behalf of a chat, `sender_chat`.
fn group_message(id: i64, from: i64, sender_chat: Option<i64>, text: &str) -> String {
    let mut message = json!({
        "message_id": id,
        "date": 1_700_000_000,
        "chat": {"id": GROUP, "type": "supergroup", "title": "G"},
        "from": {"id": from, "is_bot": from != MEMBER, "first_name": "x"},
        "text": text,
    });
    if let Some(chat) = sender_chat {
        let kind = if chat == GROUP {
            "supergroup"
        } else {
            "channel"
        };
        message["sender_chat"] = json!({"id": chat, "type": kind, "title": "S"});
    }
    if text.starts_with('/') {
        let len = text.split(' ').next().map_or(0, str::len);
        message["entities"] = json!([{"type": "bot_command", "offset": 0, "length": len}]);
    }
    json!({"update_id": id, "message": message}).to_string()
}

/// Two users posting as their channels, an anonymous administrator and a member, each
/// in a signup wizard or outside, interleaved in one group.
fn group_conversation() -> Vec<String> {
    vec![
        group_message(1, CHANNEL_BOT, Some(CHANNEL_1), "/start"),
        group_message(2, CHANNEL_BOT, Some(CHANNEL_2), "Mallory"),
        group_message(3, CHANNEL_BOT, Some(CHANNEL_1), "Alice"),
        group_message(4, GROUP_ANONYMOUS_BOT, Some(GROUP), "/start"),
        group_message(5, MEMBER, None, "Bob"),
        group_message(6, GROUP_ANONYMOUS_BOT, Some(GROUP), "Ann"),
    ]
}

/// What the demo answers, in order: each identity in its own session.
fn expected_replies() -> Vec<&'static str> {
    vec![
        "What is your name?",
        // The second channel is outside any scene: it did not answer the first one's wizard.
        "Outside scenes (1 updates). Send /start or /profile.",
        "How old are you, Alice?",
        "What is your name?",
        "Outside scenes (1 updates). Send /start or /profile.",
        "How old are you, Ann?",
    ]
}

fn texts(lines: impl IntoIterator<Item = Value>) -> Vec<String> {
    lines
        .into_iter()
        .map(|v| v["text"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[test]
fn a_message_on_behalf_of_a_chat_is_keyed_by_that_chat() {
    let key = |json: &str| {
        let u = TelegramUpdate::from_json(json).unwrap();
        (
            KeyStrategy::<TelegramUpdate>::UserInChat.key(&u),
            KeyStrategy::<TelegramUpdate>::User.key(&u),
            KeyStrategy::<TelegramUpdate>::Chat.key(&u),
            u.user_id(),
        )
    };
    let c1 = key(&group_message(1, CHANNEL_BOT, Some(CHANNEL_1), "hi"));
    let c2 = key(&group_message(2, CHANNEL_BOT, Some(CHANNEL_2), "hi"));
    let anon = key(&group_message(3, GROUP_ANONYMOUS_BOT, Some(GROUP), "hi"));
    let member = key(&group_message(4, MEMBER, None, "hi"));
    assert_eq!(c1.0.as_deref(), Some("-1002001:-1001000"));
    assert_eq!(c2.0.as_deref(), Some("-1002002:-1001000"));
    assert_eq!(anon.0.as_deref(), Some("-1001000:-1001000"));
    assert_eq!(member.0.as_deref(), Some("7:-1001000"));
    assert_eq!(
        (c1.1.as_deref(), anon.1.as_deref()),
        (Some("-1002001"), Some("-1001000"))
    );
    // The chat key and `user_id` (Telegraf's `ctx.from`) are what they were.
    assert_eq!(c1.2.as_deref(), Some("-1001000"));
    assert_eq!(
        (c1.3, anon.3),
        (Some(CHANNEL_BOT), Some(GROUP_ANONYMOUS_BOT))
    );

    // A button is pressed by a user Telegram names, anonymous or not: keyed by them.
    let pressed = format!(
        r#"{{"update_id":5,"callback_query":{{"id":"q","from":{{"id":{MEMBER}}},"data":"x",
            "message":{{"message_id":9,"chat":{{"id":{GROUP}}},"from":{{"id":1}},
            "sender_chat":{{"id":{CHANNEL_1}}}}}}}}}"#
    );
    assert_eq!(key(&pressed).0.as_deref(), Some("7:-1001000"));
    // A channel's own post has no user: no session under the user keys, as before.
    let post = format!(
        r#"{{"update_id":6,"channel_post":{{"message_id":1,"chat":{{"id":{CHANNEL_1}}},
            "sender_chat":{{"id":{CHANNEL_1}}},"text":"news"}}}}"#
    );
    assert_eq!(key(&post).0, None);
    assert_eq!(key(&post).2.as_deref(), Some("-1002001"));
}

#[tokio::test]
async fn channel_identities_and_anonymous_admins_do_not_answer_each_others_wizards() {
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let replies = RecordingTransport::new();
    let store = MemoryStore::new();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store(store.clone())
            .clock(clock.clone())
            .transport(replies.clone()),
    )
    .unwrap();
    let input = group_conversation().join("\n");
    let summary = replay(&bot, &clock, input.as_bytes()).await.unwrap();
    assert!(summary.is_clean() && summary.failed_updates == 0);
    let sent = replies
        .sent()
        .into_iter()
        .map(|o| serde_json::from_str::<Value>(&o.to_json_line()).expect("a reply is JSON"));
    assert_eq!(texts(sent.collect::<Vec<_>>()), expected_replies());
    let mut keys = store.list(&ListFilter::default()).await.unwrap();
    keys.sort();
    assert_eq!(
        keys,
        [
            "-1001000:-1001000",
            "-1002001:-1001000",
            "-1002002:-1001000",
            "7:-1001000"
        ]
    );
}

#[test]
fn the_demo_binary_keeps_channel_identities_apart() {
    use std::io::Write;
    let demo = common::example_binary("demo");
    let mut child = std::process::Command::new(&demo)
        .args(["--store", "memory", "--replay", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for line in group_conversation() {
        writeln!(stdin, "{line}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8(out.stdout).unwrap();
    let replies = lines
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    assert_eq!(texts(replies.collect::<Vec<_>>()), expected_replies());
}

/// Text and callback data that name scenes, steps or keys choose nothing: only the
/// bot's own routes and the stored scene stack do.
#[tokio::test]
async fn text_and_callback_data_never_pick_a_scene_or_a_key() {
    let replies = RecordingTransport::new();
    let store = MemoryStore::new();
    let scene = |id: &'static str| {
        Wizard::builder(id)
            .step(move |cx: Cx<()>| async move {
                cx.reply(format!("{id} step 0"));
                Ok(Outcome::Next)
            })
            .step(move |cx: Cx<()>| async move {
                cx.reply(format!("{id} step 1"));
                Ok(Outcome::Handled)
            })
            .build()
    };
    let bot = Pipeline::<()>::builder()
        .store(store.clone())
        .transport(replies.clone())
        .stage(
            Stage::builder()
                .scene(scene("signup"))
                .scene(scene("admin"))
                .build()
                .unwrap(),
        )
        .command("signup", |_cx: Cx<()>| async move {
            Ok(Outcome::enter("signup"))
        })
        .on_text(|cx: Cx<()>| async move {
            cx.reply("outside");
            Ok(Outcome::Handled)
        })
        .on_update(|cx: Cx<()>| async move {
            cx.reply("button");
            Ok(Outcome::Handled)
        })
        .build();
    let text = |id: i64, text: &str| {
        TelegramUpdate::from_json(
            &json!({"update_id": id, "message": {"message_id": id, "chat": {"id": 5},
                "from": {"id": 5}, "text": text}})
            .to_string(),
        )
        .unwrap()
    };
    let button = |id: i64, data: &str| {
        TelegramUpdate::from_json(
            &json!({"update_id": id, "callback_query": {"id": "q", "from": {"id": 5},
                "data": data, "message": {"message_id": 1, "chat": {"id": 5}}}})
            .to_string(),
        )
        .unwrap()
    };
    let hostile = [
        "admin",
        "signup",
        "/admin",
        "/enter admin",
        "{\"scenes\":[{\"id\":\"admin\",\"cursor\":1}]}",
        "admin:1",
        "6:5",
        "../6:5",
        "\u{0}admin",
    ];
    let mut id = 0;
    for data in hostile {
        id += 1;
        bot.handle(text(id, data)).await.unwrap();
        id += 1;
        bot.handle(button(id, data)).await.unwrap();
        assert_eq!(bot.key_of(&text(id, data)).as_deref(), Some("5:5"));
        assert_eq!(bot.key_of(&button(id, data)).as_deref(), Some("5:5"));
    }
    // Every update was answered outside any scene ("signup" as text is not the command).
    let answers = replies.texts();
    assert_eq!(answers.len(), hostile.len() * 2);
    for (i, answer) in answers.iter().enumerate() {
        let want = if i % 2 == 0 { "outside" } else { "button" };
        assert_eq!(answer, want, "reply {i}");
    }
    let keys = store.list(&ListFilter::default()).await.unwrap();
    assert!(keys.iter().all(|k| k == "5:5"), "{keys:?}");
    // Only the bot's own route enters a scene; then the scene's step takes the button,
    // whatever its data says.
    bot.handle(text(100, "/signup")).await.unwrap();
    bot.handle(button(101, "admin")).await.unwrap();
    assert_eq!(
        replies.texts()[answers.len()..],
        ["signup step 0", "signup step 1"]
    );
    let stored = store.load("5:5").await.unwrap().expect("the session");
    let info = stagecraft::session::inspect(&stored.bytes).unwrap();
    let scenes: Vec<_> = info.scenes.iter().map(|f| f.scene.clone()).collect();
    assert_eq!(scenes, ["signup"]);
}

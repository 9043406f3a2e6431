//! A group upgraded to a supergroup: Telegram's two service messages are taken by the
//! session layer (no wizard step sees them as an answer), and every member's session
//! moves to the new chat id, so a member half-way through a wizard goes on where they
//! left off. On memory, SQLite, Redis, PostgreSQL and MySQL.

#[path = "../examples/shared/demo_bot.rs"]
mod demo_bot;

mod common;

use std::sync::Arc;

use stagecraft::clock::ManualClock;
use stagecraft::prelude::*;
use stagecraft::replay::{REPLAY_EPOCH_S, replay};
use stagecraft::store::{MemoryStore, SessionStore};
use stagecraft::transport::Outgoing;

const GROUP: i64 = -500;
const SUPERGROUP: i64 = -1_000_000_500;

async fn stores(test: &str) -> Vec<common::NamedStore> {
    common::every_store(test).await
}

fn msg(id: i64, chat: i64, user: i64, text: &str) -> String {
    let kind = if chat == GROUP { "group" } else { "supergroup" };
    serde_json::json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
        "chat": {"id": chat, "type": kind, "title": "G"},
        "from": {"id": user, "is_bot": false, "first_name": "U"}, "text": text}})
    .to_string()
}

/// The two service messages of an upgrade, as Telegram sends them.
fn upgrade(id: i64, user: i64) -> [String; 2] {
    [
        serde_json::json!({"update_id": id, "message": {"message_id": id, "date": 1_700_000_000,
            "chat": {"id": GROUP, "type": "group", "title": "G"},
            "from": {"id": user, "is_bot": false, "first_name": "U"},
            "migrate_to_chat_id": SUPERGROUP}})
        .to_string(),
        serde_json::json!({"update_id": id + 1, "message": {"message_id": 1, "date": 1_700_000_000,
            "chat": {"id": SUPERGROUP, "type": "supergroup", "title": "G"},
            "from": {"id": 1_087_968_824, "is_bot": true, "first_name": "Group"},
            "migrate_from_chat_id": GROUP}})
        .to_string(),
    ]
}

fn texts(replies: &RecordingTransport) -> Vec<(i64, String)> {
    replies
        .take()
        .into_iter()
        .filter_map(|o| match o {
            Outgoing::Text { chat_id, text, .. } => Some((chat_id, text)),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_half_way_through_a_wizard_continue_in_the_supergroup() {
    for (name, store, ns) in stores("supergroup").await {
        let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
        let replies = RecordingTransport::new();
        let bot = demo_bot::build_with(
            Pipeline::<demo_bot::Demo>::builder()
                .store_arc(Arc::clone(&store))
                .clock(clock.clone())
                .transport(replies.clone()),
            demo_bot::Options { remind: true },
        )
        .unwrap();
        // Two members in the group's signup: 11 at the age step, 12 at the name step.
        let before = [
            msg(1, GROUP, 11, "/start"),
            msg(2, GROUP, 11, "Alice"),
            msg(3, GROUP, 12, "/start"),
        ];
        let [to, from] = upgrade(10, 11);
        // Both service messages, the second twice (a redelivery): nothing answers them.
        let input = [before.join("\n"), to, from.clone(), from].join("\n");
        let summary = replay(&bot, &clock, input.as_bytes()).await.unwrap();
        assert!(summary.is_clean(), "{name}: {summary:?}");
        assert_eq!(
            texts(&replies).len(),
            3,
            "{name}: the service messages got replies"
        );
        // The old chat's sessions are gone; the supergroup's are there.
        for user in [11, 12] {
            let old = bot.key_of(&TelegramUpdate::from_json(&msg(0, GROUP, user, "")).unwrap());
            let new =
                bot.key_of(&TelegramUpdate::from_json(&msg(0, SUPERGROUP, user, "")).unwrap());
            assert!(store.load(&old.unwrap()).await.unwrap().is_none(), "{name}");
            assert!(store.load(&new.unwrap()).await.unwrap().is_some(), "{name}");
        }
        // Each goes on where they left off, in the supergroup.
        let after = [
            msg(20, SUPERGROUP, 11, "30"),
            msg(21, SUPERGROUP, 12, "Bob"),
        ]
        .join("\n");
        replay(&bot, &clock, after.as_bytes()).await.unwrap();
        assert_eq!(
            texts(&replies),
            [
                (
                    SUPERGROUP,
                    "Confirm: Alice, 30. Reply yes or no.".to_owned()
                ),
                (SUPERGROUP, "How old are you, Bob?".to_owned()),
            ],
            "{name}"
        );
        // The update counter came along (3 updates before, 1 after; the service
        // messages are not counted: no handler saw them).
        let key = bot
            .key_of(&TelegramUpdate::from_json(&msg(0, SUPERGROUP, 11, "")).unwrap())
            .unwrap();
        let info =
            stagecraft::record::inspect(&store.load(&key).await.unwrap().unwrap().bytes).unwrap();
        assert_eq!(info.data["updates"], 3, "{name}: {}", info.data);
        // An armed reminder follows the member to the new chat.
        replay(&bot, &clock, b"{\"advance_clock_s\":600}\n".as_slice())
            .await
            .unwrap();
        let mut reminded = texts(&replies);
        reminded.sort();
        assert_eq!(
            reminded,
            [
                (SUPERGROUP, demo_bot::REMINDER.to_owned()),
                (SUPERGROUP, demo_bot::REMINDER.to_owned())
            ],
            "{name}"
        );
        if let Some((url, ns)) = ns {
            common::drop_namespace(&url, &ns).await;
        }
    }
}

#[tokio::test]
async fn a_member_already_in_the_supergroup_keeps_both_sessions() {
    let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    let replies = RecordingTransport::new();
    let bot = demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store_arc(Arc::clone(&store))
            .transport(replies.clone()),
    )
    .unwrap();
    for line in [
        msg(1, GROUP, 11, "/start"),
        msg(2, SUPERGROUP, 11, "/profile"),
    ] {
        bot.handle(TelegramUpdate::from_json(&line).unwrap())
            .await
            .unwrap();
    }
    let moved = bot.migrate_chat(GROUP, SUPERGROUP).await.unwrap();
    assert_eq!((moved.moved, moved.kept), (0, 1));
    // Nothing was overwritten: the supergroup's session is the profile scene.
    let key = bot
        .key_of(&TelegramUpdate::from_json(&msg(0, SUPERGROUP, 11, "")).unwrap())
        .unwrap();
    let info =
        stagecraft::record::inspect(&store.load(&key).await.unwrap().unwrap().bytes).unwrap();
    assert_eq!(info.scenes[0].scene, "profile");
}

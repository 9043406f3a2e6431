//! Conversations survive deploys: stored records written by older (or other) versions
//! of the bot, kept as JSON fixtures in `tests/fixtures/continuity/`, are read by this
//! one on memory, SQLite and Redis. A state type that was replaced is upgraded by the
//! scene's upgrade functions; one that no upgrade reaches is recovered by its scene's
//! policy, the user told, the rest of the session kept and a copy of what was lost kept
//! in the record.

mod common;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use stagecraft::prelude::*;
use stagecraft::scene::Recovery;
use stagecraft::stage::DEFAULT_RECOVERY_NOTICE;
use stagecraft::store::{MemoryStore, RedisStore, SessionStore, SqliteStore};

#[derive(Debug, Default, Serialize, Deserialize)]
struct D {
    updates: u32,
}

type C = Cx<D>;

/// The state of the signup wizard since version 2 (version 1 stored one `name`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Signup {
    first: String,
    last: String,
}

#[typetag::serde(name = "signup.v2")]
impl SceneState for Signup {}

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/continuity/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(path).unwrap()
}

async fn stores(test: &str) -> Vec<(String, Arc<dyn SessionStore>)> {
    let mut out: Vec<(String, Arc<dyn SessionStore>)> =
        vec![("memory".into(), Arc::new(MemoryStore::new()))];
    let path = std::env::temp_dir().join(format!("{}.db", common::unique_name(test)));
    out.push((
        "sqlite".into(),
        Arc::new(SqliteStore::open(&path).await.unwrap()),
    ));
    if let Some(url) = common::server_url("STAGECRAFT_REDIS_URL") {
        let prefix = format!("{}:", common::unique_name(test));
        let store = RedisStore::connect(&url)
            .await
            .unwrap()
            .with_prefix(&prefix)
            .unwrap();
        out.push(("redis".into(), Arc::new(store)));
    }
    out
}

fn bot(
    store: Arc<dyn SessionStore>,
    replies: RecordingTransport,
    recovery: Recovery,
) -> Pipeline<D> {
    let signup = Wizard::builder("signup")
        .state::<Signup>()
        .recovery(recovery)
        .upgrade("signup.v1", "signup.v2", |mut old: Value| {
            let name = old["name"].take();
            let name = name.as_str().unwrap_or_default();
            let (first, last) = name.split_once(' ').unwrap_or((name, ""));
            Ok(json!({"first": first, "last": last}))
        })
        .on_enter(|cx: C| async move {
            cx.reply("What is your first name?");
            Ok(Outcome::Handled)
        })
        .step(|_cx: C| async move { Ok(Outcome::Next) })
        .step(|cx: C| async move {
            let (first, last) = cx.scene_state(|s: &Signup| (s.first.clone(), s.last.clone()))?;
            let text = cx.update().text().unwrap_or_default().to_owned();
            cx.reply(format!("{first} {last}, you said {text}"));
            Ok(Outcome::leave())
        })
        .build();
    let menu = Scene::builder("menu")
        .recovery(Recovery::Leave)
        .on_resume(|cx: C| async move {
            cx.reply("back in the menu");
            Ok(Outcome::Handled)
        })
        .on_text(|cx: C| async move {
            cx.reply("menu");
            Ok(Outcome::Handled)
        })
        .build();
    let stage = Stage::builder().scene(signup).scene(menu).build().unwrap();
    Pipeline::<D>::builder()
        .store_arc(store)
        .transport(replies)
        .middleware(|cx: C, next: Next<D, TelegramUpdate>| async move {
            cx.session_mut(|d| d.updates += 1)?;
            next.run(cx).await
        })
        .command(
            "start",
            |_cx: C| async move { Ok(Outcome::enter("signup")) },
        )
        .stage(stage)
        .on_text(|cx: C| async move {
            let n = cx.session(|d| d.updates)?;
            cx.reply(format!("outside, update #{n}"));
            Ok(Outcome::Handled)
        })
        .build()
}

fn text(id: i64, t: &str) -> TelegramUpdate {
    TelegramUpdate::from_value(
        json!({"update_id": id, "message": {"message_id": id, "date": 0,
        "chat": {"id": 1, "type": "private"}, "from": {"id": 1, "is_bot": false}, "text": t}}),
    )
    .unwrap()
}

async fn stored(store: &Arc<dyn SessionStore>) -> Value {
    serde_json::from_slice(&store.load("1:1").await.unwrap().unwrap().bytes).unwrap()
}

/// A deploy replaced `signup.v1` by `signup.v2`: the user mid-wizard goes on where they
/// were, with the old answer upgraded, and the record is written in the new form.
#[tokio::test]
async fn an_old_state_is_upgraded_on_load() {
    for (name, store) in stores("upgrade").await {
        store
            .save("1:1", &fixture("signup_v1.json"), None)
            .await
            .unwrap();
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), replies.clone(), Recovery::Restart);
        bot.handle(text(1, "yes")).await.unwrap();
        assert_eq!(replies.texts(), ["Ada Lovelace, you said yes"], "{name}");
        assert_eq!(
            stored(&store).await["data"]["updates"],
            8,
            "{name}: data kept"
        );
    }
}

/// The stored state's type is gone and no upgrade reaches it: the user hears what
/// happened and the wizard starts again; their data is kept, and so is a copy of the
/// frame. `/start` works as before.
#[tokio::test]
async fn a_state_no_upgrade_reaches_restarts_its_scene_and_says_so() {
    for (name, store) in stores("renamed").await {
        store
            .save("1:1", &fixture("renamed_state.json"), None)
            .await
            .unwrap();
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), replies.clone(), Recovery::Restart);
        bot.handle(text(1, "hello?")).await.unwrap();
        assert_eq!(
            replies.texts(),
            [DEFAULT_RECOVERY_NOTICE, "What is your first name?"],
            "{name}"
        );
        let rec = stored(&store).await;
        assert_eq!(rec["data"]["updates"], 8, "{name}: {rec}");
        assert_eq!(
            rec["scenes"][0]["state"],
            json!({"signup.v2": {"first": "", "last": ""}}),
            "{name}"
        );
        assert_eq!(
            rec["lost"][0]["value"]["state"],
            json!({"signup.gone": {"name": "Ada"}}),
            "{name}: {rec}"
        );
        bot.handle(text(2, "/start")).await.unwrap();
        assert_eq!(
            replies.texts().last().unwrap(),
            "What is your first name?",
            "{name}"
        );
    }
    // Under `Recovery::Clear` (and `Leave` with nothing beneath) the update goes on to
    // the bot's handlers.
    for recovery in [Recovery::Clear, Recovery::Leave] {
        let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
        store
            .save("1:1", &fixture("renamed_state.json"), None)
            .await
            .unwrap();
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), replies.clone(), recovery);
        bot.handle(text(1, "hello?")).await.unwrap();
        assert_eq!(
            replies.texts(),
            [DEFAULT_RECOVERY_NOTICE, "outside, update #8"],
            "{recovery:?}"
        );
    }
}

/// A parent frame beneath the active one cannot be decoded: the user goes on in the
/// child, the parent's stored JSON is written back as it was (a rollback still finds
/// it), and when the child leaves the parent's policy applies.
#[tokio::test]
async fn an_undecodable_parent_is_kept_as_stored_until_it_is_uncovered() {
    for (name, store) in stores("parent").await {
        store
            .save("1:1", &fixture("parent_broken.json"), None)
            .await
            .unwrap();
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), replies.clone(), Recovery::Restart);
        // An update that writes the session, the parent untouched.
        bot.run_event("1:1", text(0, ""), |cx: C| async move {
            cx.session_mut(|d| d.updates += 10)?;
            Ok(Outcome::Handled)
        })
        .await
        .unwrap();
        let rec = stored(&store).await;
        assert_eq!(
            rec["scenes"][0]["state"],
            json!({"menu.v0": {"page": 3}}),
            "{name}: {rec}"
        );
        bot.handle(text(1, "yes")).await.unwrap();
        assert_eq!(
            replies.texts(),
            ["Ada L, you said yes", DEFAULT_RECOVERY_NOTICE,],
            "{name}"
        );
        let rec = stored(&store).await;
        assert!(rec.get("scenes").is_none(), "{name}: {rec}");
        assert_eq!(rec["lost"][0]["value"]["scene"], "menu", "{name}: {rec}");
    }
}

/// User data that does not decode any more starts afresh, the old JSON kept in `lost`;
/// the conversation (the frames) goes on.
#[tokio::test]
async fn undecodable_data_starts_afresh_and_is_kept() {
    for (name, store) in stores("data").await {
        store
            .save("1:1", &fixture("bad_data.json"), None)
            .await
            .unwrap();
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), replies.clone(), Recovery::Restart);
        bot.handle(text(1, "yes")).await.unwrap();
        assert_eq!(replies.texts(), ["Ada L, you said yes"], "{name}");
        let rec = stored(&store).await;
        assert_eq!(rec["data"]["updates"], 1, "{name}: {rec}");
        assert_eq!(rec["lost"][0]["what"], "data", "{name}: {rec}");
        assert_eq!(
            rec["lost"][0]["value"],
            json!({"updates": "seven"}),
            "{name}: {rec}"
        );
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Profile {
    first: String,
    last: String,
    #[serde(default)]
    updates: u32,
}

fn profile_bot(store: Arc<dyn SessionStore>, replies: RecordingTransport) -> Pipeline<Profile> {
    Pipeline::<Profile>::builder()
        .store_arc(store)
        .transport(replies)
        .data_version(1)
        .upgrade_data(0, |mut v: Value| {
            let name = v["name"].take();
            let name = name.as_str().unwrap_or_default();
            let (first, last) = name.split_once(' ').unwrap_or((name, ""));
            Ok(json!({"first": first, "last": last}))
        })
        .on_text(|cx: Cx<Profile>| async move {
            let (first, last, n) = cx.session_mut(|p| {
                p.updates += 1;
                (p.first.clone(), p.last.clone(), p.updates)
            })?;
            cx.reply(format!("{first}/{last} #{n}"));
            Ok(Outcome::Handled)
        })
        .build()
}

/// The bot's data type changed shape (version 0 → 1): data stored by the old version is
/// upgraded on load and written back at the new version.
#[tokio::test]
async fn old_user_data_is_upgraded_on_load() {
    for (name, store) in stores("data_version").await {
        store
            .save("1:1", br#"{"v":1,"data":{"name":"Ada Lovelace"}}"#, None)
            .await
            .unwrap();
        let replies = RecordingTransport::new();
        let bot = profile_bot(Arc::clone(&store), replies.clone());
        bot.handle(text(1, "hi")).await.unwrap();
        bot.handle(text(2, "hi")).await.unwrap();
        assert_eq!(
            replies.texts(),
            ["Ada/Lovelace #1", "Ada/Lovelace #2"],
            "{name}"
        );
        let rec = stored(&store).await;
        assert_eq!(rec["dv"], 1, "{name}: {rec}");
        assert_eq!(rec["data"]["first"], "Ada", "{name}: {rec}");
        assert!(rec.get("lost").is_none(), "{name}: nothing lost: {rec}");
    }
}

/// A newer replica wrote fields this one does not know, in the envelope and in the
/// user's data: a load and a save by this one keep them (a rolling deploy or a rollback
/// does not wipe them), while fields of its own data type are written as it sets them.
#[tokio::test]
async fn fields_a_newer_version_wrote_survive_a_save_by_an_older_one() {
    let big = "x".repeat(100_000);
    for (name, store) in stores("forward").await {
        let newer = json!({"v": 1, "data": {"updates": 3, "avatar": big, "prefs": {"lang": "fr"}},
            "timers": [{"at": 1_700_000_600}]});
        store
            .save("1:1", newer.to_string().as_bytes(), None)
            .await
            .unwrap();
        let replies = RecordingTransport::new();
        let bot = bot(Arc::clone(&store), replies.clone(), Recovery::Restart);
        bot.handle(text(1, "hi")).await.unwrap();
        bot.handle(text(2, "hi")).await.unwrap();
        assert_eq!(
            replies.texts(),
            ["outside, update #4", "outside, update #5"],
            "{name}"
        );
        let rec = stored(&store).await;
        assert_eq!(rec["data"]["updates"], 5, "{name}");
        assert_eq!(
            rec["data"]["avatar"].as_str().map(str::len),
            Some(100_000),
            "{name}"
        );
        assert_eq!(rec["data"]["prefs"], json!({"lang": "fr"}), "{name}");
        assert_eq!(
            rec["timers"],
            json!([{"at": 1_700_000_600}]),
            "{name}: {rec}"
        );
    }
}

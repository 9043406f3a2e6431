//! Shared session type, scene states, handler shorthands and a counting store.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use stagecraft::handler::{Handler, LeaveHook};
use stagecraft::prelude::*;
use stagecraft::store::ListFilter;
use stagecraft::testing::TestBot;

/// The session data of every checklist bot.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Data {
    #[serde(default)]
    pub(crate) count: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) nick: Option<String>,
}

pub(crate) type C = Cx<Data>;
pub(crate) type Bot = TestBot<Data>;

/// A typed scene state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Form {
    #[serde(default)]
    pub(crate) name: String,
}

#[typetag::serde(name = "checklist.form.v1")]
impl SceneState for Form {}

/// Another typed scene state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Picker {
    #[serde(default)]
    pub(crate) options: Vec<String>,
}

#[typetag::serde(name = "checklist.picker.v1")]
impl SceneState for Picker {}

/// Replies `text` and stays.
pub(crate) fn say(text: &'static str) -> impl Handler<Data, TelegramUpdate> {
    move |cx: C| async move {
        cx.reply(text);
        Ok(Outcome::Handled)
    }
}

/// Replies `text` and answers `then()`.
pub(crate) fn say_then(
    text: &'static str,
    then: fn() -> Outcome,
) -> impl Handler<Data, TelegramUpdate> {
    move |cx: C| async move {
        cx.reply(text);
        Ok(then())
    }
}

/// Answers `then()` without replying.
pub(crate) fn go(then: fn() -> Outcome) -> impl Handler<Data, TelegramUpdate> {
    move |_cx: C| async move { Ok(then()) }
}

/// A leave hook replying `text`.
pub(crate) fn said(text: &'static str) -> impl LeaveHook<Data, TelegramUpdate> {
    move |cx: C| async move {
        cx.reply(text);
        Ok(())
    }
}

/// The text of the update (message, edit or channel post).
pub(crate) fn text_of(cx: &C) -> String {
    cx.update().text().unwrap_or_default().to_owned()
}

/// A stage-level `/where`: `scene=<id|none> cursor=<n|->`.
pub(crate) fn where_handler() -> impl Handler<Data, TelegramUpdate> {
    |cx: C| async move {
        let scene = cx.current_scene().unwrap_or_else(|| "none".to_owned());
        let cursor = cx
            .cursor()
            .map_or_else(|| "-".to_owned(), |c| c.to_string());
        cx.reply(format!("scene={scene} cursor={cursor}"));
        Ok(Outcome::Handled)
    }
}

/// Counts in the session and replies `count=<n>`.
pub(crate) fn counter() -> impl Handler<Data, TelegramUpdate> {
    |cx: C| async move {
        let n = cx.session_mut(|d| {
            d.count += 1;
            d.count
        })?;
        cx.reply(format!("count={n}"));
        Ok(Outcome::Handled)
    }
}

/// A Bot API update from JSON.
pub(crate) fn tg(v: Value) -> TelegramUpdate {
    TelegramUpdate::from_value(v).expect("valid update JSON")
}

/// A channel post: it has a chat but no `from`.
pub(crate) fn channel_post(id: i64, chat: i64, text: &str) -> TelegramUpdate {
    tg(
        serde_json::json!({"update_id": id, "channel_post": {"message_id": id, "date": 0,
        "chat": {"id": chat, "type": "channel"}, "text": text}}),
    )
}

/// `(scene, cursor)` as [`TestBot::scenes`] lists it.
pub(crate) fn frame(scene: &str, cursor: Option<i64>) -> (String, Option<i64>) {
    (scene.to_owned(), cursor)
}

/// The stored record of the bot's user as raw JSON.
pub(crate) async fn raw(bot: &Bot) -> Option<Value> {
    raw_at(bot.store().as_ref(), &bot.key()).await
}

/// The stored record of `key` as raw JSON: the session Telegraf would store, without
/// the delivery bookkeeping stagecraft adds beside it (`seen`: recent update ids;
/// `outbox`: replies not yet marked delivered; see docs/delivery.md).
pub(crate) async fn raw_at(store: &dyn SessionStore, key: &str) -> Option<Value> {
    let loaded = store.load(key).await.expect("store load")?;
    let mut value: Value = serde_json::from_slice(&loaded.bytes).expect("stored record is JSON");
    if let Some(map) = value.as_object_mut() {
        map.remove("seen");
        map.remove("outbox");
    }
    Some(value)
}

/// Every key in a store, sorted.
pub(crate) async fn keys(store: &dyn SessionStore) -> Vec<String> {
    let mut keys = store
        .list(&ListFilter::default())
        .await
        .expect("store list");
    keys.sort();
    keys
}

pub(crate) use crate::shared::CountingStore;

//! Telegram Bot API `Update` JSON, without a bot framework.

use serde::Deserialize;

use super::{ChatMigration, Update, UpdateKind};
use crate::error::{Error, Result};

/// A Telegram Bot API `Update`, deserialized from its JSON.
///
/// Only the fields routing needs are kept; unknown fields are ignored. Which chat and
/// user an update belongs to follows Telegraf's `ctx.chat` / `ctx.from`.
///
/// ```
/// use stagecraft::update::{TelegramUpdate, Update, UpdateKind};
///
/// let u = TelegramUpdate::from_json(r#"{"update_id":1,"message":{"message_id":1,"date":0,
///     "chat":{"id":-100,"type":"group"},"from":{"id":7,"is_bot":false,"first_name":"A"},
///     "text":"/start@my_bot"}}"#).unwrap();
/// assert_eq!(u.kind(), UpdateKind::Message);
/// assert_eq!((u.chat_id(), u.user_id()), (Some(-100), Some(7)));
/// assert_eq!(u.command().unwrap().name, "start");
///
/// assert!(TelegramUpdate::from_json("{not json").is_err());
/// ```
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct TelegramUpdate {
    /// `update_id`.
    pub update_id: i64,
    /// `message`.
    pub message: Option<Message>,
    /// `edited_message`.
    pub edited_message: Option<Message>,
    /// `channel_post`.
    pub channel_post: Option<Message>,
    /// `edited_channel_post`.
    pub edited_channel_post: Option<Message>,
    /// `callback_query`.
    pub callback_query: Option<CallbackQuery>,
    /// `inline_query` (has a user, no chat).
    pub inline_query: Option<FromOnly>,
    /// `chosen_inline_result` (has a user, no chat).
    pub chosen_inline_result: Option<FromOnly>,
    /// `chat_member`.
    pub chat_member: Option<ChatEvent>,
    /// `my_chat_member`.
    pub my_chat_member: Option<ChatEvent>,
    /// `chat_join_request`.
    pub chat_join_request: Option<ChatEvent>,
}

/// A message (or channel post).
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Message {
    /// `message_id`.
    #[serde(default)]
    pub message_id: i64,
    /// `chat`.
    pub chat: Chat,
    /// `from` (absent in channels; a placeholder bot when `sender_chat` is set).
    pub from: Option<User>,
    /// `sender_chat`: the chat the message was sent on behalf of (a group's anonymous
    /// administrators, a channel).
    pub sender_chat: Option<Chat>,
    /// `message_thread_id` (forum topics).
    pub message_thread_id: Option<i64>,
    /// `text`.
    pub text: Option<String>,
    /// `migrate_to_chat_id`: the group was upgraded to this supergroup (a service
    /// message in the old group).
    pub migrate_to_chat_id: Option<i64>,
    /// `migrate_from_chat_id`: this supergroup was upgraded from that group (a service
    /// message in the new supergroup).
    pub migrate_from_chat_id: Option<i64>,
}

/// A chat.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct Chat {
    /// `id`.
    pub id: i64,
}

/// A user.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct User {
    /// `id`.
    pub id: i64,
}

/// A callback query.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct CallbackQuery {
    /// `id`.
    pub id: String,
    /// `from`.
    pub from: User,
    /// `message` (absent for buttons on inline messages).
    pub message: Option<Message>,
    /// `data`.
    pub data: Option<String>,
}

/// An update that only names a user.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct FromOnly {
    /// `from`.
    pub from: User,
}

/// A chat event with a chat and a user.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[non_exhaustive]
pub struct ChatEvent {
    /// `chat`.
    pub chat: Chat,
    /// `from`.
    pub from: User,
}

impl TelegramUpdate {
    /// Parses Bot API JSON.
    ///
    /// # Errors
    /// [`Error::Update`] when the JSON is not an `Update` (an object: serde alone would
    /// also read an array of the fields' values, in order).
    pub fn from_json(json: &str) -> Result<Self> {
        if !json.trim_start().starts_with('{') {
            return Err(not_an_object());
        }
        serde_json::from_str(json).map_err(|e| Error::Update(e.into()))
    }

    /// Parses a Bot API `Update` already held as a JSON value.
    ///
    /// # Errors
    /// [`Error::Update`] when the value is not an `Update` (an object).
    pub fn from_value(value: serde_json::Value) -> Result<Self> {
        if !value.is_object() {
            return Err(not_an_object());
        }
        serde_json::from_value(value).map_err(|e| Error::Update(e.into()))
    }

    fn any_message(&self) -> Option<&Message> {
        self.message
            .as_ref()
            .or(self.edited_message.as_ref())
            .or(self.channel_post.as_ref())
            .or(self.edited_channel_post.as_ref())
    }

    fn chat_event(&self) -> Option<&ChatEvent> {
        self.chat_member
            .as_ref()
            .or(self.my_chat_member.as_ref())
            .or(self.chat_join_request.as_ref())
    }
}

fn not_an_object() -> Error {
    Error::Update(Box::new(crate::error::Message(
        "an update is a JSON object".to_owned(),
    )))
}

impl Update for TelegramUpdate {
    fn update_id(&self) -> Option<i64> {
        Some(self.update_id)
    }

    fn chat_migration(&self) -> Option<ChatMigration> {
        let m = self.message.as_ref()?;
        match (m.migrate_to_chat_id, m.migrate_from_chat_id) {
            (Some(to), _) => Some(ChatMigration {
                from: m.chat.id,
                to,
            }),
            (None, Some(from)) => Some(ChatMigration {
                from,
                to: m.chat.id,
            }),
            (None, None) => None,
        }
    }

    /// A message without text in `chat` from `user` (update id 0).
    fn for_event(chat: Option<i64>, thread: Option<i64>, user: Option<i64>) -> Option<Self> {
        let mut message = serde_json::json!({ "chat": { "id": chat? } });
        if let Some(user) = user {
            message["from"] = serde_json::json!({ "id": user });
        }
        if let Some(thread) = thread {
            message["message_thread_id"] = thread.into();
            message["is_topic_message"] = true.into();
        }
        Self::from_value(serde_json::json!({ "update_id": 0, "message": message })).ok()
    }

    fn kind(&self) -> UpdateKind {
        if self.message.is_some() {
            UpdateKind::Message
        } else if self.edited_message.is_some() {
            UpdateKind::EditedMessage
        } else if self.channel_post.is_some() {
            UpdateKind::ChannelPost
        } else if self.edited_channel_post.is_some() {
            UpdateKind::EditedChannelPost
        } else if self.callback_query.is_some() {
            UpdateKind::CallbackQuery
        } else {
            UpdateKind::Other
        }
    }

    fn chat_id(&self) -> Option<i64> {
        self.message
            .as_ref()
            .or(self.edited_message.as_ref())
            .or(self
                .callback_query
                .as_ref()
                .and_then(|c| c.message.as_ref()))
            .or(self.channel_post.as_ref())
            .or(self.edited_channel_post.as_ref())
            .map(|m| m.chat.id)
            .or_else(|| self.chat_event().map(|e| e.chat.id))
    }

    fn user_id(&self) -> Option<i64> {
        if let Some(cb) = &self.callback_query {
            return Some(cb.from.id);
        }
        if let Some(m) = self.any_message() {
            return m.from.as_ref().map(|u| u.id);
        }
        self.inline_query
            .as_ref()
            .or(self.chosen_inline_result.as_ref())
            .map(|f| f.from.id)
            .or_else(|| self.chat_event().map(|e| e.from.id))
    }

    fn sender_chat_id(&self) -> Option<i64> {
        // A callback query's message is the bot's; the button was pressed by `from`.
        if self.callback_query.is_some() {
            return None;
        }
        self.any_message()
            .and_then(|m| m.sender_chat.as_ref())
            .map(|c| c.id)
    }

    fn thread_id(&self) -> Option<i64> {
        self.any_message()
            .or(self
                .callback_query
                .as_ref()
                .and_then(|c| c.message.as_ref()))
            .and_then(|m| m.message_thread_id)
    }

    fn text(&self) -> Option<&str> {
        self.any_message().and_then(|m| m.text.as_deref())
    }

    fn callback_data(&self) -> Option<&str> {
        self.callback_query.as_ref().and_then(|c| c.data.as_deref())
    }

    fn callback_id(&self) -> Option<&str> {
        self.callback_query.as_ref().map(|c| c.id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_and_from_follow_telegraf() {
        let channel = TelegramUpdate::from_json(
            r#"{"update_id":3,"channel_post":{"message_id":1,"chat":{"id":-5},"text":"hi"}}"#,
        )
        .unwrap();
        assert_eq!((channel.chat_id(), channel.user_id()), (Some(-5), None));
        assert_eq!(channel.kind(), UpdateKind::ChannelPost);

        let inline_cb = TelegramUpdate::from_json(
            r#"{"update_id":4,"callback_query":{"id":"q","from":{"id":9},"data":"x"}}"#,
        )
        .unwrap();
        assert_eq!((inline_cb.chat_id(), inline_cb.user_id()), (None, Some(9)));
        assert_eq!(inline_cb.callback_data(), Some("x"));
        assert_eq!(inline_cb.message_text(), None);

        let edited = TelegramUpdate::from_json(
            r#"{"update_id":5,"edited_message":{"message_id":1,"chat":{"id":2},"from":{"id":3},"text":"/start"}}"#,
        )
        .unwrap();
        assert_eq!(edited.text(), Some("/start"));
        assert!(edited.command().is_none(), "edits are not commands");
    }

    #[test]
    fn bad_json_is_an_error_not_a_panic() {
        for bad in [
            "",
            "[]",
            "{\"update_id\":\"x\"}",
            "{\"update_id\":1,\"message\":{\"chat\":5}}",
            "[1,null,null,null,null,null,null,null,null,null,null]",
            " [1]",
            "\"{}\"",
        ] {
            assert!(
                matches!(TelegramUpdate::from_json(bad), Err(Error::Update(_))),
                "{bad}"
            );
        }
        let array = serde_json::json!([
            1, null, null, null, null, null, null, null, null, null, null
        ]);
        assert!(TelegramUpdate::from_value(array).is_err());
        assert!(TelegramUpdate::from_json(" \n{\"update_id\":1}").is_ok());
    }
}

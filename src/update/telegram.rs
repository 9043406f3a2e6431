//! Telegram Bot API `Update` JSON, without a bot framework.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};

use super::{ChatMigration, Contact, Location, Update, UpdateKind};
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
    /// `edited_message`. (The kinds other than `message` are boxed: an update is moved
    /// several times on its way, and holding five messages inline made every move
    /// copy them all.)
    pub edited_message: Option<Box<Message>>,
    /// `channel_post`.
    pub channel_post: Option<Box<Message>>,
    /// `edited_channel_post`.
    pub edited_channel_post: Option<Box<Message>>,
    /// `callback_query`.
    pub callback_query: Option<Box<CallbackQuery>>,
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
    /// `caption` (of a media message).
    pub caption: Option<String>,
    /// The largest size of `photo` (Telegram lists the sizes smallest first; only the
    /// last is kept).
    #[serde(default, deserialize_with = "largest_photo")]
    pub photo: Option<Box<PhotoSize>>,
    /// `document`.
    pub document: Option<Box<Document>>,
    /// `media_group_id` (an album).
    pub media_group_id: Option<String>,
    /// `contact`.
    pub contact: Option<Box<SharedContact>>,
    /// `location`.
    pub location: Option<Location>,
    /// `migrate_to_chat_id`: the group was upgraded to this supergroup (a service
    /// message in the old group). (A chat id is never 0; `NonZeroI64` keeps every
    /// update small.)
    #[serde(default, deserialize_with = "chat_id_or_none")]
    pub migrate_to_chat_id: Option<std::num::NonZeroI64>,
    /// `migrate_from_chat_id`: this supergroup was upgraded from that group (a service
    /// message in the new supergroup).
    #[serde(default, deserialize_with = "chat_id_or_none")]
    pub migrate_from_chat_id: Option<std::num::NonZeroI64>,
}

/// One size of a photo.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct PhotoSize {
    /// `file_id`.
    pub file_id: String,
    /// `width`.
    #[serde(default)]
    pub width: u32,
    /// `height`.
    #[serde(default)]
    pub height: u32,
}

/// A document (a file sent as such).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct Document {
    /// `file_id`.
    pub file_id: String,
}

/// A shared contact.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedContact {
    /// `phone_number`.
    pub phone_number: String,
    /// `first_name`.
    pub first_name: String,
    /// `last_name`.
    pub last_name: Option<String>,
    /// `user_id`.
    pub user_id: Option<i64>,
}

/// Keeps the last (largest) size of a `photo` array; each size's `file_id` is read
/// borrowed where the JSON allows, so only the kept one is allocated.
fn largest_photo<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<PhotoSize>>, D::Error> {
    #[derive(Deserialize)]
    struct Size<'a> {
        #[serde(borrow)]
        file_id: Cow<'a, str>,
        #[serde(default)]
        width: u32,
        #[serde(default)]
        height: u32,
    }
    struct Sizes;
    impl<'de> Visitor<'de> for Sizes {
        type Value = Option<Box<PhotoSize>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of photo sizes")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut last: Option<Size<'de>> = None;
            while let Some(size) = seq.next_element()? {
                last = Some(size);
            }
            Ok(last.map(|s| {
                Box::new(PhotoSize {
                    file_id: s.file_id.into_owned(),
                    width: s.width,
                    height: s.height,
                })
            }))
        }
    }
    d.deserialize_seq(Sizes)
}

/// A user's `language_code`, held inline (IETF tags are short: `en`, `pt-br`), so
/// reading it costs no allocation; a longer one is kept on the heap.
#[derive(Clone, PartialEq, Eq)]
pub struct LanguageCode(Code);

#[derive(Clone, PartialEq, Eq)]
enum Code {
    Inline { len: u8, bytes: [u8; 15] },
    Heap(Box<str>),
}

impl LanguageCode {
    /// The tag.
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            // Only whole strings are stored inline: the slice is valid UTF-8.
            Code::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            Code::Heap(s) => s,
        }
    }

    fn new(s: &str) -> Self {
        let mut bytes = [0; 15];
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= bytes.len() => {
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Self(Code::Inline { len, bytes })
            }
            _ => Self(Code::Heap(s.into())),
        }
    }
}

impl fmt::Debug for LanguageCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<'de> Deserialize<'de> for LanguageCode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = LanguageCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a language tag")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(LanguageCode::new(s))
            }
        }
        d.deserialize_str(V)
    }
}

/// A chat id, `None` for `0` (no chat has it) or `null`.
fn chat_id_or_none<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<std::num::NonZeroI64>, D::Error> {
    Ok(Option::<i64>::deserialize(d)?.and_then(std::num::NonZeroI64::new))
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
    /// `language_code`.
    pub language_code: Option<LanguageCode>,
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
            .or(self.edited_message.as_deref())
            .or(self.channel_post.as_deref())
            .or(self.edited_channel_post.as_deref())
    }

    /// Who caused the update (Telegraf's `ctx.from`).
    fn from(&self) -> Option<&User> {
        if let Some(cb) = &self.callback_query {
            return Some(&cb.from);
        }
        if let Some(m) = self.any_message() {
            return m.from.as_ref();
        }
        self.inline_query
            .as_ref()
            .or(self.chosen_inline_result.as_ref())
            .map(|f| &f.from)
            .or_else(|| self.chat_event().map(|e| &e.from))
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
                to: to.get(),
            }),
            (None, Some(from)) => Some(ChatMigration {
                from: from.get(),
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
            .or(self.edited_message.as_deref())
            .or(self
                .callback_query
                .as_ref()
                .and_then(|c| c.message.as_ref()))
            .or(self.channel_post.as_deref())
            .or(self.edited_channel_post.as_deref())
            .map(|m| m.chat.id)
            .or_else(|| self.chat_event().map(|e| e.chat.id))
    }

    fn user_id(&self) -> Option<i64> {
        self.from().map(|u| u.id)
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
        self.callback_query
            .as_deref()
            .and_then(|c| c.data.as_deref())
    }

    fn callback_id(&self) -> Option<&str> {
        self.callback_query.as_deref().map(|c| c.id.as_str())
    }

    fn message_id(&self) -> Option<i64> {
        self.any_message().map(|m| m.message_id)
    }

    fn callback_message_id(&self) -> Option<i64> {
        self.callback_query
            .as_ref()
            .and_then(|c| c.message.as_ref())
            .map(|m| m.message_id)
    }

    fn caption(&self) -> Option<&str> {
        self.any_message().and_then(|m| m.caption.as_deref())
    }

    fn photo_file_id(&self) -> Option<&str> {
        self.any_message()
            .and_then(|m| m.photo.as_ref())
            .map(|p| p.file_id.as_str())
    }

    fn document_file_id(&self) -> Option<&str> {
        self.any_message()
            .and_then(|m| m.document.as_ref())
            .map(|d| d.file_id.as_str())
    }

    fn media_group_id(&self) -> Option<&str> {
        self.any_message().and_then(|m| m.media_group_id.as_deref())
    }

    fn contact(&self) -> Option<Contact<'_>> {
        self.any_message()
            .and_then(|m| m.contact.as_ref())
            .map(|c| {
                Contact::new(
                    &c.phone_number,
                    &c.first_name,
                    c.last_name.as_deref(),
                    c.user_id,
                )
            })
    }

    fn location(&self) -> Option<Location> {
        self.any_message().and_then(|m| m.location)
    }

    fn language_code(&self) -> Option<&str> {
        self.from()
            .and_then(|u| u.language_code.as_ref())
            .map(LanguageCode::as_str)
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
    fn media_contacts_locations_and_languages_are_read() {
        let photo = TelegramUpdate::from_json(
            r#"{"update_id":6,"message":{"message_id":41,"chat":{"id":2},"from":{"id":3,"language_code":"pt-br"},
              "photo":[{"file_id":"small","file_unique_id":"s","width":90,"height":60},
                       {"file_id":"big","file_unique_id":"b","width":1280,"height":853}],
              "caption":"a view","media_group_id":"g1"}}"#,
        )
        .unwrap();
        assert_eq!(photo.message_id(), Some(41));
        assert_eq!(photo.photo_file_id(), Some("big"));
        assert_eq!(photo.caption(), Some("a view"));
        assert_eq!(photo.media_group_id(), Some("g1"));
        assert_eq!(photo.language_code(), Some("pt-br"));
        assert_eq!(photo.text(), None);

        let doc = TelegramUpdate::from_json(
            r#"{"update_id":7,"message":{"message_id":1,"chat":{"id":2},"from":{"id":3},
              "document":{"file_id":"doc","file_name":"a.pdf"},
              "contact":{"phone_number":"+1","first_name":"Ann","user_id":3},
              "location":{"latitude":51.5,"longitude":-0.12}}}"#,
        )
        .unwrap();
        assert_eq!(doc.document_file_id(), Some("doc"));
        let c = doc.contact().unwrap();
        assert_eq!(
            (c.phone_number, c.first_name, c.last_name, c.user_id),
            ("+1", "Ann", None, Some(3))
        );
        assert_eq!(doc.location(), Some(Location::new(51.5, -0.12)));
        assert_eq!(doc.language_code(), None);

        let press = TelegramUpdate::from_json(
            r#"{"update_id":8,"callback_query":{"id":"q","from":{"id":3,"language_code":"a-very-long-language-tag"},
              "message":{"message_id":77,"chat":{"id":2}},"data":"~0a1b2c:yes"}}"#,
        )
        .unwrap();
        assert_eq!(press.callback_message_id(), Some(77));
        assert_eq!(press.message_id(), None);
        assert_eq!(press.callback_payload(), Some("yes"));
        assert_eq!(press.callback_data(), Some("~0a1b2c:yes"));
        assert_eq!(press.language_code(), Some("a-very-long-language-tag"));
        // The same through a JSON value (owned strings).
        let value: serde_json::Value = serde_json::from_str(
            r#"{"update_id":9,"message":{"message_id":1,"chat":{"id":2},"photo":[{"file_id":"x\u0041"}]}}"#,
        )
        .unwrap();
        assert_eq!(
            TelegramUpdate::from_value(value).unwrap().photo_file_id(),
            Some("xA")
        );
        for bad in [
            r#"{"update_id":1,"message":{"message_id":1,"chat":{"id":2},"photo":{"file_id":"x"}}}"#,
            r#"{"update_id":1,"message":{"message_id":1,"chat":{"id":2},"photo":[{"width":3}]}}"#,
            r#"{"update_id":1,"message":{"message_id":1,"chat":{"id":2},"from":{"id":1,"language_code":5}}}"#,
            r#"{"update_id":1,"message":{"message_id":1,"chat":{"id":2},"location":{"latitude":"n"}}}"#,
        ] {
            assert!(
                matches!(TelegramUpdate::from_json(bad), Err(Error::Update(_))),
                "{bad}"
            );
        }
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

//! What the stage needs to know about an incoming update.
//!
//! The core is transport-agnostic: anything that implements [`Update`] can be routed.
//! [`TelegramUpdate`] deserializes Telegram Bot API `Update` JSON without any bot
//! framework; the `teloxide` feature implements [`Update`] for teloxide's own type.

mod telegram;

pub use telegram::{
    CallbackQuery, Chat, ChatEvent, Document, FromOnly, LanguageCode, Message, PhotoSize,
    SharedContact, TelegramUpdate, User,
};

/// The kind of an update, as far as routing cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum UpdateKind {
    /// A new message.
    Message,
    /// An edited message.
    EditedMessage,
    /// A new channel post.
    ChannelPost,
    /// An edited channel post.
    EditedChannelPost,
    /// A callback query (an inline keyboard button was pressed).
    CallbackQuery,
    /// Anything else (inline queries, chat member updates, ...).
    Other,
}

/// A bot command: `/name args` or `/name@bot args`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Command<'a> {
    /// The command name without `/` and without `@bot`.
    pub name: &'a str,
    /// The bot username after `@`, if any.
    pub bot: Option<&'a str>,
    /// The rest of the text after the command, trimmed.
    pub args: &'a str,
}

impl<'a> Command<'a> {
    /// Parses a command the way Telegram marks `bot_command` entities at offset 0:
    /// `/` followed by 1–32 of `[A-Za-z0-9_]`, optionally `@botname`, then whitespace or the end.
    #[must_use]
    pub fn parse(text: &'a str) -> Option<Self> {
        let rest = text.strip_prefix('/')?;
        // The token runs over command bytes (ASCII: scanned bytewise); it must end at
        // whitespace or the end of the text.
        let end = rest
            .bytes()
            .position(|b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b'@'))
            .unwrap_or(rest.len());
        let (token, args) = rest.split_at(end);
        if !args.chars().next().is_none_or(char::is_whitespace) {
            return None;
        }
        let (name, bot) = match token.split_once('@') {
            Some((name, bot)) => (name, Some(bot)),
            None => (token, None),
        };
        let valid = |s: &str| !s.is_empty() && !s.contains('@');
        if !valid(name) || name.len() > 32 || bot.is_some_and(|b| !valid(b)) {
            return None;
        }
        Some(Self {
            name,
            bot,
            args: args.trim(),
        })
    }
}

/// A group upgraded to a supergroup: its chat id changed from `from` to `to` (see
/// [`Update::chat_migration`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatMigration {
    /// The old group's chat id.
    pub from: i64,
    /// The new supergroup's chat id.
    pub to: i64,
}

/// A shared contact (a message's `contact`), borrowed from the update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Contact<'a> {
    /// `phone_number`.
    pub phone_number: &'a str,
    /// `first_name`.
    pub first_name: &'a str,
    /// `last_name`.
    pub last_name: Option<&'a str>,
    /// `user_id`, when the contact is a Telegram user.
    pub user_id: Option<i64>,
}

impl<'a> Contact<'a> {
    /// A contact (for implementations of [`Update::contact`]).
    #[must_use]
    pub fn new(
        phone_number: &'a str,
        first_name: &'a str,
        last_name: Option<&'a str>,
        user_id: Option<i64>,
    ) -> Self {
        Self {
            phone_number,
            first_name,
            last_name,
            user_id,
        }
    }
}

/// A shared location (a message's `location`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Deserialize)]
#[non_exhaustive]
pub struct Location {
    /// `latitude`.
    pub latitude: f64,
    /// `longitude`.
    pub longitude: f64,
}

impl Location {
    /// A location (for implementations of [`Update::location`]).
    #[must_use]
    pub fn new(latitude: f64, longitude: f64) -> Self {
        Self {
            latitude,
            longitude,
        }
    }
}

/// What the session and the stage read from an update.
///
/// Implement it for your own update type to drive stagecraft from any transport. An
/// update is plain data: `Clone` lets the rare rerun of an update (after a
/// compare-and-set conflict) have it again without keeping every update behind an
/// extra allocation.
///
/// Only seven methods are required; the rest default to "absent". Lines typed into a
/// terminal, say, as updates of user 1 in chat 1:
///
/// ```
/// use stagecraft::prelude::*;
/// use stagecraft::transport::RecordingTransport;
/// use stagecraft::update::{Update, UpdateKind};
///
/// #[derive(Clone)]
/// struct Line(String);
///
/// impl Update for Line {
///     fn update_id(&self) -> Option<i64> { None } // no ids: no de-duplication
///     fn kind(&self) -> UpdateKind { UpdateKind::Message }
///     fn chat_id(&self) -> Option<i64> { Some(1) }
///     fn user_id(&self) -> Option<i64> { Some(1) }
///     fn thread_id(&self) -> Option<i64> { None }
///     fn text(&self) -> Option<&str> { Some(&self.0) }
///     fn callback_data(&self) -> Option<&str> { None }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let replies = RecordingTransport::new();
/// let bot = Pipeline::<u32, Line>::builder()
///     .transport(replies.clone())
///     .command("count", |cx: Cx<u32, Line>| async move {
///         let n = cx.session_mut(|n| { *n += 1; *n })?;
///         cx.reply(format!("{n}"));
///         Ok(Outcome::Handled)
///     })
///     .build();
/// bot.handle(Line("/count".into())).await.unwrap();
/// bot.handle(Line("/count".into())).await.unwrap();
/// assert_eq!(replies.texts(), ["1", "2"]);
/// # });
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be routed by stagecraft",
    note = "implement `stagecraft::update::Update` for it, or use `TelegramUpdate`"
)]
pub trait Update: Clone + Send + Sync + 'static {
    /// The update's id, if the transport has one.
    fn update_id(&self) -> Option<i64>;
    /// What kind of update this is.
    fn kind(&self) -> UpdateKind;
    /// The chat it happened in (Telegraf's `ctx.chat`).
    fn chat_id(&self) -> Option<i64>;
    /// The user who caused it (Telegraf's `ctx.from`).
    fn user_id(&self) -> Option<i64>;
    /// The chat a message was sent on behalf of (Telegram's `sender_chat`): the group
    /// itself for its anonymous administrators, a channel for a user who posts as that
    /// channel (or for a channel's post forwarded into its discussion group). `None` for
    /// updates that are not messages, and by default.
    fn sender_chat_id(&self) -> Option<i64> {
        None
    }

    /// Who sent the update, as sessions tell senders apart: the
    /// [`sender_chat_id`](Self::sender_chat_id) when a message was sent on behalf of a
    /// chat (its `from` is then a placeholder that Telegram gives everyone who does so:
    /// `GroupAnonymousBot`, `Channel_Bot`), the [`user_id`](Self::user_id) otherwise;
    /// `None` without a user (a channel post).
    fn sender_id(&self) -> Option<i64> {
        let user = self.user_id()?;
        Some(self.sender_chat_id().unwrap_or(user))
    }
    /// The forum topic (message thread), if any.
    fn thread_id(&self) -> Option<i64>;
    /// The text of the message, edited message or channel post (not captions).
    fn text(&self) -> Option<&str>;
    /// The data of a callback query.
    fn callback_data(&self) -> Option<&str>;
    /// The id of a callback query (to answer it).
    fn callback_id(&self) -> Option<&str> {
        None
    }

    /// The data of a callback query without the step tag stagecraft's bound buttons
    /// carry ([`Button::callback`](crate::transport::Button::callback)); data without a
    /// tag as it is.
    fn callback_payload(&self) -> Option<&str> {
        self.callback_data().map(crate::transport::callback_payload)
    }

    /// The id of the message of a message, edited message or channel post update.
    fn message_id(&self) -> Option<i64> {
        None
    }

    /// The id of the message whose button a callback query pressed (absent for
    /// buttons on inline messages).
    fn callback_message_id(&self) -> Option<i64> {
        None
    }

    /// The caption of a photo, document or other media message.
    fn caption(&self) -> Option<&str> {
        None
    }

    /// The `file_id` of a photo message's largest size.
    fn photo_file_id(&self) -> Option<&str> {
        None
    }

    /// The `file_id` of a document message.
    fn document_file_id(&self) -> Option<&str> {
        None
    }

    /// The album a media message belongs to.
    fn media_group_id(&self) -> Option<&str> {
        None
    }

    /// The contact a message shares.
    fn contact(&self) -> Option<Contact<'_>> {
        None
    }

    /// The location a message shares.
    fn location(&self) -> Option<Location> {
        None
    }

    /// The IETF language tag of the user's Telegram client (`from.language_code`).
    fn language_code(&self) -> Option<&str> {
        None
    }

    /// The text of a *new* message or channel post (not an edit, not a callback).
    fn message_text(&self) -> Option<&str> {
        match self.kind() {
            UpdateKind::Message | UpdateKind::ChannelPost => self.text(),
            _ => None,
        }
    }

    /// The command of a new message or channel post, as Telegraf's `command()` sees it.
    fn command(&self) -> Option<Command<'_>> {
        self.message_text().and_then(Command::parse)
    }

    /// The upgrade of a group to a supergroup this update announces: Telegram's
    /// service message with `migrate_to_chat_id` (in the old group) or
    /// `migrate_from_chat_id` (in the new supergroup). The pipeline takes such an update
    /// itself and moves the old chat's sessions to the new chat id
    /// ([`Pipeline::migrate_chat`](crate::Pipeline::migrate_chat)); no handler sees it.
    /// `None` (the default): not one.
    fn chat_migration(&self) -> Option<ChatMigration> {
        None
    }

    /// An update that stands for an event of a session without an incoming update (a
    /// timeout firing): in `chat` (and forum topic `thread`), from `user`, with no text.
    /// It is what the event's handler sees as [`Cx::update`](crate::Cx::update), and
    /// where its replies go. `None` (the default): this update type cannot stand for
    /// one, so timeouts cannot fire for it.
    fn for_event(chat: Option<i64>, thread: Option<i64>, user: Option<i64>) -> Option<Self> {
        let _ = (chat, thread, user);
        None
    }
}

impl<T: Update> Update for std::sync::Arc<T> {
    fn update_id(&self) -> Option<i64> {
        (**self).update_id()
    }
    fn kind(&self) -> UpdateKind {
        (**self).kind()
    }
    fn chat_id(&self) -> Option<i64> {
        (**self).chat_id()
    }
    fn user_id(&self) -> Option<i64> {
        (**self).user_id()
    }
    fn sender_chat_id(&self) -> Option<i64> {
        (**self).sender_chat_id()
    }
    fn sender_id(&self) -> Option<i64> {
        (**self).sender_id()
    }
    fn thread_id(&self) -> Option<i64> {
        (**self).thread_id()
    }
    fn text(&self) -> Option<&str> {
        (**self).text()
    }
    fn callback_data(&self) -> Option<&str> {
        (**self).callback_data()
    }
    fn callback_id(&self) -> Option<&str> {
        (**self).callback_id()
    }
    fn for_event(chat: Option<i64>, thread: Option<i64>, user: Option<i64>) -> Option<Self> {
        T::for_event(chat, thread, user).map(std::sync::Arc::new)
    }
    fn chat_migration(&self) -> Option<ChatMigration> {
        (**self).chat_migration()
    }
    fn callback_payload(&self) -> Option<&str> {
        (**self).callback_payload()
    }
    fn message_id(&self) -> Option<i64> {
        (**self).message_id()
    }
    fn callback_message_id(&self) -> Option<i64> {
        (**self).callback_message_id()
    }
    fn caption(&self) -> Option<&str> {
        (**self).caption()
    }
    fn photo_file_id(&self) -> Option<&str> {
        (**self).photo_file_id()
    }
    fn document_file_id(&self) -> Option<&str> {
        (**self).document_file_id()
    }
    fn media_group_id(&self) -> Option<&str> {
        (**self).media_group_id()
    }
    fn contact(&self) -> Option<Contact<'_>> {
        (**self).contact()
    }
    fn location(&self) -> Option<Location> {
        (**self).location()
    }
    fn language_code(&self) -> Option<&str> {
        (**self).language_code()
    }
}

#[cfg(test)]
mod tests {
    use super::Command;

    #[test]
    fn commands_parse_like_telegram() {
        let c = Command::parse("/start").unwrap();
        assert_eq!((c.name, c.bot, c.args), ("start", None, ""));
        let c = Command::parse("/start@my_bot  hello world ").unwrap();
        assert_eq!(
            (c.name, c.bot, c.args),
            ("start", Some("my_bot"), "hello world")
        );
        assert!(Command::parse("start").is_none());
        assert!(Command::parse("/").is_none());
        assert!(Command::parse("/ start").is_none());
        assert!(Command::parse("/st-art").is_none());
        assert!(Command::parse("/start@").is_none());
        assert!(Command::parse("/привет").is_none());
        let c = Command::parse("/go\u{a0}on").unwrap();
        assert_eq!(
            (c.name, c.args),
            ("go", "on"),
            "any Unicode whitespace ends it"
        );
    }

    /// The bytewise scan agrees with the plain definition (token up to the first
    /// whitespace, then checked) on every text built from a small alphabet.
    #[test]
    fn the_bytewise_scan_agrees_with_the_definition() {
        fn reference(text: &str) -> Option<(&str, Option<&str>, &str)> {
            let rest = text.strip_prefix('/')?;
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let (token, args) = rest.split_at(end);
            let (name, bot) = match token.split_once('@') {
                Some((n, b)) => (n, Some(b)),
                None => (token, None),
            };
            let valid = |s: &str| {
                !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            if !valid(name) || name.len() > 32 || bot.is_some_and(|b| !valid(b)) {
                return None;
            }
            Some((name, bot, args.trim()))
        }
        let alphabet = ["/", "a", "_", "@", " ", "-", "ä", "\u{a0}", "9", "\n"];
        let mut texts = vec![String::new()];
        for _ in 0..5 {
            let longer: Vec<String> = texts
                .iter()
                .flat_map(|t| alphabet.iter().map(move |c| format!("{t}{c}")))
                .collect();
            texts.extend(longer);
        }
        for t in &texts {
            let got = Command::parse(t).map(|c| (c.name, c.bot, c.args));
            assert_eq!(got, reference(t), "{t:?}");
        }
    }
}

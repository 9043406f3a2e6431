//! stagecraft inside a teloxide bot: teloxide's `Update` routed by the stage, replies sent
//! through `Bot`, and a dptree entry point for teloxide's `Dispatcher`.
//!
//! Three pieces:
//!
//! - [`Update`] is implemented for
//!   [`teloxide::types::Update`], so a
//!   `Pipeline<S, teloxide::types::Update>` routes teloxide's own updates.
//! - [`TeloxideTransport`] sends the replies handlers make with [`Cx::reply`](crate::Cx::reply)
//!   through [`Bot::send_message`](::teloxide::requests::Requester::send_message) (and
//!   callback answers through `answer_callback_query`). [`TeloxideBuilderExt::teloxide_bot`]
//!   installs it and makes the `Bot` available to handlers through
//!   [`Cx::extension`](crate::Cx::extension).
//! - [`enter_stage`] (or [`StageHandlerExt::enter_stage`]) is a dptree handler that runs the
//!   pipeline for each update. Updates the pipeline takes stop there; updates nothing in
//!   the pipeline took ([`Dispatch::Unhandled`]) continue down the dptree chain, so
//!   ordinary teloxide handlers can sit after it. A pipeline error goes to the
//!   dispatcher's error handler (and is logged with `tracing`).
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use stagecraft::adapters::teloxide::{TeloxideBuilderExt, enter_stage};
//! use stagecraft::prelude::*;
//! use teloxide::prelude::*;
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Data { greeted: bool }
//!
//! type C = Cx<Data, teloxide::types::Update>;
//!
//! #[tokio::main]
//! async fn main() {
//!     let bot = Bot::from_env();
//!     let pipeline = Pipeline::<Data, teloxide::types::Update>::builder()
//!         .teloxide_bot(bot.clone())
//!         .command("start", |cx: C| async move {
//!             cx.session_mut(|d| d.greeted = true)?;
//!             cx.reply("Hello!");
//!             Ok(Outcome::Handled)
//!         })
//!         .build();
//!     let handler = dptree::entry()
//!         .branch(enter_stage::<_, BoxError>(pipeline))
//!         // Whatever the pipeline did not take ends up here.
//!         .branch(Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
//!             bot.send_message(msg.chat.id, "Send /start.").await?;
//!             Ok(())
//!         }));
//!     Dispatcher::builder(bot, handler).build().dispatch().await;
//! }
//! ```
//!
//! # Session keys and teloxide's distribution
//!
//! teloxide's `Dispatcher` gives every **chat** a worker that handles the chat's updates
//! one after another (its default distribution function is `update.chat()`); different
//! chats run concurrently. stagecraft's default session key is the **user in the chat**
//! ([`KeyStrategy::UserInChat`](crate::session::KeyStrategy::UserInChat)), which is finer: in a group,
//! each member has their own session.
//!
//! The two fit together. With the default distribution, a group's updates run one at a
//! time, so each member's updates are certainly in order. With a finer distribution
//! function (for example per user, `|u| u.from().map(|u| u.id)`, or none at all), updates
//! of one group run concurrently, and stagecraft's own per-key queue still keeps each
//! session's updates in arrival order: [`Pipeline::handle`] joins the key's queue when
//! it is called. What no distribution can give is more than the session key: with
//! [`KeyStrategy::Chat`](crate::session::KeyStrategy::Chat) (one session per group) and a per-user
//! distribution, members' updates still never interleave inside the session, because
//! stagecraft orders by its own key, but they are handled in the order they reach the
//! pipeline, not strictly in `update_id` order across members.
//!
//! In short: any distribution function is safe for sessions, and the default one (per
//! chat) also keeps a whole group in order; a finer one buys concurrency between the
//! members of a group.
//!
//! # Which chat and user an update has
//!
//! As in Telegraf: the chat of a message, edited message, channel post, callback query
//! (its message) or chat event; the user who sent the message or pressed the button (a
//! callback query's `from` is the user who pressed it, not the author of the message).
//! Reactions and boosts carry their chat too, as teloxide's `Update::chat` has it. The
//! thread id is the message's `message_thread_id` when it is a forum-topic message
//! (`is_topic_message`), so replies go to the same topic.
//!
//! # TLS
//!
//! stagecraft depends on teloxide with `default-features = false` and picks no TLS
//! backend: your own `teloxide` dependency (its default `native-tls`, or `rustls`) does.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::panic::Location;

use ::teloxide::Bot;
use ::teloxide::dispatching::{DpHandlerDescription, UpdateHandler};
use ::teloxide::dptree::di::DependencyMap;
use ::teloxide::dptree::{self, HandlerDescription, HandlerSignature, Type};
use ::teloxide::payloads::{
    AnswerCallbackQuerySetters, EditMessageReplyMarkupSetters, EditMessageTextSetters,
    SendDocumentSetters, SendMessageSetters, SendPhotoSetters,
};
use ::teloxide::requests::{Request as _, Requester};
use ::teloxide::types::{
    CallbackQueryId, ChatId, FileId, InlineKeyboardMarkup, InputFile, Message, MessageId,
    ParseMode as TgParseMode, ReplyMarkup as TgMarkup, ThreadId, Update as TgUpdate,
    UpdateKind as TgKind,
};
use async_trait::async_trait;

pub use ::teloxide;

use crate::error::error_chain;
use crate::error::{BoxError, Error};
use crate::pipeline::{Dispatch, Pipeline, PipelineBuilder};
use crate::session::SessionData;
use crate::transport::{Delivered, Outgoing, ParseMode, ReplyMarkup, Transport};
use crate::update::{Contact, Update, UpdateKind};

/// The message an update is about: a (new or edited) message or channel post, or the
/// message of a callback query's button.
fn message_of(update: &TgUpdate) -> Option<&Message> {
    match &update.kind {
        TgKind::Message(m)
        | TgKind::EditedMessage(m)
        | TgKind::ChannelPost(m)
        | TgKind::EditedChannelPost(m) => Some(m),
        TgKind::CallbackQuery(q) => q.message.as_ref().and_then(|m| m.regular_message()),
        _ => None,
    }
}

/// teloxide's `Update` routed by stagecraft.
///
/// ```
/// use stagecraft::update::{Update as _, UpdateKind};
/// use teloxide::types::Update;
///
/// let u: Update = serde_json::from_str(r#"{"update_id":1,"callback_query":{"id":"q",
///     "from":{"id":7,"is_bot":false,"first_name":"A"},"chat_instance":"c","data":"yes",
///     "message":{"message_id":5,"date":0,"chat":{"id":-100,"type":"group","title":"G"},
///     "from":{"id":1,"is_bot":true,"first_name":"Bot"},"text":"Sure?"}}}"#).unwrap();
/// assert_eq!(u.kind(), UpdateKind::CallbackQuery);
/// // The chat of the button's message, the user who pressed it.
/// assert_eq!((u.chat_id(), u.user_id()), (Some(-100), Some(7)));
/// assert_eq!((u.callback_data(), u.callback_id()), (Some("yes"), Some("q")));
/// assert_eq!(u.message_text(), None);
/// ```
impl Update for TgUpdate {
    fn update_id(&self) -> Option<i64> {
        Some(i64::from(self.id.0))
    }

    fn chat_migration(&self) -> Option<crate::update::ChatMigration> {
        let TgKind::Message(m) = &self.kind else {
            return None;
        };
        if let Some(to) = m.migrate_to_chat_id() {
            return Some(crate::update::ChatMigration {
                from: m.chat.id.0,
                to: to.0,
            });
        }
        m.migrate_from_chat_id()
            .map(|from| crate::update::ChatMigration {
                from: from.0,
                to: m.chat.id.0,
            })
    }

    /// An empty text message in `chat` from `user` (update id 0, message id 0).
    fn for_event(chat: Option<i64>, thread: Option<i64>, user: Option<i64>) -> Option<Self> {
        let chat = chat?;
        let kind = if Some(chat) == user {
            serde_json::json!({ "id": chat, "type": "private", "first_name": "" })
        } else {
            serde_json::json!({ "id": chat, "type": "supergroup", "title": "" })
        };
        let mut message = serde_json::json!({
            "message_id": 0, "date": 0, "chat": kind, "text": "",
        });
        if let Some(user) = user {
            message["from"] = serde_json::json!({ "id": user, "is_bot": false, "first_name": "" });
        }
        if let Some(thread) = thread {
            message["message_thread_id"] = thread.into();
            message["is_topic_message"] = true.into();
        }
        serde_json::from_value(serde_json::json!({ "update_id": 0, "message": message })).ok()
    }

    fn kind(&self) -> UpdateKind {
        match &self.kind {
            TgKind::Message(_) => UpdateKind::Message,
            TgKind::EditedMessage(_) => UpdateKind::EditedMessage,
            TgKind::ChannelPost(_) => UpdateKind::ChannelPost,
            TgKind::EditedChannelPost(_) => UpdateKind::EditedChannelPost,
            TgKind::CallbackQuery(_) => UpdateKind::CallbackQuery,
            _ => UpdateKind::Other,
        }
    }

    fn chat_id(&self) -> Option<i64> {
        self.chat().map(|c| c.id.0)
    }

    fn user_id(&self) -> Option<i64> {
        // `from()` of a callback query is the user who pressed the button.
        self.from().and_then(|u| i64::try_from(u.id.0).ok())
    }

    fn sender_chat_id(&self) -> Option<i64> {
        match &self.kind {
            TgKind::Message(m)
            | TgKind::EditedMessage(m)
            | TgKind::ChannelPost(m)
            | TgKind::EditedChannelPost(m) => m.sender_chat.as_ref().map(|c| c.id.0),
            _ => None,
        }
    }

    fn thread_id(&self) -> Option<i64> {
        message_of(self)
            .filter(|m| m.is_topic_message)
            .and_then(|m| m.thread_id)
            .map(|t| i64::from(t.0.0))
    }

    fn text(&self) -> Option<&str> {
        match &self.kind {
            TgKind::Message(m)
            | TgKind::EditedMessage(m)
            | TgKind::ChannelPost(m)
            | TgKind::EditedChannelPost(m) => m.text(),
            _ => None,
        }
    }

    fn callback_data(&self) -> Option<&str> {
        match &self.kind {
            TgKind::CallbackQuery(q) => q.data.as_deref(),
            _ => None,
        }
    }

    fn callback_id(&self) -> Option<&str> {
        match &self.kind {
            TgKind::CallbackQuery(q) => Some(q.id.0.as_str()),
            _ => None,
        }
    }

    fn message_id(&self) -> Option<i64> {
        own_message(self).map(|m| i64::from(m.id.0))
    }

    fn callback_message_id(&self) -> Option<i64> {
        match &self.kind {
            TgKind::CallbackQuery(q) => q.message.as_ref().map(|m| i64::from(m.id().0)),
            _ => None,
        }
    }

    fn caption(&self) -> Option<&str> {
        own_message(self).and_then(Message::caption)
    }

    fn photo_file_id(&self) -> Option<&str> {
        own_message(self)
            .and_then(Message::photo)
            .and_then(<[_]>::last)
            .map(|p| p.file.id.0.as_str())
    }

    fn document_file_id(&self) -> Option<&str> {
        own_message(self)
            .and_then(Message::document)
            .map(|d| d.file.id.0.as_str())
    }

    fn media_group_id(&self) -> Option<&str> {
        own_message(self)
            .and_then(Message::media_group_id)
            .map(|g| g.0.as_str())
    }

    fn contact(&self) -> Option<Contact<'_>> {
        own_message(self).and_then(Message::contact).map(|c| {
            Contact::new(
                &c.phone_number,
                &c.first_name,
                c.last_name.as_deref(),
                c.user_id.and_then(|u| i64::try_from(u.0).ok()),
            )
        })
    }

    fn location(&self) -> Option<crate::update::Location> {
        own_message(self)
            .and_then(Message::location)
            .map(|l| crate::update::Location::new(l.latitude, l.longitude))
    }

    fn language_code(&self) -> Option<&str> {
        self.from().and_then(|u| u.language_code.as_deref())
    }
}

/// The message of a (new or edited) message or channel post update.
fn own_message(update: &TgUpdate) -> Option<&Message> {
    match &update.kind {
        TgKind::Message(m)
        | TgKind::EditedMessage(m)
        | TgKind::ChannelPost(m)
        | TgKind::EditedChannelPost(m) => Some(m),
        _ => None,
    }
}

/// Sends a pipeline's replies through a teloxide [`Bot`], each call with its Bot API
/// method: [`Outgoing::Text`] with `sendMessage` (in the same forum topic when the
/// update came from one), photos and documents with `sendPhoto` and `sendDocument` (an
/// `http(s)://` address as a URL, anything else as a `file_id`), edits with
/// `editMessageText` and `editMessageReplyMarkup`, `deleteMessage`, and
/// [`Outgoing::AnswerCallback`] with `answerCallbackQuery`; parse modes and keyboards go
/// with them. The id of each message sent is reported back
/// ([`Transport::deliver`]), for replies made with
/// [`Reply::remember`](crate::transport::Reply::remember).
///
/// ```
/// use stagecraft::adapters::teloxide::TeloxideTransport;
/// use stagecraft::prelude::*;
/// use teloxide::Bot;
///
/// let bot = Bot::new("TOKEN");
/// let pipeline = Pipeline::<(), teloxide::types::Update>::builder()
///     .transport(TeloxideTransport::new(bot.clone()))
///     .extension(bot)
///     .build();
/// # drop(pipeline);
/// ```
///
/// A call Telegram refuses with 429 Too Many Requests (its flood control) is sent again
/// after the `retry_after` it asks for, up to three times, while the wait is at most
/// [`max_retry_after`](Self::max_retry_after) (default 60 s); then its error is the
/// reply's error.
///
/// Any teloxide [`Requester`] will do, not only [`Bot`]: its adaptors
/// (`Throttle<Bot>`, `CacheMe<Bot>`, `DefaultParseMode<Bot>`, ...) through
/// [`with_requester`](Self::with_requester).
///
/// ```
/// use stagecraft::adapters::teloxide::TeloxideTransport;
/// use stagecraft::prelude::*;
/// use teloxide::Bot;
/// use teloxide::requests::RequesterExt;
/// use teloxide::types::ParseMode;
///
/// // Every text without a parse mode of its own is read as HTML.
/// let bot = Bot::new("TOKEN").parse_mode(ParseMode::Html);
/// let pipeline = Pipeline::<(), teloxide::types::Update>::builder()
///     .transport(TeloxideTransport::with_requester(bot))
///     .build();
/// # drop(pipeline);
/// ```
#[derive(Clone)]
pub struct TeloxideTransport<R = Bot> {
    bot: R,
    /// What `Debug` shows of it (never a token).
    shown: String,
    max_retry_after: std::time::Duration,
}

/// How often a call refused with 429 is sent again.
const RETRIES_AFTER_429: usize = 3;

/// Shows the Bot API server (its URL without a password) of a [`Bot`], the type of
/// another requester; never the bot token (`Bot`'s own `Debug` prints it).
impl<R> std::fmt::Debug for TeloxideTransport<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TeloxideTransport")
            .field("api_url", &self.shown)
            .finish_non_exhaustive()
    }
}

impl TeloxideTransport {
    /// Replies through `bot`.
    #[must_use]
    pub fn new(bot: Bot) -> Self {
        let shown = crate::store::redact_url(bot.api_url().as_str());
        Self {
            bot,
            shown,
            max_retry_after: std::time::Duration::from_secs(60),
        }
    }
}

impl<R> TeloxideTransport<R> {
    /// Replies through any teloxide requester (a [`Bot`] wrapped in adaptors).
    #[must_use]
    pub fn with_requester(requester: R) -> Self {
        Self {
            bot: requester,
            shown: format!("(through {})", std::any::type_name::<R>()),
            max_retry_after: std::time::Duration::from_secs(60),
        }
    }

    /// The longest `retry_after` of a 429 answer waited out before the call is sent
    /// again (default 60 s; zero never waits).
    #[must_use]
    pub fn max_retry_after(mut self, wait: std::time::Duration) -> Self {
        self.max_retry_after = wait;
        self
    }

    /// The bot (or requester) replies go through.
    pub fn bot(&self) -> &R {
        &self.bot
    }
}

#[async_trait]
impl<R> Transport for TeloxideTransport<R>
where
    R: Requester + Send + Sync + 'static,
    R::Err: std::error::Error + Send + Sync + 'static,
{
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        self.deliver(msg).await.map(drop)
    }

    async fn deliver(&self, msg: &Outgoing) -> Result<Delivered, BoxError> {
        let mut retries = 0;
        loop {
            let err = match self.call(msg).await {
                Ok(done) => return Ok(done),
                Err(e) => e,
            };
            let wait = match err.downcast_ref::<::teloxide::RequestError>() {
                Some(::teloxide::RequestError::RetryAfter(s)) => s.duration(),
                _ => return Err(err),
            };
            if retries >= RETRIES_AFTER_429 || wait > self.max_retry_after {
                return Err(err);
            }
            retries += 1;
            tracing::warn!(target: "stagecraft::teloxide", method = msg.method(), ?wait, retries,
                "Telegram asked to retry later (429); waiting");
            tokio::time::sleep(wait).await;
        }
    }
}

impl<R> TeloxideTransport<R>
where
    R: Requester + Send + Sync + 'static,
    R::Err: std::error::Error + Send + Sync + 'static,
{
    /// Makes the call once.
    async fn call(&self, msg: &Outgoing) -> Result<Delivered, BoxError> {
        let sent = |m: Message| Delivered::message(i64::from(m.id.0));
        Ok(match msg {
            Outgoing::Text {
                chat_id,
                thread_id,
                text,
                parse_mode,
                reply_markup,
                ..
            } => {
                let fut = {
                    let mut req = self.bot.send_message(ChatId(*chat_id), text.as_str());
                    if let Some(thread) = thread_of(*thread_id)? {
                        req = req.message_thread_id(thread);
                    }
                    if let Some(mode) = parse_mode {
                        req = req.parse_mode(parse_mode_of(*mode));
                    }
                    if let Some(markup) = reply_markup {
                        req = req.reply_markup(markup_of(markup)?);
                    }
                    req.send()
                };
                sent(fut.await?)
            }
            Outgoing::Photo {
                chat_id,
                thread_id,
                photo,
                caption,
                parse_mode,
                reply_markup,
                ..
            } => {
                let fut = {
                    let mut req = self.bot.send_photo(ChatId(*chat_id), input_file(photo)?);
                    if let Some(thread) = thread_of(*thread_id)? {
                        req = req.message_thread_id(thread);
                    }
                    if let Some(caption) = caption {
                        req = req.caption(caption.as_str());
                    }
                    if let Some(mode) = parse_mode {
                        req = req.parse_mode(parse_mode_of(*mode));
                    }
                    if let Some(markup) = reply_markup {
                        req = req.reply_markup(markup_of(markup)?);
                    }
                    req.send()
                };
                sent(fut.await?)
            }
            Outgoing::Document {
                chat_id,
                thread_id,
                document,
                caption,
                parse_mode,
                reply_markup,
                ..
            } => {
                let fut = {
                    let mut req = self
                        .bot
                        .send_document(ChatId(*chat_id), input_file(document)?);
                    if let Some(thread) = thread_of(*thread_id)? {
                        req = req.message_thread_id(thread);
                    }
                    if let Some(caption) = caption {
                        req = req.caption(caption.as_str());
                    }
                    if let Some(mode) = parse_mode {
                        req = req.parse_mode(parse_mode_of(*mode));
                    }
                    if let Some(markup) = reply_markup {
                        req = req.reply_markup(markup_of(markup)?);
                    }
                    req.send()
                };
                sent(fut.await?)
            }
            Outgoing::EditText {
                chat_id,
                message_id,
                text,
                parse_mode,
                reply_markup,
                ..
            } => {
                let fut = {
                    let mut req = self.bot.edit_message_text(
                        ChatId(*chat_id),
                        message_of_id(*message_id)?,
                        text.as_str(),
                    );
                    if let Some(mode) = parse_mode {
                        req = req.parse_mode(parse_mode_of(*mode));
                    }
                    if let Some(markup) = reply_markup {
                        req = req.reply_markup(inline_of(markup)?);
                    }
                    req.send()
                };
                fut.await?;
                Delivered::done()
            }
            Outgoing::EditMarkup {
                chat_id,
                message_id,
                reply_markup,
                ..
            } => {
                let fut = {
                    let mut req = self
                        .bot
                        .edit_message_reply_markup(ChatId(*chat_id), message_of_id(*message_id)?);
                    if let Some(markup) = reply_markup {
                        req = req.reply_markup(inline_of(markup)?);
                    }
                    req.send()
                };
                fut.await?;
                Delivered::done()
            }
            Outgoing::Delete {
                chat_id,
                message_id,
                ..
            } => {
                self.bot
                    .delete_message(ChatId(*chat_id), message_of_id(*message_id)?)
                    .send()
                    .await?;
                Delivered::done()
            }
            Outgoing::AnswerCallback {
                id,
                text,
                show_alert,
                ..
            } => {
                let fut = {
                    let mut req = self.bot.answer_callback_query(CallbackQueryId(id.clone()));
                    if let Some(text) = text {
                        req = req.text(text.as_str());
                    }
                    if *show_alert {
                        req = req.show_alert(true);
                    }
                    req.send()
                };
                fut.await?;
                Delivered::done()
            }
        })
    }
}

fn thread_of(thread: Option<i64>) -> Result<Option<ThreadId>, BoxError> {
    thread
        .map(|t| {
            i32::try_from(t)
                .map(|t| ThreadId(MessageId(t)))
                .map_err(|_| format!("message_thread_id {t} is out of range").into())
        })
        .transpose()
}

fn message_of_id(id: i64) -> Result<MessageId, BoxError> {
    i32::try_from(id)
        .map(MessageId)
        .map_err(|_| format!("message_id {id} is out of range").into())
}

fn parse_mode_of(mode: ParseMode) -> TgParseMode {
    match mode {
        ParseMode::Html => TgParseMode::Html,
        #[allow(deprecated)] // the Bot API still takes it; the caller asked for it
        ParseMode::Markdown => TgParseMode::Markdown,
        _ => TgParseMode::MarkdownV2,
    }
}

/// Our keyboard as teloxide's: both are the Bot API's `reply_markup` object.
fn markup_of(markup: &ReplyMarkup) -> Result<TgMarkup, BoxError> {
    Ok(serde_json::from_value(serde_json::to_value(markup)?)?)
}

fn inline_of(markup: &ReplyMarkup) -> Result<InlineKeyboardMarkup, BoxError> {
    match markup {
        ReplyMarkup::Inline(_) => Ok(serde_json::from_value(serde_json::to_value(markup)?)?),
        _ => Err("an edited message can only carry an inline keyboard".into()),
    }
}

/// An `http(s)://` address as a URL Telegram fetches, anything else as a `file_id`.
fn input_file(file: &str) -> Result<InputFile, BoxError> {
    if file.starts_with("http://") || file.starts_with("https://") {
        // The URL type is teloxide's (`InputFile::url` names it); read through serde.
        let url = serde_json::from_value(serde_json::Value::String(file.to_owned()))
            .map_err(|e| format!("not a URL: {file}: {e}"))?;
        Ok(InputFile::url(url))
    } else {
        Ok(InputFile::file_id(FileId(file.to_owned())))
    }
}

/// Wires a [`PipelineBuilder`] to a teloxide [`Bot`].
pub trait TeloxideBuilderExt: Sized {
    /// Sends replies through `bot` ([`TeloxideTransport`]) and makes `bot` available to
    /// handlers as `cx.extension::<Bot>()`, for calls beyond [`Cx::reply`](crate::Cx::reply).
    ///
    /// ```
    /// use stagecraft::adapters::teloxide::TeloxideBuilderExt;
    /// use stagecraft::prelude::*;
    /// use teloxide::prelude::*;
    ///
    /// type C = Cx<(), teloxide::types::Update>;
    ///
    /// let pipeline = Pipeline::<(), teloxide::types::Update>::builder()
    ///     .teloxide_bot(Bot::new("TOKEN"))
    ///     .command("dice", |cx: C| async move {
    ///         let bot = cx.extension::<Bot>().expect("installed by teloxide_bot");
    ///         let chat = ChatId(cx.update().chat_id().unwrap_or_default());
    ///         bot.send_dice(chat).await?;
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// # drop(pipeline);
    /// ```
    #[must_use]
    fn teloxide_bot(self, bot: Bot) -> Self;
}

impl<S: SessionData, U: Update> TeloxideBuilderExt for PipelineBuilder<S, U> {
    fn teloxide_bot(self, bot: Bot) -> Self {
        self.transport(TeloxideTransport::new(bot.clone()))
            .extension(bot)
    }
}

/// A dptree handler that runs `pipeline` for each update.
///
/// - The pipeline took the update ([`Dispatch::Handled`]): the handler stops there
///   (`Ok(())`).
/// - Nothing in the pipeline took it ([`Dispatch::Unhandled`]): the update continues down
///   the dptree chain (the next handler chained after this one, or the next branch).
/// - The pipeline failed (a handler error, a store failure, a failed reply): the error,
///   converted with `E::from`, goes to the dispatcher's error handler, and is logged with
///   `tracing` (target `stagecraft::teloxide`). Nothing panics.
///
/// All update kinds are of interest (the pipeline decides), so a `Dispatcher` whose
/// handler starts with this one asks Telegram for every kind of update; narrow it by
/// chaining after a filter, e.g. `Update::filter_message().chain(enter_stage(p))`.
///
/// ## Dependency requirements
///
///  - [`teloxide::types::Update`]
///
/// ```
/// use stagecraft::adapters::teloxide::enter_stage;
/// use stagecraft::prelude::*;
/// use teloxide::dispatching::UpdateHandler;
/// use teloxide::prelude::*;
///
/// let pipeline = Pipeline::<(), teloxide::types::Update>::builder().build();
/// let handler: UpdateHandler<BoxError> = dptree::entry()
///     .branch(enter_stage(pipeline))
///     .branch(dptree::endpoint(|| async { Ok(()) }));
/// # drop(handler);
/// ```
#[must_use]
#[track_caller]
pub fn enter_stage<S, E>(pipeline: Pipeline<S, TgUpdate>) -> UpdateHandler<E>
where
    S: SessionData,
    E: From<Error> + Send + Sync + 'static,
{
    let sig = HandlerSignature::Other {
        obligations: BTreeMap::from([(Type::of::<TgUpdate>(), Location::caller())]),
        guaranteed_outcomes: BTreeSet::new(),
        conditional_outcomes: BTreeSet::new(),
        continues: true,
    };
    dptree::from_fn_with_description(
        DpHandlerDescription::user_defined(),
        move |deps: DependencyMap, cont| {
            let pipeline = pipeline.clone();
            async move {
                let Some(update) = deps.try_get::<TgUpdate>() else {
                    tracing::error!(target: "stagecraft::teloxide",
                        "no teloxide Update among the handler's dependencies; passing on");
                    return cont(deps).await;
                };
                let update_id = update.id.0;
                match pipeline.handle(TgUpdate::clone(&update)).await {
                    Ok(Dispatch::Handled) => ControlFlow::Break(Ok(())),
                    Ok(Dispatch::Duplicate) => {
                        tracing::info!(target: "stagecraft::teloxide", update_id,
                            "update delivered again; handled before, skipped");
                        ControlFlow::Break(Ok(()))
                    }
                    Ok(Dispatch::Unhandled) => cont(deps).await,
                    Err(e) => {
                        tracing::warn!(target: "stagecraft::teloxide", update_id,
                            error = %error_chain(&e), "the pipeline failed");
                        ControlFlow::Break(Err(E::from(e)))
                    }
                }
            }
        },
        sig,
    )
}

/// [`enter_stage`] as a method on teloxide's handlers.
pub trait StageHandlerExt<E> {
    /// Chains [`enter_stage(pipeline)`](enter_stage) after this handler: the update runs
    /// through the pipeline if this handler lets it through; what the pipeline leaves
    /// unhandled continues down the chain.
    ///
    /// ## Dependency requirements
    ///
    ///  - [`teloxide::types::Update`]
    ///
    /// ```
    /// use stagecraft::adapters::teloxide::StageHandlerExt;
    /// use stagecraft::prelude::*;
    /// use teloxide::dispatching::UpdateHandler;
    /// use teloxide::prelude::*;
    ///
    /// let pipeline = Pipeline::<(), teloxide::types::Update>::builder().build();
    /// // Only messages reach the pipeline; what it leaves gets a fallback answer.
    /// let handler: UpdateHandler<BoxError> = Update::filter_message()
    ///     .enter_stage(pipeline)
    ///     .endpoint(|bot: Bot, msg: Message| async move {
    ///         bot.send_message(msg.chat.id, "?").await?;
    ///         Ok(())
    ///     });
    /// # drop(handler);
    /// ```
    #[must_use]
    fn enter_stage<S: SessionData>(self, pipeline: Pipeline<S, TgUpdate>) -> Self;
}

impl<E> StageHandlerExt<E> for UpdateHandler<E>
where
    E: From<Error> + Send + Sync + 'static,
{
    #[track_caller]
    fn enter_stage<S: SessionData>(self, pipeline: Pipeline<S, TgUpdate>) -> Self {
        self.chain(enter_stage(pipeline))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> TgUpdate {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn the_transport_does_not_show_the_bot_token() {
        let token = "123456:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw";
        let bot = Bot::new(token).set_api_url(
            "http://proxy:hunter2@127.0.0.1:8081/"
                .parse()
                .expect("a URL"),
        );
        let shown = format!("{:?}", TeloxideTransport::new(bot));
        assert!(
            !shown.contains("AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("127.0.0.1:8081"), "{shown}");
    }

    #[test]
    fn chat_user_thread_and_text_follow_telegraf() {
        let topic = parse(
            r#"{"update_id":3,"message":{"message_id":9,"date":0,"message_thread_id":4,
            "is_topic_message":true,"chat":{"id":-1001,"type":"supergroup","title":"F","is_forum":true},
            "from":{"id":7,"is_bot":false,"first_name":"A"},"text":"/start@b x"}}"#,
        );
        assert_eq!(topic.kind(), UpdateKind::Message);
        assert_eq!(topic.update_id(), Some(3));
        assert_eq!((topic.chat_id(), topic.user_id()), (Some(-1001), Some(7)));
        assert_eq!(topic.thread_id(), Some(4));
        assert_eq!(
            topic.command().map(|c| (c.name, c.args)),
            Some(("start", "x"))
        );

        let reply_thread = parse(
            r#"{"update_id":4,"message":{"message_id":10,"date":0,"message_thread_id":4,
            "chat":{"id":-5,"type":"group","title":"G"},
            "from":{"id":7,"is_bot":false,"first_name":"A"},"text":"hi"}}"#,
        );
        assert_eq!(reply_thread.thread_id(), None, "not a forum topic");

        let channel = parse(
            r#"{"update_id":5,"channel_post":{"message_id":1,"date":0,
            "chat":{"id":-7,"type":"channel","title":"C"},"text":"post"}}"#,
        );
        assert_eq!(channel.kind(), UpdateKind::ChannelPost);
        assert_eq!((channel.chat_id(), channel.user_id()), (Some(-7), None));
        assert_eq!(channel.message_text(), Some("post"));

        let edited = parse(
            r#"{"update_id":6,"edited_message":{"message_id":1,"date":0,"edit_date":1,
            "chat":{"id":2,"type":"private","first_name":"B"},
            "from":{"id":2,"is_bot":false,"first_name":"B"},"text":"/start"}}"#,
        );
        assert_eq!(edited.kind(), UpdateKind::EditedMessage);
        assert_eq!(edited.text(), Some("/start"));
        assert!(edited.command().is_none(), "edits are not commands");

        let inline_cb = parse(
            r#"{"update_id":7,"callback_query":{"id":"q","from":{"id":9,"is_bot":false,
            "first_name":"C"},"chat_instance":"i","inline_message_id":"m","data":"x"}}"#,
        );
        assert_eq!((inline_cb.chat_id(), inline_cb.user_id()), (None, Some(9)));
        assert_eq!(inline_cb.callback_data(), Some("x"));
        assert_eq!(inline_cb.callback_id(), Some("q"));
    }
}

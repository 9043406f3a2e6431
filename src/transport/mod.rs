//! Where replies go: a small trait the console, the replay and bot adapters implement.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::BoxError;

mod reply;

pub use reply::{
    Button, InlineKeyboard, KeyboardButton, MessageRef, ParseMode, RemoveKeyboard, Reply,
    ReplyKeyboard, ReplyMarkup, callback_payload, split_callback_tag,
};
pub(crate) use reply::{Resolve, bind_markup};

/// An outgoing Bot API call made through the context.
///
/// Its serde form is the transcript line (`{"method":"sendMessage","chat_id":1,
/// "text":"hi"}`): how it is written in transcripts and in a session record's outbox
/// (replies committed with their step and not yet delivered). Optional parameters are
/// left out when unset, so a record written before they existed reads the same.
///
/// `remember` is stagecraft's own field, not a Bot API parameter: the name under which
/// the id of the sent message is kept in the session ([`Reply::remember`]). It rides in
/// the outbox and is left out of [`to_json_line`](Self::to_json_line).
///
/// Build calls with [`Reply`] (through [`Cx::send`](crate::Cx::send)) or the
/// constructors here; the variants are `#[non_exhaustive]`, so that parameters can be
/// added without breaking code that matches on them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method")]
#[non_exhaustive]
pub enum Outgoing {
    /// `sendMessage`.
    #[serde(rename = "sendMessage")]
    #[non_exhaustive]
    Text {
        /// Target chat.
        chat_id: i64,
        /// Forum topic, if the update came from one.
        #[serde(
            rename = "message_thread_id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        thread_id: Option<i64>,
        /// The text.
        text: String,
        /// How Telegram reads the text's markup.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parse_mode: Option<ParseMode>,
        /// A keyboard to show with it (or the removal of the reply keyboard).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_markup: Option<ReplyMarkup>,
        /// The name the sent message's id is kept under in the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remember: Option<String>,
    },
    /// `sendPhoto`.
    #[serde(rename = "sendPhoto")]
    #[non_exhaustive]
    Photo {
        /// Target chat.
        chat_id: i64,
        /// Forum topic, if the update came from one.
        #[serde(
            rename = "message_thread_id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        thread_id: Option<i64>,
        /// A `file_id` Telegram knows, or an HTTP URL it fetches.
        photo: String,
        /// The caption.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// How Telegram reads the caption's markup.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parse_mode: Option<ParseMode>,
        /// A keyboard to show with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_markup: Option<ReplyMarkup>,
        /// The name the sent message's id is kept under in the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remember: Option<String>,
    },
    /// `sendDocument`.
    #[serde(rename = "sendDocument")]
    #[non_exhaustive]
    Document {
        /// Target chat.
        chat_id: i64,
        /// Forum topic, if the update came from one.
        #[serde(
            rename = "message_thread_id",
            default,
            skip_serializing_if = "Option::is_none"
        )]
        thread_id: Option<i64>,
        /// A `file_id` Telegram knows, or an HTTP URL it fetches.
        document: String,
        /// The caption.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
        /// How Telegram reads the caption's markup.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parse_mode: Option<ParseMode>,
        /// A keyboard to show with it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_markup: Option<ReplyMarkup>,
        /// The name the sent message's id is kept under in the session.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remember: Option<String>,
    },
    /// `editMessageText`.
    #[serde(rename = "editMessageText")]
    #[non_exhaustive]
    EditText {
        /// The chat of the message.
        chat_id: i64,
        /// The message to edit.
        message_id: i64,
        /// The new text.
        text: String,
        /// How Telegram reads the text's markup.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        parse_mode: Option<ParseMode>,
        /// The new inline keyboard (`None`: the message keeps none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_markup: Option<ReplyMarkup>,
    },
    /// `editMessageReplyMarkup`.
    #[serde(rename = "editMessageReplyMarkup")]
    #[non_exhaustive]
    EditMarkup {
        /// The chat of the message.
        chat_id: i64,
        /// The message to edit.
        message_id: i64,
        /// The new inline keyboard (`None`: remove it).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_markup: Option<ReplyMarkup>,
    },
    /// `deleteMessage`.
    #[serde(rename = "deleteMessage")]
    #[non_exhaustive]
    Delete {
        /// The chat of the message.
        chat_id: i64,
        /// The message to delete.
        message_id: i64,
    },
    /// `answerCallbackQuery`.
    #[serde(rename = "answerCallbackQuery")]
    #[non_exhaustive]
    AnswerCallback {
        /// The callback query id.
        #[serde(rename = "callback_query_id")]
        id: String,
        /// An optional notification text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// Show the text as an alert the user must dismiss, not a passing notice.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        show_alert: bool,
    },
}

impl Outgoing {
    /// A `sendMessage` to `chat_id`.
    #[must_use]
    pub fn text(chat_id: i64, text: impl Into<String>) -> Self {
        Self::Text {
            chat_id,
            thread_id: None,
            text: text.into(),
            parse_mode: None,
            reply_markup: None,
            remember: None,
        }
    }

    /// An `answerCallbackQuery` of the query `id`, with an optional notice.
    #[must_use]
    pub fn answer_callback(id: impl Into<String>, text: Option<String>) -> Self {
        Self::AnswerCallback {
            id: id.into(),
            text,
            show_alert: false,
        }
    }

    /// The Bot API method of the call (`"sendMessage"`, `"editMessageText"`, ...).
    #[must_use]
    pub fn method(&self) -> &'static str {
        match self {
            Self::Text { .. } => "sendMessage",
            Self::Photo { .. } => "sendPhoto",
            Self::Document { .. } => "sendDocument",
            Self::EditText { .. } => "editMessageText",
            Self::EditMarkup { .. } => "editMessageReplyMarkup",
            Self::Delete { .. } => "deleteMessage",
            Self::AnswerCallback { .. } => "answerCallbackQuery",
        }
    }

    /// The call as one line of the transcript format:
    /// `{"method":"sendMessage","chat_id":1,"text":"hi"}` (without `remember`, which is
    /// not a Bot API parameter).
    #[must_use]
    pub fn to_json_line(&self) -> String {
        if self.remember().is_some() {
            let mut plain = self.clone();
            plain.set_remember(None);
            return serde_json::to_string(&plain).unwrap_or_default();
        }
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The chat this call goes to, if any.
    #[must_use]
    pub fn chat_id(&self) -> Option<i64> {
        match self {
            Self::Text { chat_id, .. }
            | Self::Photo { chat_id, .. }
            | Self::Document { chat_id, .. }
            | Self::EditText { chat_id, .. }
            | Self::EditMarkup { chat_id, .. }
            | Self::Delete { chat_id, .. } => Some(*chat_id),
            Self::AnswerCallback { .. } => None,
        }
    }

    /// The text of a `sendMessage` or `editMessageText`, the caption of a photo or
    /// document, the notice of a callback answer.
    #[must_use]
    pub fn text_of(&self) -> Option<&str> {
        match self {
            Self::Text { text, .. } | Self::EditText { text, .. } => Some(text),
            Self::Photo { caption, .. } | Self::Document { caption, .. } => caption.as_deref(),
            Self::AnswerCallback { text, .. } => text.as_deref(),
            Self::EditMarkup { .. } | Self::Delete { .. } => None,
        }
    }

    /// The keyboard the call carries, if any.
    #[must_use]
    pub fn reply_markup(&self) -> Option<&ReplyMarkup> {
        match self {
            Self::Text { reply_markup, .. }
            | Self::Photo { reply_markup, .. }
            | Self::Document { reply_markup, .. }
            | Self::EditText { reply_markup, .. }
            | Self::EditMarkup { reply_markup, .. } => reply_markup.as_ref(),
            Self::Delete { .. } | Self::AnswerCallback { .. } => None,
        }
    }

    pub(crate) fn reply_markup_mut(&mut self) -> Option<&mut ReplyMarkup> {
        match self {
            Self::Text { reply_markup, .. }
            | Self::Photo { reply_markup, .. }
            | Self::Document { reply_markup, .. }
            | Self::EditText { reply_markup, .. }
            | Self::EditMarkup { reply_markup, .. } => reply_markup.as_mut(),
            Self::Delete { .. } | Self::AnswerCallback { .. } => None,
        }
    }

    /// The name the id of the sent message is to be kept under ([`Reply::remember`]).
    #[must_use]
    pub fn remember(&self) -> Option<&str> {
        match self {
            Self::Text { remember, .. }
            | Self::Photo { remember, .. }
            | Self::Document { remember, .. } => remember.as_deref(),
            _ => None,
        }
    }

    fn set_remember(&mut self, name: Option<String>) {
        if let Self::Text { remember, .. }
        | Self::Photo { remember, .. }
        | Self::Document { remember, .. } = self
        {
            *remember = name;
        }
    }

    /// Whether the call sends a new message (whose id the transport may report).
    #[must_use]
    pub fn sends_message(&self) -> bool {
        matches!(
            self,
            Self::Text { .. } | Self::Photo { .. } | Self::Document { .. }
        )
    }
}

/// What a transport reports about a call it delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivered {
    /// The id of the message the call sent (`None`: it sent none, or the transport does
    /// not know it).
    pub message_id: Option<i64>,
}

impl Delivered {
    /// A call that sent the message `id`.
    #[must_use]
    pub fn message(id: i64) -> Self {
        Self {
            message_id: Some(id),
        }
    }

    /// A call delivered, with nothing to report.
    #[must_use]
    pub fn done() -> Self {
        Self::default()
    }
}

/// Sends outgoing calls. Implemented by the console, the replay, the test recorder and
/// (feature `teloxide`) the teloxide adapter.
///
/// Your own, for another chat service or a queue, implements [`send`](Self::send) with
/// [`async_trait`](crate::async_trait). An error fails the update (or, with the outbox,
/// leaves its replies waiting to be delivered again):
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use stagecraft::async_trait;
/// use stagecraft::prelude::*;
/// use stagecraft::transport::{Outgoing, Transport};
///
/// /// Collects "chat: text" lines.
/// #[derive(Debug, Clone, Default)]
/// struct Lines(Arc<Mutex<Vec<String>>>);
///
/// #[async_trait]
/// impl Transport for Lines {
///     async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
///         match msg {
///             Outgoing::Text { chat_id, text, .. } => {
///                 self.0.lock().unwrap().push(format!("{chat_id}: {text}"));
///                 Ok(())
///             }
///             other => Err(format!("{} is not supported here", other.method()).into()),
///         }
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let lines = Lines::default();
/// let bot = Pipeline::<()>::builder()
///     .transport(lines.clone())
///     .on_text(|cx: Cx<()>| async move { cx.reply("hello"); Ok(Outcome::Handled) })
///     .build();
/// let hi = TelegramUpdate::from_json(
///     r#"{"update_id":1,"message":{"chat":{"id":7},"from":{"id":7},"text":"hi"}}"#).unwrap();
/// bot.handle(hi).await.unwrap();
/// assert_eq!(*lines.0.lock().unwrap(), ["7: hello"]);
/// # });
/// ```
#[async_trait]
pub trait Transport: fmt::Debug + Send + Sync + 'static {
    /// Sends one call.
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError>;

    /// Sends one call and reports what was delivered: the id of the message it sent,
    /// which a reply made with [`Reply::remember`] keeps in the session. The default
    /// sends with [`send`](Self::send) and reports nothing; transports that learn the
    /// id (the teloxide one, the recorder) override it.
    async fn deliver(&self, msg: &Outgoing) -> Result<Delivered, BoxError> {
        self.send(msg).await?;
        Ok(Delivered::done())
    }
}

/// Forwards to the transport inside, handing its future back unwrapped (no second box
/// per reply).
impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn send<'a, 'b, 'f>(
        &'a self,
        msg: &'b Outgoing,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), BoxError>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        (**self).send(msg)
    }

    fn deliver<'a, 'b, 'f>(
        &'a self,
        msg: &'b Outgoing,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Delivered, BoxError>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        (**self).deliver(msg)
    }
}

/// Logs every call through `tracing` and sends nothing (the default transport).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogTransport;

#[async_trait]
impl Transport for LogTransport {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        tracing::info!(target: "stagecraft::reply", call = %msg.to_json_line(), "reply");
        Ok(())
    }
}

/// Records every call in memory, in order (for tests and replays).
#[derive(Debug, Clone, Default)]
pub struct RecordingTransport {
    sent: Arc<Mutex<Recorded>>,
    /// The id of the last message "sent" (messages are numbered from 1).
    last_id: Arc<AtomicI64>,
}

/// The calls recorded and what each was reported delivered, side by side.
#[derive(Debug, Default)]
struct Recorded {
    calls: Vec<Outgoing>,
    delivered: Vec<Delivered>,
}

impl RecordingTransport {
    fn recorded(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.sent.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// An empty recorder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything sent so far.
    #[must_use]
    pub fn sent(&self) -> Vec<Outgoing> {
        self.recorded().calls.clone()
    }

    /// Takes everything sent so far, leaving the record empty.
    #[must_use]
    pub fn take(&self) -> Vec<Outgoing> {
        let mut recorded = self.recorded();
        recorded.delivered.clear();
        std::mem::take(&mut recorded.calls)
    }

    /// Everything sent so far with what was reported delivered (the id given to each
    /// message sent).
    #[must_use]
    pub fn delivered(&self) -> Vec<(Outgoing, Delivered)> {
        let recorded = self.recorded();
        recorded
            .calls
            .iter()
            .cloned()
            .zip(recorded.delivered.iter().copied())
            .collect()
    }

    /// Takes everything sent so far with what was reported delivered (the id given to
    /// each message sent), leaving the record empty.
    #[must_use]
    pub fn take_delivered(&self) -> Vec<(Outgoing, Delivered)> {
        let mut recorded = self.recorded();
        let delivered = std::mem::take(&mut recorded.delivered);
        std::mem::take(&mut recorded.calls)
            .into_iter()
            .zip(delivered)
            .collect()
    }

    /// The texts sent so far, in order.
    #[must_use]
    pub fn texts(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Outgoing::Text { text, .. } => Some(text),
                _ => None,
            })
            .collect()
    }

    /// Everything sent so far, as transcript lines.
    #[must_use]
    pub fn lines(&self) -> Vec<String> {
        self.sent().iter().map(Outgoing::to_json_line).collect()
    }
}

#[async_trait]
impl Transport for RecordingTransport {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        self.deliver(msg).await.map(drop)
    }

    /// Records the call; a call that sends a message gets the next message id (1, 2,
    /// ...), as Telegram would give one.
    async fn deliver(&self, msg: &Outgoing) -> Result<Delivered, BoxError> {
        let delivered = next_message(&self.last_id, msg);
        let mut recorded = self.recorded();
        recorded.calls.push(msg.clone());
        recorded.delivered.push(delivered);
        Ok(delivered)
    }
}

/// What a transport that numbers its messages delivered for `msg`.
fn next_message(last_id: &AtomicI64, msg: &Outgoing) -> Delivered {
    if msg.sends_message() {
        Delivered::message(last_id.fetch_add(1, Ordering::Relaxed).saturating_add(1))
    } else {
        Delivered::done()
    }
}

/// Writes each call as a transcript line (`{"method":"sendMessage",...}`) to a writer.
///
/// Messages are numbered from 1 in the order they are written, and the number is
/// reported as the message's id ([`Transport::deliver`]), so that a replay of a
/// conversation that edits its own messages prints the same transcript every time.
pub struct JsonLinesTransport {
    out: Mutex<Box<dyn Write + Send>>,
    last_id: AtomicI64,
}

impl fmt::Debug for JsonLinesTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JsonLinesTransport")
    }
}

impl JsonLinesTransport {
    /// Writes to `out`.
    pub fn new(out: impl Write + Send + 'static) -> Self {
        Self {
            out: Mutex::new(Box::new(out)),
            last_id: AtomicI64::new(0),
        }
    }

    /// Writes to standard output.
    #[must_use]
    pub fn stdout() -> Self {
        Self::new(std::io::stdout())
    }
}

#[async_trait]
impl Transport for JsonLinesTransport {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        self.deliver(msg).await.map(drop)
    }

    async fn deliver(&self, msg: &Outgoing) -> Result<Delivered, BoxError> {
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        writeln!(out, "{}", msg.to_json_line())?;
        out.flush()?;
        Ok(next_message(&self.last_id, msg))
    }
}

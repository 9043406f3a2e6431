//! Where replies go: a small trait the console, the replay and bot adapters implement.

use std::fmt;
use std::io::Write;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::BoxError;

/// An outgoing Bot API call made through the context.
///
/// Its serde form is the transcript line (`{"method":"sendMessage","chat_id":1,
/// "text":"hi"}`): how it is written in transcripts and in a session record's outbox
/// (replies committed with their step and not yet delivered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method")]
#[non_exhaustive]
pub enum Outgoing {
    /// `sendMessage`.
    #[serde(rename = "sendMessage")]
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
    },
    /// `answerCallbackQuery`.
    #[serde(rename = "answerCallbackQuery")]
    AnswerCallback {
        /// The callback query id.
        #[serde(rename = "callback_query_id")]
        id: String,
        /// An optional notification text.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
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
        }
    }

    /// The call as one line of the transcript format:
    /// `{"method":"sendMessage","chat_id":1,"text":"hi"}`.
    #[must_use]
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The chat this call goes to, if any.
    #[must_use]
    pub fn chat_id(&self) -> Option<i64> {
        match self {
            Self::Text { chat_id, .. } => Some(*chat_id),
            Self::AnswerCallback { .. } => None,
        }
    }
}

/// Sends outgoing calls. Implemented by the console, the replay, the test recorder and
/// (feature `teloxide`) the teloxide adapter.
#[async_trait]
pub trait Transport: fmt::Debug + Send + Sync + 'static {
    /// Sends one call.
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError>;
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
    sent: Arc<Mutex<Vec<Outgoing>>>,
}

impl RecordingTransport {
    /// An empty recorder.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Everything sent so far.
    #[must_use]
    pub fn sent(&self) -> Vec<Outgoing> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Takes everything sent so far, leaving the record empty.
    #[must_use]
    pub fn take(&self) -> Vec<Outgoing> {
        std::mem::take(&mut *self.sent.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// The texts sent so far, in order.
    #[must_use]
    pub fn texts(&self) -> Vec<String> {
        self.sent()
            .into_iter()
            .filter_map(|m| match m {
                Outgoing::Text { text, .. } => Some(text),
                Outgoing::AnswerCallback { .. } => None,
            })
            .collect()
    }
}

#[async_trait]
impl Transport for RecordingTransport {
    async fn send(&self, msg: &Outgoing) -> Result<(), BoxError> {
        self.sent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(msg.clone());
        Ok(())
    }
}

/// Writes each call as a transcript line (`{"method":"sendMessage",...}`) to a writer.
pub struct JsonLinesTransport {
    out: Mutex<Box<dyn Write + Send>>,
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
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        writeln!(out, "{}", msg.to_json_line())?;
        out.flush()?;
        Ok(())
    }
}

//! [`TestBot`].

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::clock::ManualClock;
use crate::error::{Error, Result};
use crate::pipeline::{Pipeline, PipelineBuilder};
use crate::record::{RecordInfo, SessionData, inspect};
use crate::replay::REPLAY_EPOCH_S;
use crate::store::{MemoryStore, SessionStore};
use crate::transport::{Outgoing, RecordingTransport, ReplyMarkup};
use crate::update::TelegramUpdate;

/// A pipeline under test: a fake user and chat, a manual clock, recorded replies.
#[derive(Debug)]
pub struct TestBot<S> {
    pipeline: Pipeline<S>,
    clock: ManualClock,
    replies: RecordingTransport,
    store: Arc<dyn SessionStore>,
    user: i64,
    chat: i64,
    /// The calls of the last update handled.
    last: Mutex<Vec<Outgoing>>,
    /// The messages the bot sent, by id, as edits left them (deleted ones gone).
    messages: Mutex<Vec<(i64, Outgoing)>>,
}

impl<S: SessionData + Default> TestBot<S> {
    /// A bot on a fresh [`MemoryStore`]; `build` adds the chain to a builder that already
    /// has the store, clock and recorder set.
    pub fn new(build: impl FnOnce(PipelineBuilder<S, TelegramUpdate>) -> Pipeline<S>) -> Self {
        Self::with_store(Arc::new(MemoryStore::new()), build)
    }

    /// Like [`new`](Self::new) on your own store.
    pub fn with_store(
        store: Arc<dyn SessionStore>,
        build: impl FnOnce(PipelineBuilder<S, TelegramUpdate>) -> Pipeline<S>,
    ) -> Self {
        let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
        let replies = RecordingTransport::new();
        let builder = Pipeline::<S>::builder()
            .store_arc(Arc::clone(&store))
            .clock(clock.clone())
            .transport(replies.clone());
        Self {
            pipeline: build(builder),
            clock,
            replies,
            store,
            user: 1,
            chat: 1,
            last: Mutex::default(),
            messages: Mutex::default(),
        }
    }
}

impl<S: SessionData> TestBot<S> {
    /// Speak as `user` in `chat` from now on (default: user 1 in chat 1).
    #[must_use]
    pub fn as_user(mut self, user: i64, chat: i64) -> Self {
        self.user = user;
        self.chat = chat;
        self
    }

    /// The pipeline.
    #[must_use]
    pub fn pipeline(&self) -> &Pipeline<S> {
        &self.pipeline
    }

    /// The clock.
    #[must_use]
    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.store
    }

    /// Moves the clock forward.
    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }

    fn id(&self) -> i64 {
        // One counter for every bot of the process: each update a test makes is a new
        // one (sessions remember recent update ids to skip one delivered twice, also
        // when a test builds a second bot on the same store).
        static NEXT_ID: AtomicI64 = AtomicI64::new(1);
        NEXT_ID.fetch_add(1, Ordering::Relaxed)
    }

    /// A text message from the current user in the current chat.
    #[must_use]
    pub fn message(&self, text: &str) -> TelegramUpdate {
        self.message_from(self.user, self.chat, text)
    }

    /// A text message from `user` in `chat`.
    #[must_use]
    pub fn message_from(&self, user: i64, chat: i64, text: &str) -> TelegramUpdate {
        let id = self.id();
        self.build(serde_json::json!({"update_id": id, "message": {"message_id": id, "date": 0,
            "chat": {"id": chat, "type": "private"}, "from": {"id": user, "is_bot": false}, "text": text}}))
    }

    /// An edit of an earlier message, with new text.
    #[must_use]
    pub fn edit(&self, text: &str) -> TelegramUpdate {
        let id = self.id();
        self.build(
            serde_json::json!({"update_id": id, "edited_message": {"message_id": 1, "date": 0,
            "chat": {"id": self.chat}, "from": {"id": self.user}, "text": text}}),
        )
    }

    /// A callback query (button press) with `data` on a message in the current chat.
    #[must_use]
    pub fn callback(&self, data: &str) -> TelegramUpdate {
        self.callback_on(1, data)
    }

    /// A callback query with `data` on the message `message_id` in the current chat.
    #[must_use]
    pub fn callback_on(&self, message_id: i64, data: &str) -> TelegramUpdate {
        let id = self.id();
        self.build(
            serde_json::json!({"update_id": id, "callback_query": {"id": format!("cb{id}"),
            "from": {"id": self.user}, "data": data,
            "message": {"message_id": message_id, "date": 0, "chat": {"id": self.chat}}}}),
        )
    }

    /// Presses the inline button labelled `label` on the newest message the bot sent
    /// that shows one, and returns the texts replied to the press. The press carries
    /// the button's data as sent (step tag included) and the message's id.
    ///
    /// # Errors
    /// [`Error::Reply`] when no message the bot sent (and did not delete) shows a
    /// callback button with that label; otherwise the update's error.
    pub async fn press(&self, label: &str) -> Result<Vec<String>> {
        let found = {
            let messages = lock(&self.messages);
            messages.iter().rev().find_map(|(id, m)| {
                let data = button_data(m, label)?;
                Some((*id, data))
            })
        };
        let (message_id, data) = found.ok_or_else(|| {
            Error::Reply(format!(
                "no message the bot sent shows a callback button `{label}`"
            ))
        })?;
        self.texts_of(self.callback_on(message_id, &data)).await
    }

    /// Presses the button labelled `label` on the message `message_id` (an older one,
    /// say), as [`press`](Self::press) does.
    ///
    /// # Errors
    /// As [`press`](Self::press).
    pub async fn press_on(&self, message_id: i64, label: &str) -> Result<Vec<String>> {
        let data = {
            let messages = lock(&self.messages);
            messages
                .iter()
                .find(|(id, _)| *id == message_id)
                .and_then(|(_, m)| button_data(m, label))
        };
        let data = data.ok_or_else(|| {
            Error::Reply(format!(
                "message {message_id} shows no callback button `{label}`"
            ))
        })?;
        self.texts_of(self.callback_on(message_id, &data)).await
    }

    /// The calls the last update made, in order.
    #[must_use]
    pub fn last_calls(&self) -> Vec<Outgoing> {
        lock(&self.last).clone()
    }

    /// The last call the last update made.
    #[must_use]
    pub fn last_call(&self) -> Option<Outgoing> {
        lock(&self.last).last().cloned()
    }

    /// The messages the bot sent so far and did not delete, oldest first, with their
    /// ids and as edits left them (text, caption, keyboard).
    #[must_use]
    pub fn messages(&self) -> Vec<(i64, Outgoing)> {
        lock(&self.messages).clone()
    }

    /// The keyboard of the newest message the bot sent that shows one.
    #[must_use]
    pub fn markup(&self) -> Option<ReplyMarkup> {
        lock(&self.messages)
            .iter()
            .rev()
            .find_map(|(_, m)| m.reply_markup().cloned())
    }

    fn build(&self, v: serde_json::Value) -> TelegramUpdate {
        TelegramUpdate::from_value(v).unwrap_or_default()
    }

    /// Sends a text message and returns the texts replied to this update.
    ///
    /// # Errors
    /// The update's error.
    pub async fn send(&self, text: &str) -> Result<Vec<String>> {
        self.texts_of(self.message(text)).await
    }

    /// Handles any update and returns the texts replied to it.
    ///
    /// # Errors
    /// The update's error.
    pub async fn texts_of(&self, update: TelegramUpdate) -> Result<Vec<String>> {
        Ok(self
            .calls_of(update)
            .await?
            .into_iter()
            .filter_map(|m| match m {
                Outgoing::Text { text, .. } => Some(text),
                _ => None,
            })
            .collect())
    }

    /// Handles any update and returns every call it made.
    ///
    /// # Errors
    /// The update's error (calls made before it are still recorded in [`replies`](Self::replies)).
    pub async fn calls_of(&self, update: TelegramUpdate) -> Result<Vec<Outgoing>> {
        let _ = self.replies.take();
        let handled = self.pipeline.handle(update).await;
        // After an error the calls stay in the recorder (see `replies`).
        let delivered = if handled.is_ok() {
            self.replies.take_delivered()
        } else {
            self.replies.delivered()
        };
        self.track(&delivered);
        let calls: Vec<Outgoing> = delivered.into_iter().map(|(m, _)| m).collect();
        lock(&self.last).clone_from(&calls);
        handled?;
        Ok(calls)
    }

    /// Follows the messages sent, edited and deleted.
    fn track(&self, delivered: &[(Outgoing, crate::transport::Delivered)]) {
        let mut messages = lock(&self.messages);
        for (call, done) in delivered {
            match call {
                Outgoing::EditText {
                    message_id,
                    text,
                    reply_markup,
                    ..
                } => {
                    if let Some((
                        _,
                        Outgoing::Text {
                            text: t,
                            reply_markup: m,
                            ..
                        },
                    )) = messages.iter_mut().find(|(id, _)| id == message_id)
                    {
                        t.clone_from(text);
                        m.clone_from(reply_markup);
                    }
                }
                Outgoing::EditMarkup {
                    message_id,
                    reply_markup,
                    ..
                } => {
                    if let Some((
                        _,
                        Outgoing::Text {
                            reply_markup: m, ..
                        }
                        | Outgoing::Photo {
                            reply_markup: m, ..
                        }
                        | Outgoing::Document {
                            reply_markup: m, ..
                        },
                    )) = messages.iter_mut().find(|(id, _)| id == message_id)
                    {
                        m.clone_from(reply_markup);
                    }
                }
                Outgoing::Delete { message_id, .. } => messages.retain(|(id, _)| id != message_id),
                _ => {
                    if let Some(id) = done.message_id {
                        messages.push((id, call.clone()));
                    }
                }
            }
        }
    }

    /// The recorder of replies.
    #[must_use]
    pub fn replies(&self) -> &RecordingTransport {
        &self.replies
    }

    /// The session key of a message from the current user in the current chat, as the
    /// pipeline's [`KeyStrategy`](crate::session::KeyStrategy) derives it (empty when the
    /// strategy gives such a message no session).
    #[must_use]
    pub fn key(&self) -> String {
        let probe = self.build(
            serde_json::json!({"update_id": 0, "message": {"message_id": 0,
            "date": 0, "chat": {"id": self.chat, "type": "private"},
            "from": {"id": self.user, "is_bot": false}, "text": ""}}),
        );
        self.pipeline.key_of(&probe).unwrap_or_default()
    }

    /// The stored record's bytes of the current user and chat (to check that an update
    /// left it exactly as it was).
    pub async fn stored_bytes(&self) -> Option<Vec<u8>> {
        Some(self.store.load(&self.key()).await.ok()??.bytes)
    }

    /// The stored record of the current user and chat, read without the bot's types.
    pub async fn stored(&self) -> Option<RecordInfo> {
        let loaded = self.store.load(&self.key()).await.ok()??;
        inspect(&loaded.bytes).ok()
    }

    /// The stored scene stack (scene id and cursor, bottom first).
    pub async fn scenes(&self) -> Vec<(String, Option<i64>)> {
        self.stored()
            .await
            .map(|r| r.scenes.into_iter().map(|f| (f.scene, f.cursor)).collect())
            .unwrap_or_default()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The data of the callback button labelled `label` on message `m`.
fn button_data(m: &Outgoing, label: &str) -> Option<String> {
    m.reply_markup()?
        .buttons()
        .into_iter()
        .find(|b| b.text == label)
        .and_then(|b| b.callback_data.clone())
}

//! [`TestBot`].

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use crate::clock::ManualClock;
use crate::error::Result;
use crate::pipeline::{Pipeline, PipelineBuilder};
use crate::record::{RecordInfo, SessionData, inspect};
use crate::replay::REPLAY_EPOCH_S;
use crate::store::{MemoryStore, SessionStore};
use crate::transport::{Outgoing, RecordingTransport};
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
        let id = self.id();
        self.build(
            serde_json::json!({"update_id": id, "callback_query": {"id": format!("cb{id}"),
            "from": {"id": self.user}, "data": data,
            "message": {"message_id": 1, "date": 0, "chat": {"id": self.chat}}}}),
        )
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
                Outgoing::AnswerCallback { .. } => None,
            })
            .collect())
    }

    /// Handles any update and returns every call it made.
    ///
    /// # Errors
    /// The update's error (calls made before it are still recorded in [`replies`](Self::replies)).
    pub async fn calls_of(&self, update: TelegramUpdate) -> Result<Vec<Outgoing>> {
        let _ = self.replies.take();
        self.pipeline.handle(update).await?;
        Ok(self.replies.take())
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

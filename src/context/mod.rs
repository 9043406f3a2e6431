//! [`Cx`]: what a handler gets for one update.

use std::any::Any;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use crate::error::{Error, Result};
use crate::pipeline::Shared;
use crate::scene::{Frame, SceneState};
use crate::session::{DecodePolicy, RecordOwned, SessionData};
use crate::stage::Outcome;
use crate::store::{Codec, Preload, Version};
use crate::transport::Outgoing;
use crate::update::{TelegramUpdate, Update};

/// The context of one update: the update, its session, its scene stack, its replies.
///
/// `Cx` is a cheap handle (`Clone` shares it). Session data, scene state and the stack
/// are reached through short closures, so no lock can be held across an `.await`.
///
/// Replies made with [`reply`](Self::reply) are **held back** and sent only after the
/// session has been written, in order; [`send_now`](Self::send_now) is the escape
/// hatch for a handler that needs its message sent at once.
pub struct Cx<S, U = TelegramUpdate> {
    pub(crate) inner: Arc<Inner<S, U>>,
}

pub(crate) struct Inner<S, U> {
    pub(crate) update: Arc<U>,
    pub(crate) key: Option<Arc<str>>,
    pub(crate) shared: Arc<Shared<S, U>>,
    pub(crate) state: Mutex<SessionState<S>>,
    pub(crate) outbox: Mutex<Outbox>,
    pub(crate) result: Mutex<Option<Box<dyn Any + Send>>>,
    /// The clock, read once when the update started: one instant per update.
    /// The clock, read on first use (many updates never need it).
    pub(crate) now_ms: std::sync::OnceLock<i64>,
}

pub(crate) struct SessionState<S> {
    pub(crate) loaded: bool,
    pub(crate) data: Option<S>,
    pub(crate) stack: Vec<Frame>,
    /// Something was borrowed mutably (or the stack changed).
    pub(crate) dirty: bool,
    /// Something was read (Telegraf's "touched").
    pub(crate) touched: bool,
    pub(crate) version: Option<Version>,
    pub(crate) original: Option<Vec<u8>>,
    /// > 0 while leave hooks run: transitions are refused.
    pub(crate) leaving: usize,
    pub(crate) transitions: usize,
    /// The update was committed: the session is gone from this context.
    pub(crate) closed: bool,
    /// The record read together with the key's lease, used instead of a load.
    pub(crate) preloaded: Preload,
    /// This update may use the cached session without reading the store (write-through).
    pub(crate) may_trust: bool,
    /// The session came from the write-through cache, unread: a conflict on commit means
    /// the cache was stale, not that the update raced another one.
    pub(crate) trusted: bool,
    /// How far the session's cache entry may be trusted once put back unchanged.
    pub(crate) trust: crate::session::Trust,
}

/// The held-back replies: the first inline (most updates make one), the rest after it.
#[derive(Default)]
pub(crate) struct Outbox {
    first: Option<Outgoing>,
    rest: Vec<Outgoing>,
}

impl Outbox {
    pub(crate) fn push(&mut self, msg: Outgoing) {
        if self.first.is_none() && self.rest.is_empty() {
            self.first = Some(msg);
        } else {
            self.rest.push(msg);
        }
    }
}

impl<S> Default for SessionState<S> {
    fn default() -> Self {
        Self {
            loaded: false,
            data: None,
            stack: Vec::new(),
            dirty: false,
            touched: false,
            version: None,
            original: None,
            leaving: 0,
            transitions: 0,
            closed: false,
            preloaded: Preload::NotRead,
            may_trust: false,
            trusted: false,
            trust: crate::session::Trust::Validate,
        }
    }
}

impl<S, U> Clone for Cx<S, U> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, U> fmt::Debug for Cx<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cx")
            .field("key", &self.inner.key)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: SessionData, U: Update> Cx<S, U> {
    pub(crate) fn new(update: Arc<U>, key: Option<Arc<str>>, shared: Arc<Shared<S, U>>) -> Self {
        Self {
            inner: Arc::new(Inner {
                update,
                key,
                state: Mutex::new(SessionState::default()),
                outbox: Mutex::new(Outbox::default()),
                result: Mutex::new(None),
                now_ms: std::sync::OnceLock::new(),
                shared,
            }),
        }
    }

    /// The update being handled.
    #[must_use]
    pub fn update(&self) -> &U {
        &self.inner.update
    }

    /// The session key, or `None` when this update has no session.
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    /// Does this update have a session? (An update without the chat or user its key
    /// needs has none: its data accessors return [`Error::NoSession`] and its scene
    /// stack lives only for this update.)
    #[must_use]
    pub fn has_session(&self) -> bool {
        self.inner.key.is_some()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, SessionState<S>> {
        lock(&self.inner.state)
    }

    /// Loads the session from the store, once per update.
    pub(crate) async fn ensure_loaded(&self) -> Result<()> {
        if self.state().loaded {
            return Ok(());
        }
        let Some(key) = self.inner.key.clone() else {
            self.state().loaded = true;
            return Ok(());
        };
        let shared = &self.inner.shared;
        let preloaded = {
            let mut st = self.state();
            let preloaded = std::mem::take(&mut st.preloaded);
            if preloaded == Preload::NotRead && st.may_trust {
                if let Some(wt) = shared
                    .write_through
                    .as_ref()
                    .or(shared.lease_trust.as_ref())
                {
                    if let Some(c) = shared.keys.take_trusted(&key, || wt.clock.now_ms()) {
                        st.data = c.data;
                        st.stack = c.stack;
                        st.version = Some(c.version);
                        st.original = Some(c.bytes);
                        st.trust = c.trust;
                        st.trusted = true;
                        st.loaded = true;
                        return Ok(());
                    }
                }
            }
            preloaded
        };
        let loaded = match preloaded {
            Preload::Read(record) => record,
            Preload::NotRead => shared.store.load(&key).await?,
        };
        let mut st = self.state();
        if st.loaded {
            return Ok(());
        }
        if let Some(rec) = loaded {
            let cached = shared.keys.take(&key, rec.version, &rec.bytes);
            let decoded = match cached {
                Some(c) => Ok((c.data, c.stack)),
                None => {
                    Codec::decode::<RecordOwned<S>>(&rec.bytes).map(|r| (Some(r.data), r.scenes))
                }
            };
            match decoded {
                Ok((data, stack)) => {
                    st.data = data;
                    st.stack = stack;
                }
                Err(e) if shared.decode_policy == DecodePolicy::Reset => {
                    tracing::warn!(target: "stagecraft::session", key = %key, error = %e,
                        "stored session could not be decoded; starting afresh");
                    st.dirty = true;
                }
                Err(e) => {
                    return Err(Error::Decode {
                        key: key.to_string(),
                        source: e,
                    });
                }
            }
            st.version = Some(rec.version);
            st.original = Some(rec.bytes);
        }
        st.loaded = true;
        Ok(())
    }

    /// Reads the session data. Creates it from the default factory when new.
    ///
    /// # Errors
    /// [`Error::NoSession`] when the update has no session; [`Error::Finished`] after the
    /// update was committed (a clone of the context kept beyond its handler).
    pub fn session<R>(&self, f: impl FnOnce(&S) -> R) -> Result<R> {
        if !self.has_session() {
            return Err(Error::NoSession);
        }
        let mut st = self.state();
        st.touched = true;
        let data = st
            .data
            .get_or_insert_with(|| (self.inner.shared.default_session)());
        Ok(f(data))
    }

    /// Changes the session data. Creates it from the default factory when new.
    ///
    /// # Errors
    /// As [`session`](Self::session).
    pub fn session_mut<R>(&self, f: impl FnOnce(&mut S) -> R) -> Result<R> {
        if !self.has_session() {
            return Err(Error::NoSession);
        }
        let mut st = self.state();
        if st.closed {
            return Err(Error::Finished);
        }
        st.touched = true;
        st.dirty = true;
        let data = st
            .data
            .get_or_insert_with(|| (self.inner.shared.default_session)());
        Ok(f(data))
    }

    /// Deletes the session (data and scene stack) when the update is committed
    /// (Telegraf's `ctx.session = null`). Touching it again afterwards starts a new one.
    pub fn clear_session(&self) {
        let mut st = self.state();
        st.data = None;
        st.stack.clear();
        st.dirty = true;
        st.touched = true;
    }

    /// Queues a text reply to the update's chat (in its forum topic, if any). Sent
    /// after the session is committed; dropped if the update is retried or rolled back.
    pub fn reply(&self, text: impl Into<String>) {
        let u = self.update();
        match u.chat_id() {
            Some(chat_id) => lock(&self.inner.outbox).push(Outgoing::Text {
                chat_id,
                thread_id: u.thread_id(),
                text: text.into(),
            }),
            None => {
                tracing::warn!(target: "stagecraft::reply", "reply dropped: the update has no chat")
            }
        }
    }

    /// Queues any outgoing call (see [`Outgoing`]), held back like [`reply`](Self::reply).
    pub fn send_later(&self, msg: Outgoing) {
        lock(&self.inner.outbox).push(msg);
    }

    /// Sends a text to the update's chat **now**, before the session is committed.
    ///
    /// Use it only when the handler needs the message to exist at once; a message sent
    /// this way is not withdrawn if the update is later retried or rolled back.
    ///
    /// # Errors
    /// [`Error::Transport`] when sending fails; [`Error::NoSession`]-free: an update
    /// without a chat gives [`Error::Transport`] as well.
    pub async fn send_now(&self, text: impl Into<String>) -> Result<()> {
        let u = self.update();
        let chat_id = u.chat_id().ok_or_else(|| {
            Error::Transport(Box::new(crate::error::Message(
                "the update has no chat".into(),
            )))
        })?;
        let msg = Outgoing::Text {
            chat_id,
            thread_id: u.thread_id(),
            text: text.into(),
        };
        self.inner
            .shared
            .transport
            .send(&msg)
            .await
            .map_err(Error::Transport)
    }

    /// Answers the callback query of this update (held back like replies). Does nothing
    /// for other updates.
    pub fn answer_callback(&self, text: Option<String>) {
        if let Some(id) = self.update().callback_id() {
            self.send_later(Outgoing::AnswerCallback {
                id: id.to_owned(),
                text,
            });
        }
    }

    /// The replies queued so far.
    #[must_use]
    pub fn pending_replies(&self) -> Vec<Outgoing> {
        let outbox = lock(&self.inner.outbox);
        outbox.first.iter().chain(&outbox.rest).cloned().collect()
    }

    pub(crate) fn take_outbox(&self) -> impl Iterator<Item = Outgoing> + use<S, U> {
        let mut outbox = lock(&self.inner.outbox);
        let first = outbox.first.take();
        let rest = std::mem::take(&mut outbox.rest);
        first.into_iter().chain(rest)
    }

    /// The active scene's id (the top of the stack).
    #[must_use]
    pub fn current_scene(&self) -> Option<String> {
        self.state().stack.last().map(|f| f.scene.clone())
    }

    /// The active wizard's cursor (`None` outside a wizard).
    #[must_use]
    pub fn cursor(&self) -> Option<i64> {
        self.state().stack.last().and_then(|f| f.cursor)
    }

    /// The ids of the scene stack, bottom first.
    #[must_use]
    pub fn stack(&self) -> Vec<String> {
        self.state().stack.iter().map(|f| f.scene.clone()).collect()
    }

    /// Reads the active scene's state as `T`.
    ///
    /// # Errors
    /// [`Error::NoActiveScene`], or [`Error::StateType`] when the state is not a `T`.
    pub fn with_state_ref<T: SceneState, R>(&self, f: impl FnOnce(&T) -> R) -> Result<R> {
        let st = self.state();
        let frame = st.stack.last().ok_or(Error::NoActiveScene)?;
        let state = frame
            .state
            .as_any()
            .downcast_ref::<T>()
            .ok_or_else(|| Error::StateType {
                scene: frame.scene.clone(),
                expected: std::any::type_name::<T>(),
            })?;
        Ok(f(state))
    }

    /// Changes the active scene's state as `T`.
    ///
    /// # Errors
    /// [`Error::NoActiveScene`], or [`Error::StateType`] when the state is not a `T`.
    pub fn with_state<T: SceneState, R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut st = self.state();
        st.dirty = true;
        let frame = st.stack.last_mut().ok_or(Error::NoActiveScene)?;
        let scene = &frame.scene;
        let state = frame
            .state
            .as_any_mut()
            .downcast_mut::<T>()
            .ok_or_else(|| Error::StateType {
                scene: scene.clone(),
                expected: std::any::type_name::<T>(),
            })?;
        Ok(f(state))
    }

    /// A copy of the active scene's state.
    ///
    /// # Errors
    /// As [`with_state_ref`](Self::with_state_ref).
    pub fn scene_state<T: SceneState + Clone>(&self) -> Result<T> {
        self.with_state_ref(T::clone)
    }

    /// Replaces the active scene's state (Telegraf's `ctx.scene.state = ...`).
    ///
    /// # Errors
    /// [`Error::NoActiveScene`].
    pub fn set_scene_state(&self, state: impl SceneState) -> Result<()> {
        let mut st = self.state();
        st.dirty = true;
        let frame = st.stack.last_mut().ok_or(Error::NoActiveScene)?;
        frame.state = Box::new(state);
        Ok(())
    }

    /// Takes the result a child scene left with ([`Outcome::leave_with`]), in the
    /// parent's resume hook.
    #[must_use]
    pub fn take_result<T: Any>(&self) -> Option<T> {
        let mut slot = lock(&self.inner.result);
        match slot.take()?.downcast::<T>() {
            Ok(v) => Some(*v),
            Err(other) => {
                *slot = Some(other);
                None
            }
        }
    }

    pub(crate) fn set_result(&self, r: Option<Box<dyn Any + Send>>) {
        *lock(&self.inner.result) = r;
    }

    /// A value given to [`PipelineBuilder::extension`](crate::pipeline::PipelineBuilder::extension).
    #[must_use]
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner
            .shared
            .extensions
            .get(&std::any::TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }

    /// The time of this update, in Unix seconds (the clock is read once per update, at
    /// the first call, so every TTL decision of one update sees the same instant).
    #[must_use]
    pub fn now_s(&self) -> i64 {
        self.inner
            .now_ms
            .get_or_init(|| self.inner.shared.clock.now_ms())
            .div_euclid(1000)
    }

    /// Applies a transition now, as if a handler had returned it. The Telegraf-style
    /// calls of [`scene`](Self::scene) and [`wizard`](Self::wizard) are built on it.
    ///
    /// # Errors
    /// [`Error::UnknownScene`], [`Error::NoActiveScene`], [`Error::Transition`], or the
    /// error of a hook or step the transition ran.
    pub async fn apply(&self, outcome: Outcome) -> Result<()> {
        match self.inner.shared.stage.clone() {
            Some(stage) => stage.apply(self.clone(), outcome).await,
            None if outcome.is_transition() => Err(Error::Transition("no stage is installed")),
            None => Ok(()),
        }
    }

    /// Telegraf's `ctx.scene`: enter, leave, reenter, push, current.
    #[must_use]
    pub fn scene(&self) -> SceneCx<'_, S, U> {
        SceneCx { cx: self }
    }

    /// Telegraf's `ctx.wizard`: cursor moves for the active wizard.
    #[must_use]
    pub fn wizard(&self) -> WizardCx<'_, S, U> {
        WizardCx { cx: self }
    }
}

/// Telegraf-style scene operations (see [`Cx::scene`]); each maps onto an [`Outcome`].
#[derive(Debug)]
pub struct SceneCx<'a, S, U> {
    cx: &'a Cx<S, U>,
}

impl<S: SessionData, U: Update> SceneCx<'_, S, U> {
    /// Leaves the current scene and enters `id` (enter hooks and a wizard's first step run now).
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn enter(&self, id: &str) -> Result<()> {
        self.cx.apply(Outcome::enter(id)).await
    }

    /// Like [`enter`](Self::enter) with an initial state; `silent` skips every hook.
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn enter_with(&self, id: &str, state: impl SceneState, silent: bool) -> Result<()> {
        let mut e = crate::stage::Enter::new(id).state(state);
        e.silent = silent;
        self.cx.apply(Outcome::Enter(e)).await
    }

    /// Enters `id` on top of the current scene, which resumes when `id` leaves.
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn push(&self, id: &str) -> Result<()> {
        self.cx.apply(Outcome::push(id)).await
    }

    /// Leaves the current scene (no-op when none is active).
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn leave(&self) -> Result<()> {
        self.cx.apply(Outcome::leave()).await
    }

    /// Leaves and re-enters the current scene with its state (no-op when none is active).
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn reenter(&self) -> Result<()> {
        self.cx.apply(Outcome::Reenter).await
    }

    /// The active scene's id.
    #[must_use]
    pub fn current(&self) -> Option<String> {
        self.cx.current_scene()
    }
}

/// Telegraf-style wizard operations (see [`Cx::wizard`]). Cursor moves take effect at
/// once but run no step (the step at the new cursor runs on the next update).
#[derive(Debug)]
pub struct WizardCx<'a, S, U> {
    cx: &'a Cx<S, U>,
}

impl<S: SessionData, U: Update> WizardCx<'_, S, U> {
    /// The cursor of the active wizard.
    #[must_use]
    pub fn cursor(&self) -> Option<i64> {
        self.cx.cursor()
    }

    /// Moves to the next step.
    ///
    /// # Errors
    /// [`Error::NoActiveScene`] or [`Error::Transition`] when the active scene is not a wizard.
    pub fn next(&self) -> Result<()> {
        self.move_by(|c| c.saturating_add(1))
    }

    /// Moves to the previous step.
    ///
    /// # Errors
    /// As [`next`](Self::next).
    pub fn back(&self) -> Result<()> {
        self.move_by(|c| c.saturating_sub(1))
    }

    /// Moves to step `n`.
    ///
    /// # Errors
    /// As [`next`](Self::next).
    pub fn select_step(&self, n: i64) -> Result<()> {
        self.move_by(|_| n)
    }

    fn move_by(&self, f: impl FnOnce(i64) -> i64) -> Result<()> {
        crate::stage::move_cursor(&mut self.cx.state(), f)
    }
}

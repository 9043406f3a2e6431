//! [`Cx`]: what a handler gets for one update.
//!
//! The context sits below the handlers, scenes, stage and pipeline: it knows the record
//! and the outcome types, and reaches the rest through a narrow environment ([`env`]):
//! the stage as an interpreter of transitions, the session cycle as a source to load
//! from. It never loads, decodes or commits by itself.

mod env;
mod session;

use std::any::Any;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

pub use env::BoxFuture;
pub(crate) use env::{Env, Interpret, Source};
pub(crate) use session::{Decoded, Ledger, Origin, SessionState};

use crate::error::{Error, Result};
use crate::outcome::{Enter, Outcome};
use crate::record::{SceneState, SessionData};
use crate::transport::{Outgoing, Reply, Resolve};
use crate::update::{TelegramUpdate, Update};

/// The context of one update: the update, its session, its scene stack, its replies.
///
/// `Cx` is a cheap handle (`Clone` shares it). Session data, scene state and the stack
/// are reached through short closures, so no lock can be held across an `.await`.
///
/// Replies made with [`reply`](Self::reply) are **held back** and sent only after the
/// session has been written, in order; [`send_now`](Self::send_now) is the escape
/// hatch for a handler that needs its message sent at once.
///
/// Once the update is committed, the context is finished: a clone kept beyond its
/// handler (in a spawned task, say) gets [`Error::Finished`] from every method that
/// returns a `Result`, and its replies are dropped with a warning.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use stagecraft::prelude::*;
/// use stagecraft::testing::TestBot;
///
/// #[derive(Debug, Default, Serialize, Deserialize)]
/// struct Data { visits: u32 }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bot = TestBot::<Data>::new(|b| b
///     .on_text(|cx: Cx<Data>| async move {
///         let n = cx.session_mut(|d| { d.visits += 1; d.visits })?;
///         let text = cx.update().message_text().unwrap_or_default().to_owned();
///         cx.reply(format!("{text} #{n}"));
///         Ok(Outcome::Handled)
///     })
///     .build());
/// assert_eq!(bot.send("hi").await.unwrap(), ["hi #1"]);
/// assert_eq!(bot.send("hi").await.unwrap(), ["hi #2"]);
/// # });
/// ```
pub struct Cx<S, U = TelegramUpdate> {
    inner: Arc<Inner<S, U>>,
}

struct Inner<S, U> {
    update: U,
    key: Option<Arc<str>>,
    env: Arc<Env<S, U>>,
    state: Mutex<SessionState<S>>,
    outbox: Mutex<Outbox>,
    result: Mutex<Option<crate::outcome::Handoff>>,
    /// The stage whose handlers run now, when it is not the environment's
    /// (a pipeline with several stages).
    stage: Mutex<Option<Arc<dyn Interpret<S, U>>>>,
    /// Whether `stage` was ever set (read without its lock).
    stage_set: AtomicBool,
    /// The clock, read on first use (many updates never need it).
    now_ms: OnceLock<i64>,
    /// Run for an event of the key, not for an update that arrived.
    event: bool,
}

/// An update's held-back replies, in order: one inline (most updates make one, so it
/// costs no allocation), more in a vector.
#[derive(Debug, Default)]
pub(crate) enum Replies {
    #[default]
    None,
    One(Outgoing),
    Many(Vec<Outgoing>),
}

impl Replies {
    fn push(&mut self, msg: Outgoing) {
        *self = match std::mem::take(self) {
            Self::None => Self::One(msg),
            Self::One(first) => Self::Many(vec![first, msg]),
            Self::Many(mut all) => {
                all.push(msg);
                Self::Many(all)
            }
        };
    }

    fn as_mut_slice(&mut self) -> &mut [Outgoing] {
        match self {
            Self::None => &mut [],
            Self::One(m) => std::slice::from_mut(m),
            Self::Many(all) => all,
        }
    }

    /// The replies, in order.
    pub(crate) fn as_slice(&self) -> &[Outgoing] {
        match self {
            Self::None => &[],
            Self::One(m) => std::slice::from_ref(m),
            Self::Many(all) => all,
        }
    }
}

/// The held-back replies, until the commit takes them.
#[derive(Default)]
struct Outbox {
    replies: Replies,
    /// Taken by the commit: later replies are dropped.
    closed: bool,
}

impl Outbox {
    fn push(&mut self, msg: Outgoing) {
        if self.closed {
            tracing::warn!(target: "stagecraft::reply",
                "reply dropped: its update was already committed (a context kept beyond its handler)");
        } else {
            self.replies.push(msg);
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
            .field("event", &self.inner.event)
            .finish_non_exhaustive()
    }
}

/// The step tag of a scene stack: six hex digits of a hash of its depth and of the
/// active frame (scene, when it was entered, wizard cursor). Buttons carry the tag of
/// the step that sent them; a press is current while the stack's tag is the same.
pub(crate) fn step_tag(stack: &[crate::record::Frame]) -> StepTag {
    // FNV-1a, 64 bits, folded to 24.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(&(stack.len() as u64).to_le_bytes());
    if let Some(top) = stack.last() {
        eat(top.scene.as_bytes());
        eat(&[0xff]);
        eat(&top.entered_at.to_le_bytes());
        eat(&top.cursor.unwrap_or(i64::MIN).to_le_bytes());
    }
    let folded = (h ^ (h >> 24) ^ (h >> 48)) & 0x00ff_ffff;
    let mut out = [0u8; 6];
    for (i, c) in out.iter_mut().enumerate() {
        let nibble = (folded >> (20 - 4 * i)) & 0xf;
        *c = b"0123456789abcdef"[nibble as usize];
    }
    StepTag(out)
}

/// Six lower-case hex digits (see [`step_tag`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StepTag([u8; 6]);

impl StepTag {
    pub(crate) fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<S: SessionData, U: Update> Cx<S, U> {
    /// A context for one attempt at `update` (or at an event of `key`, when `event`).
    pub(crate) fn new(
        update: U,
        key: Option<Arc<str>>,
        env: Arc<Env<S, U>>,
        origin: Origin<S>,
        event: bool,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                update,
                key,
                env,
                state: Mutex::new(SessionState::new(origin)),
                outbox: Mutex::new(Outbox::default()),
                result: Mutex::new(None),
                stage: Mutex::new(None),
                stage_set: AtomicBool::new(false),
                now_ms: OnceLock::new(),
                event,
            }),
        }
    }

    /// The update back from a finished attempt (cloned if a handler kept the context).
    pub(crate) fn into_update(self) -> U {
        match Arc::try_unwrap(self.inner) {
            Ok(inner) => inner.update,
            Err(shared) => shared.update.clone(),
        }
    }

    /// The update being handled (for an event, the update that stands for it).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .on_text(|cx: Cx<()>| async move {
    ///         let loud = cx.update().text().unwrap_or_default().to_uppercase();
    ///         cx.reply(loud);
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("hello").await.unwrap(), ["HELLO"]);
    /// # });
    /// ```
    #[must_use]
    pub fn update(&self) -> &U {
        &self.inner.update
    }

    /// Whether this context runs for an event of its key (a timer, an operator's
    /// action) rather than for an update that arrived; see
    /// [`Pipeline::run_event`](crate::Pipeline::run_event).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let answer = |cx: Cx<()>| async move {
    ///     cx.reply(if cx.is_event() { "timer" } else { "update" });
    ///     Ok(Outcome::Handled)
    /// };
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("quiz").on_text(answer).timeout(60, answer).build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("quiz", |_cx: Cx<()>| async move { Ok(Outcome::enter("quiz")) })
    ///     .build());
    /// bot.send("/quiz").await.unwrap();
    /// assert_eq!(bot.send("42").await.unwrap(), ["update"]);
    /// bot.advance(61);
    /// assert_eq!(bot.pipeline().wake_due().await.unwrap().timers, 1);
    /// assert_eq!(bot.replies().texts().last().unwrap(), "timer");
    /// # });
    /// ```
    #[must_use]
    pub fn is_event(&self) -> bool {
        self.inner.event
    }

    /// The session key, or `None` when this update has no session.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .on_text(|cx: Cx<()>| async move {
    ///         cx.reply(cx.key().unwrap_or("no session").to_owned());
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("hi").await.unwrap(), [bot.key()]);
    /// # });
    /// ```
    #[must_use]
    pub fn key(&self) -> Option<&str> {
        self.inner.key.as_deref()
    }

    pub(crate) fn key_arc(&self) -> Option<Arc<str>> {
        self.inner.key.clone()
    }

    /// Does this update have a session? (An update without the chat or user its key
    /// needs has none: its data accessors return [`Error::NoSession`] and its scene
    /// stack lives only for this update.)
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<u32>::builder() // the default key: the user in the chat
    ///     .transport(replies.clone())
    ///     .on_text(|cx: Cx<u32>| async move {
    ///         if cx.has_session() {
    ///             let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///             cx.reply(format!("message #{n}"));
    ///         } else {
    ///             cx.reply("no session");
    ///         }
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let from_user = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"hi"}}"#).unwrap();
    /// let no_user = TelegramUpdate::from_json(
    ///     r#"{"update_id":2,"message":{"chat":{"id":5},"text":"hi"}}"#).unwrap();
    /// bot.handle(from_user).await.unwrap();
    /// bot.handle(no_user).await.unwrap();
    /// assert_eq!(replies.texts(), ["message #1", "no session"]);
    /// # });
    /// ```
    #[must_use]
    pub fn has_session(&self) -> bool {
        self.inner.key.is_some()
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, SessionState<S>> {
        lock(&self.inner.state)
    }

    /// The bot's username, if the pipeline knows it.
    pub(crate) fn bot_username(&self) -> Option<&str> {
        self.inner.env.bot_username.as_deref()
    }

    /// Has the session cycle loaded the session? Asks it to, once per attempt.
    pub(crate) async fn ensure_loaded(&self) -> Result<()> {
        if self.state().is_loaded() {
            return Ok(());
        }
        let Some(key) = self.inner.key.as_deref() else {
            self.state()
                .set_loaded(None, Vec::new(), Default::default());
            return Ok(());
        };
        let source = &*self.inner.env.source;
        let read = {
            let mut st = self.state();
            match source.start_load(key, &mut st)? {
                None => return Ok(()),
                Some(read) => read,
            }
        };
        let record = read.await?;
        let mut st = self.state();
        if st.is_loaded() {
            return Ok(());
        }
        source.finish_load(key, &mut st, record)
    }

    /// Reads the session data. Creates it from the default factory when new.
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// #[derive(Debug, Default, Serialize, Deserialize)]
    /// struct Cart { items: Vec<String> }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<Cart>::new(|b| b
    ///     .command("list", |cx: Cx<Cart>| async move {
    ///         let items = cx.session(|c| c.items.join(", "))?;
    ///         cx.reply(format!("cart: {items}"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .on_text(|cx: Cx<Cart>| async move {
    ///         let item = cx.update().text().unwrap_or_default().to_owned();
    ///         let n = cx.session_mut(|c| { c.items.push(item); c.items.len() })?;
    ///         cx.reply(format!("{n} in cart"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/list").await.unwrap(), ["cart: "]);
    /// assert_eq!(bot.send("tea").await.unwrap(), ["1 in cart"]);
    /// assert_eq!(bot.send("/list").await.unwrap(), ["cart: tea"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::NoSession`] when the update has no session; [`Error::Finished`] after the
    /// update was committed (a clone of the context kept beyond its handler).
    pub fn session<R>(&self, f: impl FnOnce(&S) -> R) -> Result<R> {
        if !self.has_session() {
            return Err(Error::NoSession);
        }
        let env = &self.inner.env;
        Ok(f(self.state().data(|| (env.default_session)())?))
    }

    /// Changes the session data. Creates it from the default factory when new.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<u32>::new(|b| b
    ///     .on_text(|cx: Cx<u32>| async move {
    ///         let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///         cx.reply(format!("visit #{n}"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("hi").await.unwrap(), ["visit #1"]);
    /// assert_eq!(bot.send("hi").await.unwrap(), ["visit #2"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`session`](Self::session).
    pub fn session_mut<R>(&self, f: impl FnOnce(&mut S) -> R) -> Result<R> {
        if !self.has_session() {
            return Err(Error::NoSession);
        }
        let env = &self.inner.env;
        Ok(f(self.state().data_mut(|| (env.default_session)())?))
    }

    /// Deletes the session (data and scene stack) when the update is committed
    /// (Telegraf's `ctx.session = null`). Touching it again afterwards starts a new one.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<u32>::new(|b| b
    ///     .command("reset", |cx: Cx<u32>| async move {
    ///         cx.clear_session()?;
    ///         cx.reply("Forgotten.");
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .on_text(|cx: Cx<u32>| async move {
    ///         let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///         cx.reply(format!("#{n}"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("a").await.unwrap(), ["#1"]);
    /// assert_eq!(bot.send("b").await.unwrap(), ["#2"]);
    /// assert_eq!(bot.send("/reset").await.unwrap(), ["Forgotten."]);
    /// assert_eq!(bot.send("c").await.unwrap(), ["#1"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::Finished`] after the update was committed.
    pub fn clear_session(&self) -> Result<()> {
        self.state().clear()
    }

    /// Queues a text reply to the update's chat (in its forum topic, if any). Sent
    /// after the session is committed; dropped if the update is retried or rolled back.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .command("start", |cx: Cx<()>| async move {
    ///         cx.reply("Hello!");
    ///         cx.reply("Send /help for the commands.");
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/start").await.unwrap(), ["Hello!", "Send /help for the commands."]);
    /// # });
    /// ```
    pub fn reply(&self, text: impl Into<String>) {
        let u = self.update();
        match u.chat_id() {
            Some(chat_id) => {
                let mut msg = Outgoing::text(chat_id, text);
                if let Outgoing::Text { thread_id, .. } = &mut msg {
                    *thread_id = u.thread_id();
                }
                lock(&self.inner.outbox).push(msg);
            }
            None => {
                tracing::warn!(target: "stagecraft::reply", "reply dropped: the update has no chat")
            }
        }
    }

    /// Queues any outgoing call (see [`Outgoing`]), held back like [`reply`](Self::reply).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    /// use stagecraft::transport::Outgoing;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// const OPERATORS: i64 = -100_200;
    /// let bot = TestBot::<()>::new(|b| b
    ///     .command("help", |cx: Cx<()>| async move {
    ///         cx.send_later(Outgoing::text(OPERATORS, "A user asks for help."));
    ///         cx.reply("An operator will answer soon.");
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// bot.send("/help").await.unwrap();
    /// let calls = bot.last_calls();
    /// assert!(matches!(&calls[0], Outgoing::Text { chat_id: OPERATORS, .. }));
    /// assert_eq!(calls[1].text_of(), Some("An operator will answer soon."));
    /// # });
    /// ```
    pub fn send_later(&self, msg: Outgoing) {
        lock(&self.inner.outbox).push(msg);
    }

    /// Queues a [`Reply`] of any kind (a text with a parse mode and a keyboard, a
    /// photo, a document, an edit, a deletion, a callback answer), held back like
    /// [`reply`](Self::reply): sent after the session is committed, in order with the
    /// other replies, through the outbox when the pipeline has one.
    ///
    /// Messages go to the update's chat (and forum topic). [`MessageRef::Callback`]
    /// names the message whose button was pressed, [`MessageRef::Sent`] one sent
    /// earlier with [`Reply::remember`]. The callback buttons of its keyboard are bound
    /// to the step the user is at when the update is committed (see
    /// [`Button::callback`]).
    ///
    /// [`MessageRef::Callback`]: crate::transport::MessageRef::Callback
    /// [`MessageRef::Sent`]: crate::transport::MessageRef::Sent
    /// [`Button::callback`]: crate::transport::Button::callback
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    /// use stagecraft::transport::{Button, Reply};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .command("menu", |cx: Cx<()>| async move {
    ///         let row = [Button::callback("Tea", "tea"), Button::callback("Coffee", "coffee")];
    ///         cx.send(Reply::text("Tea or coffee?").inline_keyboard([row]))?;
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .callback("tea", |cx: Cx<()>| async move {
    ///         cx.send(Reply::answer_callback(Some("Noted".into())))?;
    ///         cx.reply("Tea it is.");
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/menu").await.unwrap(), ["Tea or coffee?"]);
    /// assert_eq!(bot.markup().unwrap().buttons().len(), 2);
    /// assert_eq!(bot.press("Tea").await.unwrap(), ["Tea it is."]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::Reply`], saying why, when the reply cannot be made: the update has no
    /// chat, the message to edit is not known (no callback message; no message
    /// remembered under that name, or its delivery not confirmed yet), or a button's
    /// callback data does not fit Telegram's 64 bytes. Nothing is queued then.
    pub fn send(&self, reply: Reply) -> Result<()> {
        let u = self.update();
        let sent = |name: &str| self.sent_message(name);
        let msg = reply.resolve(&Resolve {
            chat_id: u.chat_id(),
            thread_id: u.thread_id(),
            callback_id: u.callback_id(),
            callback_message: u.callback_message_id(),
            sent: &sent,
        })?;
        lock(&self.inner.outbox).push(msg);
        Ok(())
    }

    /// The id of the message sent by a reply made with [`Reply::remember`]`(name)`, once
    /// its delivery was confirmed (by a transport that reports message ids) and the
    /// session written: from the update after the one that sent it. `None` before, when
    /// the update has no session, or when no message goes by that name.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    /// use stagecraft::transport::Reply;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .command("status", |cx: Cx<()>| async move {
    ///         cx.send(Reply::text("Working...").remember("status"))?;
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .command("which", |cx: Cx<()>| async move {
    ///         cx.reply(format!("{:?}", cx.sent_message("status")));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/which").await.unwrap(), ["None"]);
    /// bot.send("/status").await.unwrap();
    /// let messages = bot.messages();
    /// let (id, _) = messages.iter().find(|(_, m)| m.text_of() == Some("Working...")).unwrap();
    /// assert_eq!(bot.send("/which").await.unwrap(), [format!("Some({id})")]);
    /// # });
    /// ```
    #[must_use]
    pub fn sent_message(&self, name: &str) -> Option<i64> {
        let st = self.state();
        if !st.is_loaded() {
            return None;
        }
        st.ledger.sent.get(name)
    }

    /// The id of the message whose button this callback query pressed (`None` for other
    /// updates, and for buttons on inline messages).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .callback("like", |cx: Cx<()>| async move {
    ///         cx.reply(format!("liked message {:?}", cx.callback_message()));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// let press = bot.callback_on(42, "like");
    /// assert_eq!(bot.texts_of(press).await.unwrap(), ["liked message Some(42)"]);
    /// # });
    /// ```
    #[must_use]
    pub fn callback_message(&self) -> Option<i64> {
        self.update().callback_message_id()
    }

    /// Whether this update is a press of a button bound to a step the user is no longer
    /// at (its callback data carries a step tag, [`Button::callback`], that is not the
    /// active frame's and step's). The stage answers such a press and lets it go no
    /// further; a middleware before the stage can use this to leave it alone too.
    ///
    /// [`Button::callback`]: crate::transport::Button::callback
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    /// use stagecraft::transport::{Button, Reply};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("order")
    ///         .callback("small", |cx: Cx<()>| async move {
    ///             cx.reply(format!("small (stale: {})", cx.is_stale_press()));
    ///             Ok(Outcome::Next)
    ///         })
    ///         .step(|cx: Cx<()>| async move {
    ///             cx.send(Reply::text("Size?").inline_keyboard([[Button::callback("Small", "small")]]))?;
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Address?"); Ok(Outcome::Handled) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("order", |_cx: Cx<()>| async move { Ok(Outcome::enter("order")) })
    ///     .build());
    /// assert_eq!(bot.send("/order").await.unwrap(), ["Size?"]);
    /// assert_eq!(bot.press("Small").await.unwrap(), ["small (stale: false)"]);
    /// // The wizard moved on: the same button is now stale, and the stage answers it.
    /// assert!(bot.press("Small").await.unwrap().iter().all(|t| !t.starts_with("small")));
    /// # });
    /// ```
    #[must_use]
    pub fn is_stale_press(&self) -> bool {
        let Some((tag, _)) = self
            .update()
            .callback_data()
            .and_then(crate::transport::split_callback_tag)
        else {
            return false;
        };
        step_tag(self.state().stack()).as_bytes() != tag.as_bytes()
    }

    /// Sends a text to the update's chat **now**, before the session is committed.
    ///
    /// Use it only when the handler needs the message to exist at once; a message sent
    /// this way is not withdrawn if the update is later retried or rolled back.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .command("report", |cx: Cx<()>| async move {
    ///         cx.reply("Your report is ready.");
    ///         cx.send_now("Building your report...").await?; // sent before the reply above
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// let texts = bot.send("/report").await.unwrap();
    /// assert_eq!(texts, ["Building your report...", "Your report is ready."]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::Transport`] when sending fails, or when the update has no chat.
    pub async fn send_now(&self, text: impl Into<String>) -> Result<()> {
        let u = self.update();
        let chat_id = u.chat_id().ok_or_else(|| {
            Error::Transport(Box::new(crate::error::Message(
                "the update has no chat".into(),
            )))
        })?;
        let mut msg = Outgoing::text(chat_id, text);
        if let Outgoing::Text { thread_id, .. } = &mut msg {
            *thread_id = u.thread_id();
        }
        self.inner
            .env
            .transport
            .send(&msg)
            .await
            .map_err(Error::Transport)
    }

    /// Answers the callback query of this update (held back like replies). Does nothing
    /// for other updates.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    /// use stagecraft::transport::Outgoing;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .callback("save", |cx: Cx<()>| async move {
    ///         cx.answer_callback(Some("Saved".into()));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// bot.texts_of(bot.callback("save")).await.unwrap();
    /// assert!(matches!(bot.last_call(), Some(Outgoing::AnswerCallback { .. })));
    /// # });
    /// ```
    pub fn answer_callback(&self, text: Option<String>) {
        if let Some(id) = self.update().callback_id() {
            self.send_later(Outgoing::answer_callback(id, text));
        }
    }

    /// The replies queued so far.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .on_text(|cx: Cx<()>| async move {
    ///         cx.reply("one");
    ///         cx.reply("two");
    ///         let queued = cx.pending_replies().len();
    ///         cx.reply(format!("{queued} queued before this"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("go").await.unwrap(), ["one", "two", "2 queued before this"]);
    /// # });
    /// ```
    #[must_use]
    pub fn pending_replies(&self) -> Vec<Outgoing> {
        lock(&self.inner.outbox).replies.as_slice().to_vec()
    }

    /// Takes the held-back replies for delivery; later ones are dropped. The bound
    /// buttons of their keyboards get the tag of the step the user is at now.
    pub(crate) fn take_outbox(&self) -> Replies {
        let mut replies = {
            let mut outbox = lock(&self.inner.outbox);
            outbox.closed = true;
            std::mem::take(&mut outbox.replies)
        };
        let mut tag = None;
        for msg in replies.as_mut_slice() {
            if let Some(markup) = msg.reply_markup_mut() {
                let tag = tag.get_or_insert_with(|| step_tag(self.state().stack()));
                crate::transport::bind_markup(markup, tag.0);
            }
        }
        replies
    }

    /// The active scene's id (the top of the stack).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("help").build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |_cx: Cx<()>| async move { Ok(Outcome::enter("help")) })
    ///     .command("where", |cx: Cx<()>| async move {
    ///         cx.reply(format!("{:?}", cx.current_scene()));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/where").await.unwrap(), ["None"]);
    /// bot.send("/help").await.unwrap();
    /// assert_eq!(bot.send("/where").await.unwrap(), [r#"Some("help")"#]);
    /// # });
    /// ```
    #[must_use]
    pub fn current_scene(&self) -> Option<String> {
        self.state().stack().last().map(|f| f.scene.clone())
    }

    /// The active wizard's cursor (`None` outside a wizard).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let step = |cx: Cx<()>| async move {
    ///     cx.reply(format!("step {:?}", cx.cursor()));
    ///     Ok(Outcome::Next)
    /// };
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup").step(step).step(step).build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// assert_eq!(bot.send("/signup").await.unwrap(), ["step Some(0)"]);
    /// assert_eq!(bot.send("Ada").await.unwrap(), ["step Some(1)"]);
    /// # });
    /// ```
    #[must_use]
    pub fn cursor(&self) -> Option<i64> {
        self.state().stack().last().and_then(|f| f.cursor)
    }

    /// The ids of the scene stack, bottom first.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let show = |cx: Cx<()>| async move {
    ///     cx.reply(cx.stack().join(" > "));
    ///     Ok(Outcome::Handled)
    /// };
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("menu")
    ///         .command("settings", |_cx: Cx<()>| async move { Ok(Outcome::push("settings")) })
    ///         .on_text(show)
    ///         .build())
    ///     .scene(Scene::builder("settings").on_text(show).build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("menu", |_cx: Cx<()>| async move { Ok(Outcome::enter("menu")) })
    ///     .build());
    /// bot.send("/menu").await.unwrap();
    /// assert_eq!(bot.send("where?").await.unwrap(), ["menu"]);
    /// bot.send("/settings").await.unwrap();
    /// assert_eq!(bot.send("where?").await.unwrap(), ["menu > settings"]);
    /// # });
    /// ```
    #[must_use]
    pub fn stack(&self) -> Vec<String> {
        self.state()
            .stack()
            .iter()
            .map(|f| f.scene.clone())
            .collect()
    }

    /// Reads the active scene's state as `T` (mirrors [`session`](Self::session)).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("guess")
    ///         .on_enter(|cx: Cx<()>| async move {
    ///             cx.set_scene_state(JsonState(serde_json::json!({"secret": 7})))?;
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .on_text(|cx: Cx<()>| async move {
    ///             let secret = cx.scene_state(|s: &JsonState| s.0["secret"].as_i64())?;
    ///             let guess = cx.update().text().and_then(|t| t.parse().ok());
    ///             cx.reply(if guess == secret { "Right!" } else { "No." });
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("guess", |_cx: Cx<()>| async move { Ok(Outcome::enter("guess")) })
    ///     .build());
    /// bot.send("/guess").await.unwrap();
    /// assert_eq!(bot.send("3").await.unwrap(), ["No."]);
    /// assert_eq!(bot.send("7").await.unwrap(), ["Right!"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::NoActiveScene`], [`Error::StateType`] when the state is not a `T`, or
    /// [`Error::Finished`] after the commit.
    pub fn scene_state<T: SceneState, R>(&self, f: impl FnOnce(&T) -> R) -> Result<R> {
        let st = self.state();
        let frame = st.top()?;
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

    /// Changes the active scene's state as `T` (mirrors [`session_mut`](Self::session_mut)).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("tally")
    ///         .on_text(|cx: Cx<()>| async move {
    ///             let n = cx.scene_state_mut(|s: &mut JsonState| {
    ///                 let n = s.0["n"].as_i64().unwrap_or(0) + 1;
    ///                 s.0["n"] = n.into();
    ///                 n
    ///             })?;
    ///             cx.reply(format!("{n} in this scene"));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("tally", |_cx: Cx<()>| async move { Ok(Outcome::enter("tally")) })
    ///     .build());
    /// bot.send("/tally").await.unwrap();
    /// assert_eq!(bot.send("a").await.unwrap(), ["1 in this scene"]);
    /// assert_eq!(bot.send("b").await.unwrap(), ["2 in this scene"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`scene_state`](Self::scene_state).
    pub fn scene_state_mut<T: SceneState, R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        let mut st = self.state();
        let frame = st.top_mut()?;
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

    /// Replaces the active scene's state (Telegraf's `ctx.scene.state = ...`).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("draft")
    ///         .command("show", |cx: Cx<()>| async move {
    ///             let last = cx.scene_state(|s: &JsonState| s.0["last"].clone())?;
    ///             cx.reply(format!("last: {last}"));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .on_text(|cx: Cx<()>| async move {
    ///             let text = cx.update().text().unwrap_or_default().to_owned();
    ///             cx.set_scene_state(JsonState(serde_json::json!({ "last": text })))?;
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("draft", |_cx: Cx<()>| async move { Ok(Outcome::enter("draft")) })
    ///     .build());
    /// bot.send("/draft").await.unwrap();
    /// bot.send("Dear Ada,").await.unwrap();
    /// assert_eq!(bot.send("/show").await.unwrap(), [r#"last: "Dear Ada,""#]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::NoActiveScene`], or [`Error::Finished`] after the commit.
    pub fn set_scene_state(&self, state: impl SceneState) -> Result<()> {
        self.state().top_mut()?.state = Box::new(state);
        Ok(())
    }

    /// Takes the result a child scene left with ([`Outcome::leave_with`]), in the
    /// parent's resume hook: `Ok(None)` when it left without one.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("order")
    ///         .command("size", |_cx: Cx<()>| async move { Ok(Outcome::push("size")) })
    ///         .on_resume(|cx: Cx<()>| async move {
    ///             let size: Option<String> = cx.take_result()?;
    ///             cx.reply(format!("Size: {}", size.unwrap_or_default()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .scene(Scene::builder("size")
    ///         .on_enter(|cx: Cx<()>| async move { cx.reply("Small or large?"); Ok(Outcome::Handled) })
    ///         .on_text(|cx: Cx<()>| async move {
    ///             Ok(Outcome::leave_with(cx.update().text().unwrap_or_default().to_owned()))
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("order", |_cx: Cx<()>| async move { Ok(Outcome::enter("order")) })
    ///     .build());
    /// bot.send("/order").await.unwrap();
    /// assert_eq!(bot.send("/size").await.unwrap(), ["Small or large?"]);
    /// assert_eq!(bot.send("large").await.unwrap(), ["Size: large"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::ResultType`], naming both types, when the result is not a `T` (it stays
    /// for a read as its own type).
    pub fn take_result<T: Any>(&self) -> Result<Option<T>> {
        let mut slot = lock(&self.inner.result);
        let Some(handoff) = slot.take() else {
            return Ok(None);
        };
        match handoff.downcast::<T>() {
            Ok(v) => Ok(Some(v)),
            Err(other) => {
                let found = other.type_name();
                *slot = Some(other);
                Err(Error::ResultType {
                    expected: std::any::type_name::<T>(),
                    found,
                })
            }
        }
    }

    pub(crate) fn set_result(&self, r: Option<crate::outcome::Handoff>) {
        *lock(&self.inner.result) = r;
    }

    /// A value given to [`PipelineBuilder::extension`](crate::pipeline::PipelineBuilder::extension).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// struct Greeting(&'static str);
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .extension(Greeting("Welcome aboard!"))
    ///     .command("start", |cx: Cx<()>| async move {
    ///         let text = cx.extension::<Greeting>().map_or("Hi.", |g| g.0);
    ///         cx.reply(text);
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/start").await.unwrap(), ["Welcome aboard!"]);
    /// # });
    /// ```
    #[must_use]
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.inner
            .env
            .extensions
            .get(&std::any::TypeId::of::<T>())
            .and_then(|v| v.downcast_ref::<T>())
    }

    /// The time of this update, in Unix seconds (the clock is read once per update, at
    /// the first call, so every TTL decision of one update sees the same instant).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b
    ///     .on_text(|cx: Cx<()>| async move {
    ///         cx.reply(cx.now_s().to_string());
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// let before: i64 = bot.send("now").await.unwrap()[0].parse().unwrap();
    /// bot.advance(90);
    /// let after: i64 = bot.send("now").await.unwrap()[0].parse().unwrap();
    /// assert_eq!(after - before, 90);
    /// # });
    /// ```
    #[must_use]
    pub fn now_s(&self) -> i64 {
        self.inner
            .now_ms
            .get_or_init(|| self.inner.env.clock.now_ms())
            .div_euclid(1000)
    }

    /// Makes `stage` the interpreter of this context's transitions while its handlers
    /// run (a pipeline with several stages); a no-op for the environment's own stage.
    pub(crate) fn enter_stage(&self, id: usize, stage: impl FnOnce() -> Arc<dyn Interpret<S, U>>) {
        let env_stage = self.inner.env.interpret.as_ref();
        if !self.inner.stage_set.load(Ordering::Acquire) && env_stage.is_some_and(|e| e.id() == id)
        {
            // The common case: one stage, the environment's.
            return;
        }
        let mut slot = lock(&self.inner.stage);
        let current = slot.as_ref().or(self.inner.env.interpret.as_ref());
        if current.is_none_or(|c| c.id() != id) {
            *slot = Some(stage());
            self.inner.stage_set.store(true, Ordering::Release);
        }
    }

    /// Counts a transition (see [`SessionState::begin_transition`]).
    pub(crate) fn begin_transition(&self, outcome: &Outcome) -> Result<()> {
        self.begin_transition_in(&mut self.state(), outcome)
    }

    fn begin_transition_in(&self, st: &mut SessionState<S>, outcome: &Outcome) -> Result<()> {
        st.begin_transition()?;
        tracing::debug!(target: "stagecraft::stage", key = ?self.key(), ?outcome, "transition");
        Ok(())
    }

    /// Applies a transition now, as if a handler had returned it. The Telegraf-style
    /// calls of [`scene`](Self::scene) and [`wizard`](Self::wizard) are built on it.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder().scene(Scene::builder("help").build()).build().unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |cx: Cx<()>| async move {
    ///         cx.apply(Outcome::enter("help")).await?;
    ///         cx.reply(format!("Now in {:?}.", cx.current_scene()));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/help").await.unwrap(), [r#"Now in Some("help")."#]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownScene`], [`Error::NoActiveScene`], [`Error::Transition`], the
    /// error of a hook or step the transition ran, or [`Error::Finished`] after the
    /// commit.
    pub async fn apply(&self, outcome: Outcome) -> Result<()> {
        if !outcome.is_transition() {
            return Ok(());
        }
        if outcome.is_cursor_move() {
            // A cursor move runs nothing: applied here, without the stage.
            let mut st = self.state();
            self.begin_transition_in(&mut st, &outcome)?;
            return st.move_cursor(|c| outcome.moved_cursor(c).unwrap_or(c));
        }
        let own = if self.inner.stage_set.load(Ordering::Acquire) {
            lock(&self.inner.stage).clone()
        } else {
            None
        };
        let stage = own.or_else(|| self.inner.env.interpret.clone());
        match stage {
            Some(stage) => stage.apply(self.clone(), outcome).await,
            None => Err(Error::Transition("no stage is installed")),
        }
    }

    /// Telegraf's `ctx.scene`: enter, leave, reenter, push, current.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("help")
    ///         .on_enter(|cx: Cx<()>| async move { cx.reply("Help. /back to leave."); Ok(Outcome::Handled) })
    ///         .command("back", |cx: Cx<()>| async move {
    ///             cx.scene().leave().await?;
    ///             cx.reply(format!("Left; now in {:?}.", cx.scene().current()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |cx: Cx<()>| async move {
    ///         cx.scene().enter("help").await?;
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/help").await.unwrap(), ["Help. /back to leave."]);
    /// assert_eq!(bot.send("/back").await.unwrap(), ["Left; now in None."]);
    /// # });
    /// ```
    #[must_use]
    pub fn scene(&self) -> SceneCx<'_, S, U> {
        SceneCx { cx: self }
    }

    /// Telegraf's `ctx.wizard`: cursor moves for the active wizard.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .command("skip", |cx: Cx<()>| async move {
    ///             cx.wizard().next()?;
    ///             cx.reply(format!("Skipped to step {}.", cx.wizard().cursor().unwrap()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Age?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Thanks!"); Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// assert_eq!(bot.send("/signup").await.unwrap(), ["Name?"]);
    /// assert_eq!(bot.send("/skip").await.unwrap(), ["Skipped to step 2."]);
    /// assert_eq!(bot.send("42").await.unwrap(), ["Thanks!"]);
    /// # });
    /// ```
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
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("help")
    ///         .on_enter(|cx: Cx<()>| async move { cx.reply("Help."); Ok(Outcome::Handled) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |cx: Cx<()>| async move {
    ///         cx.scene().enter("help").await?; // the enter hook runs now
    ///         cx.reply("Ask away.");
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/help").await.unwrap(), ["Help.", "Ask away."]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn enter(&self, id: &str) -> Result<()> {
        self.cx.apply(Outcome::enter(id)).await
    }

    /// Like [`enter`](Self::enter) with an initial state; `silent` skips every hook.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("greet")
    ///         .on_enter(|cx: Cx<()>| async move {
    ///             let name = cx.scene_state(|s: &JsonState| s.0["name"].as_str().map(str::to_owned))?;
    ///             cx.reply(format!("Hello, {}!", name.unwrap_or_default()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("greet", |cx: Cx<()>| async move {
    ///         let state = JsonState(serde_json::json!({"name": "Ada"}));
    ///         cx.scene().enter_with("greet", state, false).await?;
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/greet").await.unwrap(), ["Hello, Ada!"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn enter_with(&self, id: &str, state: impl SceneState, silent: bool) -> Result<()> {
        let mut e = Enter::new(id).state(state);
        e.silent = silent;
        self.cx.apply(Outcome::Enter(e)).await
    }

    /// Enters `id` on top of the current scene, which resumes when `id` leaves.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("menu")
    ///         .command("settings", |cx: Cx<()>| async move {
    ///             cx.scene().push("settings").await?;
    ///             cx.reply(cx.stack().join(" > "));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .scene(Scene::builder("settings").build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("menu", |_cx: Cx<()>| async move { Ok(Outcome::enter("menu")) })
    ///     .build());
    /// bot.send("/menu").await.unwrap();
    /// assert_eq!(bot.send("/settings").await.unwrap(), ["menu > settings"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn push(&self, id: &str) -> Result<()> {
        self.cx.apply(Outcome::push(id)).await
    }

    /// Leaves the current scene (no-op when none is active).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("help")
    ///         .command("done", |cx: Cx<()>| async move {
    ///             cx.scene().leave().await?;
    ///             cx.reply(format!("Left; active: {:?}.", cx.scene().current()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |_cx: Cx<()>| async move { Ok(Outcome::enter("help")) })
    ///     .build());
    /// bot.send("/help").await.unwrap();
    /// assert_eq!(bot.send("/done").await.unwrap(), ["Left; active: None."]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn leave(&self) -> Result<()> {
        self.cx.apply(Outcome::leave()).await
    }

    /// Leaves and re-enters the current scene with its state (no-op when none is active).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("quiz")
    ///         .on_enter(|cx: Cx<()>| async move { cx.reply("Question 1?"); Ok(Outcome::Handled) })
    ///         .command("again", |cx: Cx<()>| async move {
    ///             cx.scene().reenter().await?; // its enter hook runs again
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("quiz", |_cx: Cx<()>| async move { Ok(Outcome::enter("quiz")) })
    ///     .build());
    /// assert_eq!(bot.send("/quiz").await.unwrap(), ["Question 1?"]);
    /// assert_eq!(bot.send("/again").await.unwrap(), ["Question 1?"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`Cx::apply`].
    pub async fn reenter(&self) -> Result<()> {
        self.cx.apply(Outcome::Reenter).await
    }

    /// The active scene's id.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder().scene(Scene::builder("help").build()).build().unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |cx: Cx<()>| async move {
    ///         cx.scene().enter("help").await?;
    ///         cx.reply(format!("now in {}", cx.scene().current().unwrap_or_default()));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build());
    /// assert_eq!(bot.send("/help").await.unwrap(), ["now in help"]);
    /// # });
    /// ```
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
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let step = |cx: Cx<()>| async move {
    ///     cx.reply(format!("step {:?}", cx.wizard().cursor()));
    ///     Ok(Outcome::Next)
    /// };
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup").step(step).step(step).build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// assert_eq!(bot.send("/signup").await.unwrap(), ["step Some(0)"]);
    /// assert_eq!(bot.send("Ada").await.unwrap(), ["step Some(1)"]);
    /// # });
    /// ```
    #[must_use]
    pub fn cursor(&self) -> Option<i64> {
        self.cx.cursor()
    }

    /// Moves to the next step.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .command("skip", |cx: Cx<()>| async move {
    ///             cx.wizard().next()?;
    ///             cx.reply("Skipped.");
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Age?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Thanks!"); Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// assert_eq!(bot.send("/signup").await.unwrap(), ["Name?"]);
    /// assert_eq!(bot.send("/skip").await.unwrap(), ["Skipped."]);
    /// // The step after the skipped one takes the next update.
    /// assert_eq!(bot.send("42").await.unwrap(), ["Thanks!"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::NoActiveScene`] or [`Error::Transition`] when the active scene is not a
    /// wizard; [`Error::Finished`] after the commit.
    pub fn next(&self) -> Result<()> {
        self.cx.state().move_cursor(|c| c.saturating_add(1))
    }

    /// Moves to the previous step.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .command("back", |cx: Cx<()>| async move {
    ///             cx.wizard().back()?;
    ///             cx.reply(format!("Back to step {}.", cx.wizard().cursor().unwrap()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Age?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Thanks!"); Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// assert_eq!(bot.send("Ada").await.unwrap(), ["Age?"]);
    /// assert_eq!(bot.send("/back").await.unwrap(), ["Back to step 1."]);
    /// assert_eq!(bot.send("Grace").await.unwrap(), ["Age?"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`next`](Self::next).
    pub fn back(&self) -> Result<()> {
        self.cx.state().move_cursor(|c| c.saturating_sub(1))
    }

    /// Moves to step `n`.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .command("restart", |cx: Cx<()>| async move {
    ///             cx.wizard().select_step(0)?;
    ///             cx.reply("From the top: send anything.");
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Age?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Thanks!"); Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// bot.send("Ada").await.unwrap();
    /// assert_eq!(bot.send("/restart").await.unwrap(), ["From the top: send anything."]);
    /// assert_eq!(bot.send("ok").await.unwrap(), ["Name?"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`next`](Self::next).
    pub fn select_step(&self, n: i64) -> Result<()> {
        self.cx.state().move_cursor(|_| n)
    }
}

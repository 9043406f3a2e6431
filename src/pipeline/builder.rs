//! [`PipelineBuilder`]: the bot's configuration, turned into a [`Pipeline`] by
//! [`build`](PipelineBuilder::build), which also fixes the cache policy.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use super::cycle::{CachePolicy, Cycle, Guarantees, Loader};
use super::keys::KeyTable;
use super::lease::{LeaseConfig, LeaseMode, Leases};
use super::{
    DEFAULT_CACHE_CAPACITY, DEFAULT_DEADLINE, DEFAULT_DEDUP_WINDOW, DEFAULT_MAX_SESSION_SIZE,
    Pipeline,
};
use crate::clock::{Clock, SystemClock};
use crate::context::{Env, Interpret};
use crate::handler::{Chain, Handler, Link, Matcher, Middleware, RouteBuilder, Routes};
use crate::record::SessionData;
use crate::session::{DecodePolicy, ErrorPolicy, KeyStrategy, SavePolicy};
use crate::stage::Stage;
use crate::store::{Codec, MemoryStore, SessionStore};
use crate::transport::{LogTransport, Transport};
use crate::update::Update;

/// Whether an update reads its session from the store when this process wrote it last.
///
/// With [`WriteThrough`](Self::WriteThrough), a pipeline keeps each session it committed
/// (decoded, with the version the store gave it) and the next update of that key uses it
/// without a read: an update then costs one store round trip (the compare-and-set write)
/// instead of two. It stays correct when someone else writes the record meanwhile (another
/// process, another pipeline on the same store, an operator): the write's
/// compare-and-set fails, and the update runs again on a fresh read, its held-back
/// replies dropped (this rerun does not count against
/// [`max_attempts`](PipelineBuilder::max_attempts)). What it gives up: an update that
/// writes nothing (a read-only command) answers from this process's last write even if
/// another process changed the record since, and a handler's own side effects (other
/// than replies) may run twice in that case. Records with a TTL are read again once the
/// cached copy would have expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum CacheMode {
    /// [`WriteThrough`](Self::WriteThrough) where the store says it is normally written
    /// by one process ([`MemoryStore`], `SqliteStore`) and this pipeline takes no leases;
    /// [`Validate`](Self::Validate) otherwise (Redis, PostgreSQL, MySQL, custom stores),
    /// except for an update whose key's lease was passed straight on to it by the
    /// previous update here: the lease was held all along, so that update uses the
    /// session the previous one committed, unread (a writer that takes no lease is caught
    /// by compare-and-set as above).
    #[default]
    Auto,
    /// Every update reads its record; the cache only saves decoding it again when the
    /// bytes read are the ones this process wrote.
    Validate,
    /// Updates skip reading a record this process wrote last (see the type's docs), also
    /// with leases and on stores that do not do it by default.
    WriteThrough,
}

/// Builds a [`Pipeline`]. Links run in the order they are added.
///
/// ```
/// use stagecraft::prelude::*;
/// use stagecraft::session::{ErrorPolicy, KeyStrategy};
///
/// let bot = Pipeline::<()>::builder()
///     .key(KeyStrategy::Chat)
///     .error_policy(ErrorPolicy::RollBack)
///     .command("ping", |cx: Cx<()>| async move { cx.reply("pong"); Ok(Outcome::Handled) })
///     .build();
/// # let _ = bot;
/// ```
pub struct PipelineBuilder<S, U = crate::update::TelegramUpdate> {
    store: Arc<dyn SessionStore>,
    codec: Codec,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn Transport>,
    key: KeyStrategy<U>,
    default_session: Box<dyn Fn() -> S + Send + Sync>,
    bot_username: Option<String>,
    error_policy: ErrorPolicy,
    decode_policy: DecodePolicy,
    save_policy: SavePolicy,
    max_attempts: usize,
    guarantees: Guarantees,
    extensions: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    keys: KeyTable<S>,
    cache_mode: CacheMode,
    chain: Chain<S, U>,
    interpret: Option<Arc<dyn Interpret<S, U>>>,
    /// The first stage's upgrades of stored scene state.
    upgrades: Option<Arc<dyn crate::record::StateUpgrades>>,
    /// The first stage, when it declares timeouts or expiry hooks: it runs them.
    timers: Option<Stage<S, U>>,
    /// The bot's data version and its upgrades.
    versions: crate::record::DataVersions,
    leases: Leases,
}

impl<S, U> fmt::Debug for PipelineBuilder<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("store", &self.store)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl<S: SessionData, U: Update> PipelineBuilder<S, U> {
    pub(super) fn new(default: impl Fn() -> S + Send + Sync + 'static) -> Self {
        Self {
            store: Arc::new(MemoryStore::new()),
            codec: Codec::Json,
            clock: Arc::new(SystemClock),
            transport: Arc::new(LogTransport),
            key: KeyStrategy::UserInChat,
            default_session: Box::new(default),
            bot_username: None,
            error_policy: ErrorPolicy::WriteAnyway,
            decode_policy: DecodePolicy::Mend,
            save_policy: SavePolicy::Changed,
            max_attempts: usize::MAX,
            guarantees: Guarantees {
                outbox: false,
                dedup_window: DEFAULT_DEDUP_WINDOW,
                deadline: Some(DEFAULT_DEADLINE),
                max_session_size: DEFAULT_MAX_SESSION_SIZE,
            },
            extensions: HashMap::new(),
            keys: KeyTable::new(DEFAULT_CACHE_CAPACITY),
            cache_mode: CacheMode::Auto,
            chain: Chain::default(),
            interpret: None,
            upgrades: None,
            timers: None,
            versions: crate::record::DataVersions::default(),
            leases: Leases::default(),
        }
    }

    /// Where sessions are stored (default: a [`MemoryStore`]).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new(); // a clone shares the same sessions
    /// let bot = Pipeline::<u32>::builder()
    ///     .store(store.clone())
    ///     .on_text(|cx: Cx<u32>| async move { cx.session_mut(|n| *n += 1)?; Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"hi"}}"#).unwrap();
    /// let key = bot.key_of(&msg).unwrap();
    /// assert!(store.load(&key).await.unwrap().is_none());
    /// bot.handle(msg).await.unwrap();
    /// assert!(store.load(&key).await.unwrap().is_some());
    /// # });
    /// ```
    #[must_use]
    pub fn store(mut self, store: impl SessionStore) -> Self {
        self.store = Arc::new(store);
        self
    }

    /// Like [`store`](Self::store), for a store already behind an `Arc`.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store: Arc<dyn SessionStore> = Arc::new(MemoryStore::new());
    /// let count = |cx: Cx<u32>| async move {
    ///     let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///     cx.reply(format!("#{n}"));
    ///     Ok(Outcome::Handled)
    /// };
    /// let replies = RecordingTransport::new();
    /// // Two pipelines on one store (say, two replicas) see the same sessions.
    /// let replica = |store: Arc<dyn SessionStore>| {
    ///     Pipeline::<u32>::builder().store_arc(store).transport(replies.clone()).on_text(count).build()
    /// };
    /// let a = replica(Arc::clone(&store));
    /// let b = replica(store);
    /// let msg = |id: i64| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"hi"}}}}"#)).unwrap();
    /// a.handle(msg(1)).await.unwrap();
    /// b.handle(msg(2)).await.unwrap();
    /// assert_eq!(replies.texts(), ["#1", "#2"]);
    /// # });
    /// ```
    #[must_use]
    pub fn store_arc(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.store = store;
        self
    }

    /// How sessions are encoded (default: JSON).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::store::Codec;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let bot = Pipeline::<u32>::builder()
    ///     .store(store.clone())
    ///     .codec(Codec::Json)
    ///     .on_text(|cx: Cx<u32>| async move { cx.session_mut(|n| *n = 42)?; Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"hi"}}"#).unwrap();
    /// let key = bot.key_of(&msg).unwrap();
    /// bot.handle(msg).await.unwrap();
    /// let record = store.load(&key).await.unwrap().unwrap();
    /// let json: serde_json::Value = serde_json::from_slice(&record.bytes).unwrap();
    /// assert_eq!(json["data"], 42);
    /// # });
    /// ```
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
        self.codec = codec;
        self
    }

    /// How an update's session key is derived (default: [`KeyStrategy::UserInChat`]).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<u32>::builder()
    ///     .key(KeyStrategy::Chat) // one session per chat, shared by its members
    ///     .transport(replies.clone())
    ///     .on_text(|cx: Cx<u32>| async move {
    ///         let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///         cx.reply(format!("message #{n} in this chat"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let from = |id: i64, user: i64| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":-7}},"from":{{"id":{user}}},"text":"hi"}}}}"#)).unwrap();
    /// bot.handle(from(1, 10)).await.unwrap();
    /// bot.handle(from(2, 11)).await.unwrap();
    /// assert_eq!(replies.texts(), ["message #1 in this chat", "message #2 in this chat"]);
    /// # });
    /// ```
    #[must_use]
    pub fn key(mut self, key: KeyStrategy<U>) -> Self {
        self.key = key;
        self
    }

    /// The clock for scene TTLs (default: the system clock).
    ///
    /// ```
    /// use stagecraft::clock::ManualClock;
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<()>::builder()
    ///     .clock(ManualClock::at_secs(1_700_000_000))
    ///     .transport(replies.clone())
    ///     .on_text(|cx: Cx<()>| async move { cx.reply(cx.now_s().to_string()); Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"time?"}}"#).unwrap();
    /// bot.handle(msg).await.unwrap();
    /// assert_eq!(replies.texts(), ["1700000000"]);
    /// # });
    /// ```
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Where replies go (default: [`LogTransport`]).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new(); // records what a real transport would send
    /// let bot = Pipeline::<()>::builder()
    ///     .transport(replies.clone())
    ///     .command("ping", |cx: Cx<()>| async move { cx.reply("pong"); Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"/ping"}}"#).unwrap();
    /// bot.handle(msg).await.unwrap();
    /// assert_eq!(replies.texts(), ["pong"]);
    /// # });
    /// ```
    #[must_use]
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Arc::new(transport);
        self
    }

    /// The bot's username: commands addressed to another bot (`/start@other`) then
    /// don't match.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<()>::builder()
    ///     .bot_username("shop_bot")
    ///     .transport(replies.clone())
    ///     .command("start", |cx: Cx<()>| async move { cx.reply("Welcome!"); Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = |id: i64, text: &str| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":-7}},"from":{{"id":5}},"text":"{text}"}}}}"#)).unwrap();
    /// bot.handle(msg(1, "/start@other_bot")).await.unwrap(); // not for us
    /// bot.handle(msg(2, "/start@shop_bot")).await.unwrap();
    /// assert_eq!(replies.texts(), ["Welcome!"]);
    /// # });
    /// ```
    #[must_use]
    pub fn bot_username(mut self, name: impl Into<String>) -> Self {
        self.bot_username = Some(name.into());
        self
    }

    /// What a handler error does to the session (default: [`ErrorPolicy::WriteAnyway`]).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<u32>::builder()
    ///     .error_policy(ErrorPolicy::RollBack)
    ///     .transport(replies.clone())
    ///     .on_text(|cx: Cx<u32>| async move {
    ///         let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///         if cx.update().text() == Some("fail") {
    ///             return Err("the payment service is down".into());
    ///         }
    ///         cx.reply(format!("#{n}"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = |id: i64, text: &str| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"{text}"}}}}"#)).unwrap();
    /// bot.handle(msg(1, "hi")).await.unwrap();
    /// assert!(bot.handle(msg(2, "fail")).await.is_err()); // its change is not written
    /// bot.handle(msg(3, "hi")).await.unwrap();
    /// assert_eq!(replies.texts(), ["#1", "#2"]);
    /// # });
    /// ```
    #[must_use]
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.error_policy = policy;
        self
    }

    /// What an undecodable stored session does (default: [`DecodePolicy::Mend`]).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::session::DecodePolicy;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let bot = Pipeline::<u32>::builder()
    ///     .store(store.clone())
    ///     .decode_policy(DecodePolicy::Fail)
    ///     .on_text(|cx: Cx<u32>| async move { cx.session_mut(|n| *n += 1)?; Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"hi"}}"#).unwrap();
    /// store.save(&bot.key_of(&msg).unwrap(), b"not a session", None).await.unwrap();
    /// // Under `Mend` the update would start a fresh session; under `Fail` it fails.
    /// assert!(bot.handle(msg).await.is_err());
    /// # });
    /// ```
    #[must_use]
    pub fn decode_policy(mut self, policy: DecodePolicy) -> Self {
        self.decode_policy = policy;
        self
    }

    /// The version of the bot's data type `S` (default 0: unversioned). Records carry
    /// it (`"dv"`); one written at an older version is brought up to this one on load
    /// by the [`upgrade_data`](Self::upgrade_data) functions, in order. Data that no
    /// upgrade reaches starts afresh under [`DecodePolicy::Mend`], its JSON kept in the
    /// record's `lost` field. A record written by a newer version is read as it is.
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use stagecraft::prelude::*;
    ///
    /// // Version 1 stored `{"name": "Ada Lovelace"}`; version 2 splits the name.
    /// #[derive(Debug, Default, Serialize, Deserialize)]
    /// struct Profile { first: String, last: String }
    ///
    /// let bot = Pipeline::<Profile>::builder()
    ///     .data_version(2)
    ///     .upgrade_data(1, |mut v| {
    ///         let name = v["name"].take();
    ///         let name = name.as_str().unwrap_or_default();
    ///         let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    ///         Ok(serde_json::json!({"first": first, "last": last}))
    ///     })
    ///     .build();
    /// # drop(bot);
    /// ```
    #[must_use]
    pub fn data_version(mut self, version: u32) -> Self {
        self.versions.current = version;
        self
    }

    /// Upgrades stored data of version `from` to version `from + 1` (see
    /// [`data_version`](Self::data_version)): `f` turns the old JSON into the new.
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use stagecraft::prelude::*;
    ///
    /// #[derive(Debug, Default, Serialize, Deserialize)]
    /// struct Profile { first: String, last: String }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<Profile>::builder()
    ///     .store(store.clone())
    ///     .transport(replies.clone())
    ///     .data_version(1)
    ///     .upgrade_data(0, |mut v| {
    ///         let name = v["name"].take();
    ///         let (first, last) = name.as_str().unwrap_or_default().split_once(' ').unwrap_or_default();
    ///         Ok(serde_json::json!({"first": first, "last": last}))
    ///     })
    ///     .on_text(|cx: Cx<Profile>| async move {
    ///         let first = cx.session(|p| p.first.clone())?;
    ///         cx.reply(format!("Hello, {first}!"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"hi"}}"#).unwrap();
    /// // A record written before the data had a version.
    /// let old = br#"{"v":1,"data":{"name":"Ada Lovelace"}}"#;
    /// store.save(&bot.key_of(&msg).unwrap(), old, None).await.unwrap();
    /// bot.handle(msg).await.unwrap();
    /// assert_eq!(replies.texts(), ["Hello, Ada!"]);
    /// # });
    /// ```
    #[must_use]
    pub fn upgrade_data(
        mut self,
        from: u32,
        f: impl Fn(serde_json::Value) -> std::result::Result<serde_json::Value, crate::error::BoxError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.versions.upgrades.insert(from, Arc::new(f));
        self
    }

    /// When sessions are written (default: [`SavePolicy::Changed`]).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::session::SavePolicy;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let bot = Pipeline::<u32>::builder()
    ///     .store(store.clone())
    ///     .save_policy(SavePolicy::Touched)
    ///     .dedup_window(0)
    ///     .command("bump", |cx: Cx<u32>| async move { cx.session_mut(|n| *n += 1)?; Ok(Outcome::Handled) })
    ///     .command("show", |cx: Cx<u32>| async move { cx.session(|n| *n)?; Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = |id: i64, text: &str| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"{text}"}}}}"#)).unwrap();
    /// let key = bot.key_of(&msg(0, "")).unwrap();
    /// bot.handle(msg(1, "/bump")).await.unwrap();
    /// let before = store.load(&key).await.unwrap().unwrap().version;
    /// bot.handle(msg(2, "/show")).await.unwrap(); // only reads: written anyway
    /// let after = store.load(&key).await.unwrap().unwrap().version;
    /// assert_ne!(before, after);
    /// # });
    /// ```
    #[must_use]
    pub fn save_policy(mut self, policy: SavePolicy) -> Self {
        self.save_policy = policy;
        self
    }

    /// At most how many times an update runs when its write keeps conflicting with
    /// another writer (at least 1). By default there is no count: reruns back off
    /// (1 ms doubling to 200 ms, with jitter) until the update's
    /// [`deadline`](Self::deadline). An update whose attempts run out is not dropped
    /// silently: `handle` fails with [`Error::NotHandled`](crate::Error::NotHandled),
    /// which hands the update back.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// // Give up after three attempts of an update whose write keeps conflicting.
    /// let bot = Pipeline::<u32>::builder()
    ///     .max_attempts(3)
    ///     .on_text(|cx: Cx<u32>| async move { cx.session_mut(|n| *n += 1)?; Ok(Outcome::Handled) })
    ///     .build();
    /// # drop(bot);
    /// ```
    #[must_use]
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.max_attempts = n.max(1);
        self
    }

    /// How long one update may take, from when it takes its key's lease to its commit,
    /// handlers and conflict reruns included (default [`DEFAULT_DEADLINE`], 60 s). Past
    /// it the handler is stopped and the update fails with
    /// [`Error::Deadline`](crate::Error::Deadline): the session follows the
    /// [`ErrorPolicy`], and the key and its lease are released, so the next update of
    /// that user runs. `None`: no deadline (a handler that never returns then holds its
    /// key for good).
    ///
    /// ```
    /// use std::time::Duration;
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = Pipeline::<()>::builder()
    ///     .deadline(Some(Duration::from_millis(50)))
    ///     .on_text(|_cx: Cx<()>| async move {
    ///         tokio::time::sleep(Duration::from_secs(60)).await; // a call that hangs
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"hi"}}"#).unwrap();
    /// assert!(matches!(bot.handle(msg).await, Err(Error::Deadline { .. })));
    /// # });
    /// ```
    #[must_use]
    pub fn deadline(mut self, deadline: Option<std::time::Duration>) -> Self {
        self.guarantees.deadline = deadline;
        self
    }

    /// The largest session record the pipeline stores, in bytes, as encoded with
    /// everything the record holds (data, scene stack, recent update ids, pending
    /// replies): default [`DEFAULT_MAX_SESSION_SIZE`] (1 MiB); `usize::MAX` for none.
    ///
    /// An update whose session would be stored larger fails with
    /// [`Error::SessionTooLarge`](crate::Error::SessionTooLarge) (naming the key, the
    /// size and the limit), under either [`ErrorPolicy`]: nothing is written, so the
    /// stored record stays as it was before the update, and its held-back replies are
    /// dropped (they would announce a state that was not stored). The next update of the
    /// key starts from the stored record. A record stored larger before (a limit
    /// lowered since) is still read; only writes are checked.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = Pipeline::<String>::builder()
    ///     .max_session_size(100)
    ///     .on_text(|cx: Cx<String>| async move {
    ///         let text = cx.update().message_text().unwrap_or_default().to_owned();
    ///         cx.session_mut(|s| s.push_str(&text))?;
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = |text: &str| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":1,"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"{text}"}}}}"#)).unwrap();
    /// let err = bot.handle(msg(&"x".repeat(200))).await.unwrap_err();
    /// assert!(matches!(err, Error::SessionTooLarge { size, limit: 100, .. } if size > 200));
    /// # });
    /// ```
    #[must_use]
    pub fn max_session_size(mut self, bytes: usize) -> Self {
        self.guarantees.max_session_size = bytes;
        self
    }

    /// Whether replies go through the session's outbox (default: off).
    ///
    /// On, the held-back replies of an update that writes its session are written with
    /// it, in the same compare-and-set write, delivered after it, and then marked
    /// delivered with one more write; after a crash between the commit and that mark,
    /// they are sent before the key's next update runs. Delivery is then at least once:
    /// only a reply in flight at a crash may arrive twice. The session is loaded before
    /// the first handler of every update (to find such replies). Off, replies are sent
    /// after the commit, and a crash in between loses them.
    ///
    /// The mark costs a second write per replying step: about half the throughput on
    /// SQLite in the bench example (`docs/delivery.md` has the figures), hence off by
    /// default.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<()>::builder()
    ///     .outbox(true) // replies are written with the session, then delivered
    ///     .transport(replies.clone())
    ///     .command("ping", |cx: Cx<()>| async move { cx.reply("pong"); Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"/ping"}}"#).unwrap();
    /// bot.handle(msg).await.unwrap();
    /// assert_eq!(replies.texts(), ["pong"]);
    /// # });
    /// ```
    #[must_use]
    pub fn outbox(mut self, on: bool) -> Self {
        self.guarantees.outbox = on;
        self
    }

    /// How many recent update ids each session remembers to recognise an update
    /// delivered twice (default [`DEFAULT_DEDUP_WINDOW`]; 0 turns de-duplication off).
    ///
    /// The ids are stored in the session record and checked under the key's lease, so
    /// a redelivered update (a webhook retry, a `getUpdates` offset not confirmed before
    /// a crash) is skipped on every replica: `handle` returns
    /// [`Dispatch::Duplicate`](crate::pipeline::Dispatch::Duplicate) and no handler runs.
    /// Updates without an id (and events) are never skipped. Every update with an id
    /// then writes its session (to remember the id), and loads it before its first
    /// handler.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<u32>::builder()
    ///     .dedup_window(100)
    ///     .transport(replies.clone())
    ///     .command("pay", |cx: Cx<u32>| async move {
    ///         let n = cx.session_mut(|paid| { *paid += 1; *paid })?;
    ///         cx.reply(format!("Payment #{n} done."));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":7,"message":{"chat":{"id":5},"from":{"id":5},"text":"/pay"}}"#).unwrap();
    /// assert!(matches!(bot.handle(msg.clone()).await.unwrap(), Dispatch::Handled));
    /// // The same update delivered again (a webhook retry) runs no handler.
    /// assert!(matches!(bot.handle(msg).await.unwrap(), Dispatch::Duplicate));
    /// assert_eq!(replies.texts(), ["Payment #1 done."]);
    /// # });
    /// ```
    #[must_use]
    pub fn dedup_window(mut self, window: usize) -> Self {
        self.guarantees.dedup_window = window;
        self
    }

    /// How many decoded sessions to keep between updates (default
    /// [`DEFAULT_CACHE_CAPACITY`]; 0 turns the cache off). An update whose stored record
    /// is byte-for-byte what this process last committed reuses the decoded session
    /// instead of decoding it again; a record another process changed is always decoded.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<u32>::builder()
    ///     .session_cache(0) // decode every session from the store
    ///     .transport(replies.clone())
    ///     .on_text(|cx: Cx<u32>| async move {
    ///         let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///         cx.reply(format!("#{n}"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = |id: i64| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"hi"}}}}"#)).unwrap();
    /// bot.handle(msg(1)).await.unwrap();
    /// bot.handle(msg(2)).await.unwrap();
    /// assert_eq!(replies.texts(), ["#1", "#2"]);
    /// # });
    /// ```
    #[must_use]
    pub fn session_cache(mut self, capacity: usize) -> Self {
        self.keys.set_capacity(capacity);
        self
    }

    /// Whether updates read their session when this process wrote it last (default
    /// [`CacheMode::Auto`]: not on Redis, PostgreSQL, MySQL or with leases (SQLite's
    /// default); yes on the memory store and on SQLite with leases off). See [`CacheMode`] for what write-through gives up.
    /// Needs the session cache ([`session_cache`](Self::session_cache) above 0).
    ///
    /// ```
    /// use stagecraft::pipeline::CacheMode;
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let store = MemoryStore::new();
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<u32>::builder()
    ///     .store(store.clone())
    ///     .cache_mode(CacheMode::Validate) // read the store on every update
    ///     .transport(replies.clone())
    ///     .on_text(|cx: Cx<u32>| async move {
    ///         let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///         cx.reply(format!("#{n}"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = |id: i64| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"hi"}}}}"#)).unwrap();
    /// bot.handle(msg(1)).await.unwrap();
    /// // Someone else deletes the record (an operator's reset): the next update sees it.
    /// let key = bot.key_of(&msg(0)).unwrap();
    /// let version = store.load(&key).await.unwrap().unwrap().version;
    /// store.delete(&key, version).await.unwrap();
    /// bot.handle(msg(2)).await.unwrap();
    /// assert_eq!(replies.texts(), ["#1", "#1"]);
    /// # });
    /// ```
    #[must_use]
    pub fn cache_mode(mut self, mode: CacheMode) -> Self {
        self.cache_mode = mode;
        self
    }

    /// Makes `value` available to every handler through
    /// [`Cx::extension`](crate::Cx::extension) (a database pool, an API client, the
    /// teloxide `Bot`...). One value per type; a second call with the same type
    /// replaces the first.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// struct Prices { tea: u32 }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<()>::builder()
    ///     .extension(Prices { tea: 3 })
    ///     .transport(replies.clone())
    ///     .command("price", |cx: Cx<()>| async move {
    ///         let tea = cx.extension::<Prices>().map_or(0, |p| p.tea);
    ///         cx.reply(format!("Tea: {tea} EUR"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"/price"}}"#).unwrap();
    /// bot.handle(msg).await.unwrap();
    /// assert_eq!(replies.texts(), ["Tea: 3 EUR"]);
    /// # });
    /// ```
    #[must_use]
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// Adds a middleware: `|cx, next| async move { ...; next.run(cx).await }`.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<()>::builder()
    ///     .transport(replies.clone())
    ///     .middleware(|cx: Cx<()>, next: Next<(), TelegramUpdate>| async move {
    ///         if cx.update().text() == Some("/admin") {
    ///             cx.reply("Not allowed.");
    ///             return Ok(Outcome::Handled); // the handlers after it do not run
    ///         }
    ///         next.run(cx).await
    ///     })
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("ok"); Ok(Outcome::Handled) })
    ///     .build();
    /// let msg = |id: i64, text: &str| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"{text}"}}}}"#)).unwrap();
    /// bot.handle(msg(1, "/admin")).await.unwrap();
    /// bot.handle(msg(2, "hello")).await.unwrap();
    /// assert_eq!(replies.texts(), ["Not allowed.", "ok"]);
    /// # });
    /// ```
    #[must_use]
    pub fn middleware(mut self, m: impl Middleware<S, U>) -> Self {
        self.chain.push(Link::Middleware(Arc::new(m)));
        self
    }

    /// Adds `stage` as a middleware at this point of the chain (Telegraf's
    /// `bot.use(stage.middleware())`). The first stage added also applies the
    /// transitions that handlers outside any stage return (a bot-level `/start`
    /// answering [`Outcome::enter`](crate::Outcome::enter)). Each stage added runs once
    /// per update, in chain order.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("echo")
    ///         .on_text(|cx: Cx<()>| async move {
    ///             cx.reply(format!("echo: {}", cx.update().text().unwrap_or_default()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<()>::builder()
    ///     .transport(replies.clone())
    ///     .stage(stage)
    ///     .command("echo", |_cx: Cx<()>| async move { Ok(Outcome::enter("echo")) })
    ///     .build();
    /// let msg = |id: i64, text: &str| TelegramUpdate::from_json(&format!(
    ///     r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"{text}"}}}}"#)).unwrap();
    /// bot.handle(msg(1, "/echo")).await.unwrap();
    /// bot.handle(msg(2, "hi")).await.unwrap();
    /// assert_eq!(replies.texts(), ["echo: hi"]);
    /// # });
    /// ```
    #[must_use]
    pub fn stage(mut self, stage: Stage<S, U>) -> Self {
        if self.interpret.is_none() {
            self.interpret = Some(stage.interpreter());
            self.upgrades = Some(Arc::new(stage.clone()));
            self.timers = stage.has_timers().then(|| stage.clone());
        }
        self.middleware(stage)
    }

    /// How updates take per-key leases in the store, so that replicas sharing it handle
    /// the updates of one key one at a time (default: [`LeaseConfig::new`], i.e. leases
    /// whenever the store supports them). See `docs/concurrency.md`.
    ///
    /// ```
    /// use stagecraft::pipeline::{LeaseConfig, LeaseMode};
    /// use stagecraft::prelude::*;
    ///
    /// // One process on its own store: no leases needed.
    /// let mut leases = LeaseConfig::new();
    /// leases.mode = LeaseMode::Off;
    /// let bot = Pipeline::<()>::builder().leases(leases).build();
    /// # drop(bot);
    /// ```
    #[must_use]
    pub fn leases(mut self, config: LeaseConfig) -> Self {
        self.leases.set_config(config);
        self
    }

    /// Bounds the updates of one key that wait in this process behind the one running:
    /// an update arriving when `n` already wait fails at once with
    /// [`Error::Overloaded`](crate::Error::Overloaded) and is not handled (default
    /// [`DEFAULT_MAX_QUEUE_PER_KEY`](crate::pipeline::DEFAULT_MAX_QUEUE_PER_KEY), 1,000; `usize::MAX` for no bound). Other keys are
    /// not affected.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// // A user who floods the bot gets `Error::Overloaded` beyond 10 waiting updates.
    /// let bot = Pipeline::<()>::builder()
    ///     .max_queue_per_key(10)
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("ok"); Ok(Outcome::Handled) })
    ///     .build();
    /// # drop(bot);
    /// ```
    #[must_use]
    pub fn max_queue_per_key(mut self, n: usize) -> Self {
        self.keys.set_max_waiting(Some(n));
        self
    }

    /// The cache policy of this configuration: whether (and when) an update may use its
    /// key's cached session without reading the store.
    fn cache_policy(&self) -> CachePolicy {
        let leases = match self.leases.config.mode {
            LeaseMode::Off => false,
            LeaseMode::On => true,
            LeaseMode::Auto => self.store.leases().is_some(),
        };
        let caches = self.keys.caches();
        let hint = self.store.cache_hint();
        let own_writes = caches
            && match self.cache_mode {
                CacheMode::Validate => false,
                CacheMode::WriteThrough => true,
                CacheMode::Auto => {
                    !leases && hint.as_ref().is_some_and(|h| h.write_through_by_default)
                }
            };
        let passed_lease = caches && leases && self.cache_mode != CacheMode::Validate;
        if own_writes && hint.is_none() {
            tracing::warn!(target: "stagecraft::session", store = self.store.backend(),
                "CacheMode::WriteThrough: this store does not say how long its records \
                 live, so every update reads its record");
        }
        CachePolicy::new(hint.map(|h| (h.ttl, h.clock)), own_writes, passed_lease)
    }

    /// Finishes the pipeline.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = Pipeline::<()>::builder()
    ///     .command("ping", |cx: Cx<()>| async move { cx.reply("pong"); Ok(Outcome::Handled) })
    ///     .build();
    /// let ping = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"/ping"}}"#).unwrap();
    /// let other = TelegramUpdate::from_json(
    ///     r#"{"update_id":2,"message":{"chat":{"id":5},"from":{"id":5},"text":"hello"}}"#).unwrap();
    /// assert!(matches!(bot.handle(ping).await.unwrap(), Dispatch::Handled));
    /// assert!(matches!(bot.handle(other).await.unwrap(), Dispatch::Unhandled));
    /// # });
    /// ```
    #[must_use]
    pub fn build(self) -> Pipeline<S, U> {
        let policy = self.cache_policy();
        let loader = Arc::new(Loader::new(
            self.store,
            policy,
            self.decode_policy,
            Arc::clone(&self.clock),
            self.upgrades,
            self.versions,
        ));
        let env = Env {
            default_session: self.default_session,
            transport: self.transport,
            clock: self.clock,
            extensions: self.extensions,
            bot_username: self.bot_username,
            interpret: self.interpret,
            source: loader.clone(),
        };
        let cycle = Arc::new(Cycle {
            env: Arc::new(env),
            loader,
            keys: self.keys,
            chain: Arc::new(self.chain),
            leases: self.leases,
            codec: self.codec,
            error_policy: self.error_policy,
            save_policy: self.save_policy,
            max_attempts: self.max_attempts,
            guarantees: self.guarantees,
            key: self.key,
            timers: self.timers,
        });
        Pipeline::from_cycle(cycle)
    }
}

impl<S: SessionData, U: Update> RouteBuilder<S, U> for PipelineBuilder<S, U> {
    fn push_route(mut self, matcher: Matcher<U>, handler: Arc<dyn Handler<S, U>>) -> Self {
        if let Some(Link::Routes(routes)) = self.chain.last_mut() {
            routes.list.push((matcher, handler));
        } else {
            let mut routes = Routes::default();
            routes.list.push((matcher, handler));
            self.chain.push(Link::Routes(routes));
        }
        self
    }
}

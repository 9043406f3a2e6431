//! [`Pipeline`]: the bot's middleware chain wrapped in the session cycle.
//!
//! For each update: derive the session key; join that key's FIFO queue (synchronously,
//! at arrival); run the chain (middleware, the stage, bot-level handlers), loading the
//! session lazily before the first handler; write the session back with
//! compare-and-set; send the held-back replies; release the key. A conflicting write
//! (another process moved the record on) reruns the update on the fresh session and
//! drops the replies of the lost attempt.
//!
//! With a store that has leases (Redis, PostgreSQL, MySQL), the key's lease in the store
//! is taken before the session is loaded and given back after the replies were sent, so
//! updates of one key also take turns across processes (see [`LeaseConfig`]).

mod keys;
mod lease;

pub use lease::{LeaseConfig, LeaseMode};

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tracing::Instrument;

use crate::clock::{Clock, SystemClock};
use crate::context::Cx;
use crate::error::{Error, Result};
use crate::handler::{BoxFuture, Handler, HandlerResult, Matcher, Middleware, RouteBuilder};
use crate::session::{
    Cached, DecodePolicy, ErrorPolicy, Key, RecordRef, SavePolicy, SessionData, Trust,
};
use crate::stage::{Outcome, Stage, run_routes_at};
use crate::store::{Codec, MemoryStore, Preload, SessionStore};
use crate::transport::{LogTransport, Transport};
use crate::update::{TelegramUpdate, Update};

use keys::KeyTable;

/// How many decoded sessions a pipeline keeps by default (see [`PipelineBuilder::session_cache`]).
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

enum Link<S, U> {
    Middleware(Arc<dyn Middleware<S, U>>),
    Stage,
    Route(crate::handler::Routes<S, U>),
}

pub(crate) struct Shared<S, U> {
    pub(crate) store: Arc<dyn SessionStore>,
    pub(crate) codec: Codec,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) key: Key<U>,
    pub(crate) default_session: Box<dyn Fn() -> S + Send + Sync>,
    pub(crate) stage: Option<Arc<Stage<S, U>>>,
    pub(crate) bot_username: Option<String>,
    pub(crate) error_policy: ErrorPolicy,
    pub(crate) decode_policy: DecodePolicy,
    pub(crate) save_policy: SavePolicy,
    pub(crate) max_attempts: usize,
    pub(crate) extensions: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    /// Per-key locks and cached sessions.
    pub(crate) keys: KeyTable<S>,
    pub(crate) cache_mode: CacheMode,
    /// Set by [`PipelineBuilder::build`] when updates may skip reading their own last write.
    pub(crate) write_through: Option<WriteThrough>,
    /// Set by [`PipelineBuilder::build`] when an update that got its key's lease passed on
    /// from the previous update here may skip reading that update's write: leases are on,
    /// the cache is, the store says how long its records live and the cache mode is not
    /// [`CacheMode::Validate`].
    pub(crate) lease_trust: Option<WriteThrough>,
    chain: Vec<Link<S, U>>,
    leases: lease::Leases,
}

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

/// The store's record lifetime, for trusting the write-through cache.
pub(crate) struct WriteThrough {
    pub(crate) ttl_ms: Option<i64>,
    pub(crate) clock: Arc<dyn Clock>,
}

/// What became of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatch {
    /// Some handler took it.
    Handled,
    /// It went through the whole chain untaken (a dptree adapter passes it on).
    Unhandled,
}

/// The bot: session cycle, middleware chain, stage and handlers.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use stagecraft::prelude::*;
///
/// #[derive(Debug, Default, Serialize, Deserialize)]
/// struct Data { count: u32 }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let replies = RecordingTransport::new();
/// let bot = Pipeline::<Data>::builder()
///     .transport(replies.clone())
///     .on_text(|cx: Cx<Data>| async move {
///         let n = cx.session_mut(|s| { s.count += 1; s.count })?;
///         cx.reply(format!("message #{n}"));
///         Ok(Outcome::Handled)
///     })
///     .build();
/// let msg = |id: i64| TelegramUpdate::from_json(&format!(
///     r#"{{"update_id":{id},"message":{{"chat":{{"id":5}},"from":{{"id":5}},"text":"hi"}}}}"#)).unwrap();
/// bot.handle(msg(1)).await.unwrap();
/// bot.handle(msg(2)).await.unwrap();
/// assert_eq!(replies.texts(), ["message #1", "message #2"]);
/// # });
/// ```
pub struct Pipeline<S, U = TelegramUpdate> {
    shared: Arc<Shared<S, U>>,
}

impl<S, U> Clone for Pipeline<S, U> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, U> fmt::Debug for Pipeline<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("store", &self.shared.store)
            .field("key", &self.shared.key)
            .field("error_policy", &self.shared.error_policy)
            .finish_non_exhaustive()
    }
}

/// Builds a [`Pipeline`]. Links run in the order they are added.
pub struct PipelineBuilder<S, U> {
    shared: Shared<S, U>,
}

impl<S, U> fmt::Debug for PipelineBuilder<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PipelineBuilder")
    }
}

impl<S: SessionData + Default, U: Update> Pipeline<S, U> {
    /// Starts building, with `S::default()` for new sessions, a [`MemoryStore`], the
    /// user-in-chat key, the system clock and a logging transport.
    #[must_use]
    pub fn builder() -> PipelineBuilder<S, U> {
        Self::builder_with(S::default)
    }
}

impl<S: SessionData, U: Update> Pipeline<S, U> {
    /// Starts building, with `default` creating new sessions.
    #[must_use]
    pub fn builder_with(default: impl Fn() -> S + Send + Sync + 'static) -> PipelineBuilder<S, U> {
        PipelineBuilder {
            shared: Shared {
                store: Arc::new(MemoryStore::new()),
                codec: Codec::Json,
                clock: Arc::new(SystemClock),
                transport: Arc::new(LogTransport),
                key: Key::UserInChat,
                default_session: Box::new(default),
                stage: None,
                bot_username: None,
                error_policy: ErrorPolicy::WriteAnyway,
                decode_policy: DecodePolicy::Fail,
                save_policy: SavePolicy::Changed,
                max_attempts: 3,
                extensions: HashMap::new(),
                keys: KeyTable::new(DEFAULT_CACHE_CAPACITY),
                cache_mode: CacheMode::Auto,
                write_through: None,
                lease_trust: None,
                chain: Vec::new(),
                leases: lease::Leases::default(),
            },
        }
    }

    /// Handles one update: the whole session cycle.
    ///
    /// The update joins its key's queue when this is **called** (not when the future is
    /// first polled), so updates of one key are handled in call order however the
    /// returned futures are scheduled; updates of different keys run concurrently.
    ///
    /// # Errors
    /// A handler's error (after the session was written or rolled back per the
    /// [`ErrorPolicy`]), a store failure, a conflict that persisted through every
    /// attempt, or a failed reply.
    pub fn handle(&self, update: U) -> impl Future<Output = Result<Dispatch>> + Send + 'static {
        let update = Arc::new(update);
        let shared_keys = &self.shared.keys;
        let (key, ticket) = match self
            .shared
            .key
            .with_key(&update, |k| shared_keys.enqueue(k))
        {
            Some((k, t)) => (Some(k), Some(t)),
            None => (None, None),
        };
        let shared = Arc::clone(&self.shared);
        // Built only when a subscriber wants it (a disabled span still costs its
        // `log`-compatibility check on every update).
        let span = if tracing::enabled!(target: "stagecraft::stage", tracing::Level::INFO) {
            tracing::info_span!(
                target: "stagecraft::stage",
                "update",
                update_id = update.update_id(),
                key = key.as_deref(),
                scene = tracing::field::Empty,
                step = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        async move {
            let _permit = match ticket {
                Some(t) => Some(t.acquire().await?),
                None => None,
            };
            run_update(&shared, &update, key).await
        }
        .instrument(span)
    }

    /// Number of keys whose updates are running or queued in this process: 0 when the
    /// bot is idle. It walks the per-key table (which also holds the cached sessions), so
    /// it is meant for tests and diagnostics, not for every update.
    #[must_use]
    pub fn keys_in_flight(&self) -> usize {
        self.shared.keys.in_flight()
    }

    /// The store sessions live in.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        &self.shared.store
    }
}

async fn run_update<S: SessionData, U: Update>(
    shared: &Arc<Shared<S, U>>,
    update: &Arc<U>,
    key: Option<Arc<str>>,
) -> Result<Dispatch> {
    // The key's lease across processes (when the store has leases): taken before the
    // session is loaded, given back after the save and the replies, or passed on to the
    // next update of the key waiting here.
    let (mut lease, preloaded, passed) = match &key {
        Some(k) => match shared.keys.take_lease(k) {
            // Passed on by the previous update of the key: held all along, so nobody
            // else took it since; that update's committed session may stand for the
            // record (see `Shared::lease_trust`), compare-and-set catching any writer
            // that takes no lease.
            Some(held) if !held.is_lost() => (Some(held), Preload::NotRead, true),
            passed => {
                // One a renewal found gone while it waited here is taken afresh.
                if let Some(lost) = passed {
                    lost.release().await;
                }
                let (lease, preloaded) = shared.leases.acquire(&shared.store, k).await?;
                (lease, preloaded, false)
            }
        },
        None => (None, Preload::NotRead, false),
    };
    let result = run_attempts(shared, update, key.as_ref(), &mut lease, preloaded, passed).await;
    if let (Some(held), Some(k)) = (lease, &key) {
        // Kept for the next update of the key waiting here (saving a release and an
        // acquire), unless it was lost or this process has had the key for its fair
        // share; then given back.
        let unpassed = if held.is_lost() || !shared.leases.may_keep(k) {
            Some(held)
        } else {
            shared.keys.pass_lease(k, held)
        };
        if let Some(held) = unpassed {
            held.release().await;
            // A holding streak exists only for keys whose lease this process took.
            if shared.keys.waiting(k) == 0 {
                shared.leases.end_streak(k);
            }
        }
    }
    result
}

async fn run_attempts<S: SessionData, U: Update>(
    shared: &Arc<Shared<S, U>>,
    update: &Arc<U>,
    key: Option<&Arc<str>>,
    lease: &mut Option<lease::HeldLease>,
    mut preloaded: Preload,
    mut lease_passed: bool,
) -> Result<Dispatch> {
    let mut attempt = 0;
    let mut trust_cache = true;
    loop {
        attempt += 1;
        let cx = Cx::new(Arc::clone(update), key.cloned(), Arc::clone(shared));
        {
            let mut st = cx.state();
            // The record read together with the lease stands for this attempt's load; a
            // rerun after a conflict loads afresh.
            st.preloaded = std::mem::take(&mut preloaded);
            // A rerun after a conflict never trusts the cache: it reads. Nor does an update
            // holding a lease, unless write-through was asked for, or the lease came
            // straight from the previous update here, which committed under it.
            st.may_trust = trust_cache
                && ((shared.write_through.is_some()
                    && (lease.is_none() || shared.cache_mode == CacheMode::WriteThrough))
                    || (lease_passed && shared.lease_trust.is_some()));
        }
        let outcome = Next {
            shared: Arc::clone(shared),
            index: 0,
        }
        .run(cx.clone())
        .await;
        let (dispatch, failure) = match outcome {
            Ok(Outcome::Pass) => (Dispatch::Unhandled, None),
            Ok(_) => (Dispatch::Handled, None),
            Err(e) => (Dispatch::Handled, Some(Error::handler(e))),
        };
        let roll_back = failure.is_some() && shared.error_policy == ErrorPolicy::RollBack;
        if !roll_back {
            let result = commit(shared, &cx).await;
            // A stale cached session (someone else wrote the record since this process
            // did) is not a lost race: the rerun reads, and is not counted as an attempt.
            let stale_cache = cx.state().trusted;
            match result {
                Err(e) if e.is_conflict() && (stale_cache || attempt < shared.max_attempts) => {
                    if stale_cache {
                        tracing::debug!(target: "stagecraft::session", key = ?key,
                            "cached session was stale; reading it and running the update again");
                        attempt -= 1;
                        trust_cache = false;
                    } else {
                        tracing::info!(target: "stagecraft::session", key = ?key, attempt,
                            "session changed elsewhere; running the update again");
                    }
                    lease_passed = false;
                    // A lost lease (a renewal came too late) is taken again before the
                    // rerun, so that the rerun does not race the new holder.
                    if let (Some(k), Some(held)) = (key, lease.as_ref()) {
                        if held.is_lost() {
                            if let Some(old) = lease.take() {
                                old.release().await;
                            }
                            *lease = shared.leases.acquire(&shared.store, k).await?.0;
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
                Ok(()) => {}
            }
            for msg in cx.take_outbox() {
                shared
                    .transport
                    .send(&msg)
                    .await
                    .map_err(Error::Transport)?;
            }
        }
        return match failure {
            Some(e) => Err(e),
            None => Ok(dispatch),
        };
    }
}

/// Writes the session back if it needs it, then hands the decoded session to the cache.
async fn commit<S: SessionData, U: Update>(shared: &Shared<S, U>, cx: &Cx<S, U>) -> Result<()> {
    let Some(key) = cx.inner.key.clone() else {
        return Ok(());
    };
    let (bytes, expected) = {
        let mut st = cx.state();
        st.closed = true;
        let needed = match shared.save_policy {
            SavePolicy::Touched => st.dirty || st.touched,
            _ => st.dirty,
        };
        if !st.loaded {
            return Ok(());
        }
        if !needed {
            keep_decoded(shared, &key, &mut st, None);
            return Ok(());
        }
        if st.data.is_none() && st.stack.is_empty() {
            (None, st.version)
        } else {
            let st = &mut *st;
            let data = st.data.get_or_insert_with(|| (shared.default_session)());
            let size_hint = st.original.as_ref().map_or(128, |o| o.len() + 32);
            let bytes = RecordRef {
                data,
                scenes: &st.stack,
            }
            .encode(shared.codec, size_hint)
            .map_err(|e| Error::Encode {
                key: key.to_string(),
                source: e,
            })?;
            if shared.save_policy == SavePolicy::Changed
                && st.original.as_deref() == Some(bytes.as_slice())
            {
                keep_decoded(shared, &key, st, None);
                return Ok(());
            }
            (Some(bytes), st.version)
        }
    };
    match (bytes, expected) {
        (Some(bytes), expected) => {
            // The record's life starts at the save: measured from just before it, the
            // cached copy never outlives the stored one.
            let trust = match shared
                .write_through
                .as_ref()
                .or(shared.lease_trust.as_ref())
            {
                None => Trust::Validate,
                Some(WriteThrough { ttl_ms: None, .. }) => Trust::Always,
                Some(WriteThrough {
                    ttl_ms: Some(ttl),
                    clock,
                }) => Trust::Until(clock.now_ms().saturating_add(*ttl)),
            };
            let version = shared.store.save(&key, &bytes, expected).await?;
            let mut st = cx.state();
            st.trust = trust;
            keep_decoded(shared, &key, &mut st, Some((version, bytes)));
        }
        (None, Some(v)) => {
            shared.keys.forget(&key);
            shared.store.delete(&key, v).await?;
        }
        (None, None) => {}
    }
    Ok(())
}

/// Moves the committed session into the cache; `written` is the new version and bytes
/// when it was saved, `None` when the stored record is unchanged.
fn keep_decoded<S: SessionData, U>(
    shared: &Shared<S, U>,
    key: &Arc<str>,
    st: &mut crate::context::SessionState<S>,
    written: Option<(crate::store::Version, Vec<u8>)>,
) {
    if !shared.keys.caches() {
        return;
    }
    let (version, bytes) = match written {
        Some(w) => w,
        None => match (st.version, st.original.take()) {
            (Some(v), Some(b)) => (v, b),
            _ => return,
        },
    };
    shared.keys.put(
        key,
        Cached {
            version,
            bytes,
            data: st.data.take(),
            stack: std::mem::take(&mut st.stack),
            trust: st.trust,
        },
    );
}

/// The rest of the chain after a middleware.
pub struct Next<S, U> {
    shared: Arc<Shared<S, U>>,
    index: usize,
}

impl<S, U> fmt::Debug for Next<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").field("index", &self.index).finish()
    }
}

impl<S: SessionData, U: Update> Next<S, U> {
    /// [`run`](Self::run), boxed: for the stage passing an update on, which would
    /// otherwise make the chain's future contain itself.
    pub(crate) fn run_boxed(self, cx: Cx<S, U>) -> BoxFuture<'static, HandlerResult> {
        Box::pin(self.run(cx))
    }

    /// Runs the rest of the chain. Its result is [`Outcome::Pass`] when nothing after
    /// took the update.
    ///
    /// The future is not boxed: awaited inside a middleware (whose own future is boxed),
    /// it costs no allocation of its own.
    pub async fn run(self, cx: Cx<S, U>) -> HandlerResult {
        let shared = self.shared;
        let bot = shared.bot_username.as_deref();
        for (i, link) in shared.chain.iter().enumerate().skip(self.index) {
            let next = Next {
                shared: Arc::clone(&shared),
                index: i + 1,
            };
            match link {
                Link::Middleware(m) => {
                    cx.ensure_loaded().await?;
                    let o = m.call(cx.clone(), next).await?;
                    if o.is_transition() {
                        // The middleware's own transition (what the chain after it
                        // answered was already applied there).
                        cx.apply(o).await?;
                        return Ok(Outcome::Handled);
                    }
                    return Ok(o);
                }
                Link::Stage => {
                    if let Some(stage) = shared.stage.clone() {
                        return stage.run(cx, next).await;
                    }
                }
                Link::Route(routes) => {
                    // Match first: an update no route takes costs no store read.
                    let Some(first) = routes.next_match(cx.update(), bot, 0) else {
                        continue;
                    };
                    cx.ensure_loaded().await?;
                    if let Some(o) = run_routes_at(routes, &cx, bot, first).await? {
                        cx.apply(o).await?;
                        return Ok(Outcome::Handled);
                    }
                }
            }
        }
        Ok(Outcome::Pass)
    }
}

impl<S: SessionData, U: Update> PipelineBuilder<S, U> {
    /// Where sessions are stored (default: a [`MemoryStore`]).
    #[must_use]
    pub fn store(mut self, store: impl SessionStore) -> Self {
        self.shared.store = Arc::new(store);
        self
    }

    /// Like [`store`](Self::store), for a store already behind an `Arc`.
    #[must_use]
    pub fn store_arc(mut self, store: Arc<dyn SessionStore>) -> Self {
        self.shared.store = store;
        self
    }

    /// How sessions are encoded (default: JSON).
    #[must_use]
    pub fn codec(mut self, codec: Codec) -> Self {
        self.shared.codec = codec;
        self
    }

    /// The session key strategy (default: [`Key::UserInChat`]).
    #[must_use]
    pub fn key(mut self, key: Key<U>) -> Self {
        self.shared.key = key;
        self
    }

    /// The clock for scene TTLs (default: the system clock).
    #[must_use]
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.shared.clock = Arc::new(clock);
        self
    }

    /// Where replies go (default: [`LogTransport`]).
    #[must_use]
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.shared.transport = Arc::new(transport);
        self
    }

    /// The bot's username: commands addressed to another bot (`/start@other`) then
    /// don't match.
    #[must_use]
    pub fn bot_username(mut self, name: impl Into<String>) -> Self {
        self.shared.bot_username = Some(name.into());
        self
    }

    /// What a handler error does to the session (default: [`ErrorPolicy::WriteAnyway`]).
    #[must_use]
    pub fn error_policy(mut self, policy: ErrorPolicy) -> Self {
        self.shared.error_policy = policy;
        self
    }

    /// What an undecodable stored session does (default: [`DecodePolicy::Fail`]).
    #[must_use]
    pub fn decode_policy(mut self, policy: DecodePolicy) -> Self {
        self.shared.decode_policy = policy;
        self
    }

    /// When sessions are written (default: [`SavePolicy::Changed`]).
    #[must_use]
    pub fn save_policy(mut self, policy: SavePolicy) -> Self {
        self.shared.save_policy = policy;
        self
    }

    /// How many times an update runs when its write keeps conflicting with another
    /// process (default 3; at least 1).
    #[must_use]
    pub fn max_attempts(mut self, n: usize) -> Self {
        self.shared.max_attempts = n.max(1);
        self
    }

    /// How many decoded sessions to keep between updates (default
    /// [`DEFAULT_CACHE_CAPACITY`]; 0 turns the cache off). An update whose stored record
    /// is byte-for-byte what this process last committed reuses the decoded session
    /// instead of decoding it again; a record another process changed is always decoded.
    #[must_use]
    pub fn session_cache(mut self, capacity: usize) -> Self {
        self.shared.keys.set_capacity(capacity);
        self
    }

    /// Whether updates read their session when this process wrote it last (default
    /// [`CacheMode::Auto`]: not on Redis, PostgreSQL, MySQL or with leases; yes on the
    /// memory and SQLite stores). See [`CacheMode`] for what write-through gives up.
    /// Needs the session cache ([`session_cache`](Self::session_cache) above 0).
    #[must_use]
    pub fn cache_mode(mut self, mode: CacheMode) -> Self {
        self.shared.cache_mode = mode;
        self
    }

    /// Makes `value` available to every handler through [`Cx::extension`] (a database
    /// pool, an API client, the teloxide `Bot`...). One value per type; a second call
    /// with the same type replaces the first.
    #[must_use]
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.shared
            .extensions
            .insert(TypeId::of::<T>(), Arc::new(value));
        self
    }

    /// Adds a middleware: `|cx, next| async move { ...; next.run(cx).await }`.
    #[must_use]
    pub fn middleware(mut self, m: impl Middleware<S, U>) -> Self {
        self.shared.chain.push(Link::Middleware(Arc::new(m)));
        self
    }

    /// Adds the stage at this point of the chain.
    #[must_use]
    pub fn stage(mut self, stage: Stage<S, U>) -> Self {
        self.shared.stage = Some(Arc::new(stage));
        self.shared.chain.push(Link::Stage);
        self
    }

    /// Finishes the pipeline.
    #[must_use]
    pub fn build(mut self) -> Pipeline<S, U> {
        let shared = &mut self.shared;
        let leases = match shared.leases.config.mode {
            LeaseMode::Off => false,
            LeaseMode::On => true,
            LeaseMode::Auto => shared.store.leases().is_some(),
        };
        let hint = shared.store.cache_hint();
        let wanted = match shared.cache_mode {
            CacheMode::Validate => false,
            CacheMode::WriteThrough => true,
            CacheMode::Auto => !leases && hint.as_ref().is_some_and(|h| h.write_through_by_default),
        };
        let life = hint.as_ref().map(|h| WriteThrough {
            ttl_ms: h
                .ttl
                .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
            clock: Arc::clone(&h.clock),
        });
        shared.lease_trust = life
            .filter(|_| leases && shared.keys.caches() && shared.cache_mode != CacheMode::Validate);
        shared.write_through = match (wanted && shared.keys.caches(), hint) {
            (true, Some(h)) => Some(WriteThrough {
                ttl_ms: h
                    .ttl
                    .map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
                clock: h.clock,
            }),
            (true, None) => {
                tracing::warn!(target: "stagecraft::session", store = shared.store.backend(),
                    "CacheMode::WriteThrough: this store does not say how long its records \
                     live, so every update reads its record");
                None
            }
            (false, _) => None,
        };
        Pipeline {
            shared: Arc::new(self.shared),
        }
    }

    /// How updates take per-key leases in the store, so that replicas sharing it handle
    /// the updates of one key one at a time (default: [`LeaseConfig::new`], i.e. leases
    /// whenever the store supports them). See `docs/concurrency.md`.
    #[must_use]
    pub fn leases(mut self, config: LeaseConfig) -> Self {
        self.shared.leases.set_config(config);
        self
    }

    /// Bounds the updates of one key that wait in this process behind the one running:
    /// an update arriving when `n` already wait fails at once with
    /// [`Error::Overloaded`] and is not handled (default: unbounded). Other keys are not
    /// affected.
    #[must_use]
    pub fn max_queue_per_key(mut self, n: usize) -> Self {
        self.shared.keys.set_max_waiting(Some(n));
        self
    }
}

impl<S: SessionData, U: Update> RouteBuilder<S, U> for PipelineBuilder<S, U> {
    fn push_route(mut self, matcher: Matcher<U>, handler: Arc<dyn Handler<S, U>>) -> Self {
        if let Some(Link::Route(routes)) = self.shared.chain.last_mut() {
            routes.list.push((matcher, handler));
        } else {
            let mut routes = crate::handler::Routes::default();
            routes.list.push((matcher, handler));
            self.shared.chain.push(Link::Route(routes));
        }
        self
    }
}

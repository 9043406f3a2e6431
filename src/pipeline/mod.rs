//! [`Pipeline`]: the bot's middleware chain wrapped in the session cycle.
//!
//! For each update: derive the session key; join that key's FIFO queue (synchronously,
//! at arrival); then the session cycle (`cycle.rs`): take the key's lease, run the chain
//! (middleware, the stage, bot-level handlers), loading the session lazily before the
//! first handler; write the session back with compare-and-set; send the held-back
//! replies; release the key. A conflicting write (another process moved the record on)
//! reruns the update on the fresh session and drops the replies of the lost attempt.
//!
//! With a store that has leases (SQLite, Redis, PostgreSQL, MySQL), the key's lease in the store
//! is taken before the session is loaded and given back after the replies were sent, so
//! updates of one key also take turns across processes (see [`LeaseConfig`]).
//!
//! The files: `mod.rs` (this: the entry points and the per-key queue), `builder.rs`
//! (configuration and the cache policy), `cycle.rs` (the cycle's one owner: load,
//! attempts, commit, delivery, release), `keys.rs` (the per-key table of locks, cached
//! sessions and passed leases), `lease.rs` (leases across processes), `migrate.rs` (a
//! group's sessions moving to its supergroup).

mod builder;
mod cycle;
mod keys;
mod lease;
mod migrate;

pub use builder::{CacheMode, PipelineBuilder};
pub use lease::{LeaseConfig, LeaseMode};
pub use migrate::ChatMoved;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use tracing::Instrument;

use crate::error::Result;
use crate::handler::Handler;
use crate::record::SessionData;
use crate::store::SessionStore;
use crate::update::{TelegramUpdate, Update};

use cycle::{Cycle, Work};

/// Counts one woken session into `report`.
fn tally(
    report: &mut PendingDelivery,
    done: std::result::Result<Result<(usize, bool)>, tokio::task::JoinError>,
) {
    match done {
        Ok(Ok((replies, fired))) => {
            report.keys += 1;
            report.replies += replies;
            report.timers += usize::from(fired);
        }
        Ok(Err(_)) | Err(_) => report.failed += 1,
    }
}

/// How long one update may take by default (see [`PipelineBuilder::deadline`]).
pub const DEFAULT_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// How many recent update ids a session remembers by default (see
/// [`PipelineBuilder::dedup_window`]).
pub const DEFAULT_DEDUP_WINDOW: usize = 16;

/// The largest session record a pipeline stores by default, in bytes: 1 MiB (see
/// [`PipelineBuilder::max_session_size`]).
pub const DEFAULT_MAX_SESSION_SIZE: usize = 1 << 20;

/// How many updates of one key may wait behind the running one by default (see
/// [`PipelineBuilder::max_queue_per_key`]).
pub const DEFAULT_MAX_QUEUE_PER_KEY: usize = 1000;

/// How many decoded sessions a pipeline keeps by default (see [`PipelineBuilder::session_cache`]).
pub const DEFAULT_CACHE_CAPACITY: usize = 100_000;

/// What became of an update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Dispatch {
    /// Some handler took it.
    Handled,
    /// It went through the whole chain untaken (a dptree adapter passes it on).
    Unhandled,
    /// It was handled before (its id is among its session's recent update ids: a
    /// webhook retry, a redelivery after a crash): no handler ran, nothing changed.
    /// Replies its first delivery left pending were sent.
    Duplicate,
}

/// What [`Pipeline::wake_due`] (and [`Pipeline::deliver_pending`]) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingDelivery {
    /// Sessions that had work due (pending replies, a timer) and were handled.
    pub keys: usize,
    /// Pending replies sent (those of committed steps; not the replies of timeouts).
    pub replies: usize,
    /// Timers that fired (timeout hooks run, scenes expired with their hooks).
    pub timers: usize,
    /// Sessions whose replies could not be delivered (the transport failed, the record
    /// could not be read): they stay pending, for the key's next update or the next
    /// call. Each is logged with its cause.
    pub failed: usize,
}

/// What a pipeline holds per key ([`Pipeline::footprint`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Footprint {
    /// Entries of the per-key table: keys running, waiting or caching a session.
    pub keys: usize,
    /// Decoded sessions cached between updates.
    pub cached_sessions: usize,
    /// Keys whose lease this process holds through consecutive updates.
    pub lease_streaks: usize,
}

/// The task of [`Pipeline::spawn_timers`]: it stops when dropped.
#[derive(Debug)]
pub struct TimerTask {
    handle: tokio::task::JoinHandle<()>,
}

impl TimerTask {
    /// Stops it (as dropping it does).
    pub fn stop(self) {}
}

impl Drop for TimerTask {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// How many sessions [`Pipeline::wake_due`] handles at once.
const PENDING_PARALLEL: usize = 16;

/// How many more keys than it tried already [`Pipeline::wake_due`] asks the
/// index for at a time.
const PENDING_BATCH: usize = 256;

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
    cycle: Arc<Cycle<S, U>>,
}

impl<S, U> Clone for Pipeline<S, U> {
    fn clone(&self) -> Self {
        Self {
            cycle: Arc::clone(&self.cycle),
        }
    }
}

impl<S, U> fmt::Debug for Pipeline<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipeline")
            .field("store", &self.cycle.loader.store)
            .field("key", &self.cycle.key)
            .field("error_policy", &self.cycle.error_policy)
            .finish_non_exhaustive()
    }
}

impl<S: SessionData + Default, U: Update> Pipeline<S, U> {
    /// Starts building, with `S::default()` for new sessions, a
    /// [`MemoryStore`](crate::store::MemoryStore), the user-in-chat key, the system clock
    /// and a logging transport.
    #[must_use]
    pub fn builder() -> PipelineBuilder<S, U> {
        Self::builder_with(S::default)
    }
}

impl<S: SessionData, U: Update> Pipeline<S, U> {
    /// Starts building, with `default` creating new sessions.
    #[must_use]
    pub fn builder_with(default: impl Fn() -> S + Send + Sync + 'static) -> PipelineBuilder<S, U> {
        PipelineBuilder::new(default)
    }

    fn from_cycle(cycle: Arc<Cycle<S, U>>) -> Self {
        Self { cycle }
    }

    /// Handles one update: the whole session cycle.
    ///
    /// The update joins its key's queue when this is **called** (not when the future is
    /// first polled), so updates of one key are handled in call order however the
    /// returned futures are scheduled; updates of different keys run concurrently.
    ///
    /// # Errors
    /// A handler's error (after the session was written or rolled back per the
    /// [`ErrorPolicy`](crate::session::ErrorPolicy)), a store failure, a conflict that
    /// persisted through every attempt, or a failed reply.
    pub fn handle(&self, update: U) -> impl Future<Output = Result<Dispatch>> + Send + 'static {
        // Taken here: the group's sessions move to the supergroup's id; no handler (no
        // wizard step waiting for an answer) sees the service message.
        let migration = update.chat_migration();
        let keys = self.cycle.keys();
        let queued = match migration {
            Some(_) => None,
            None => self.cycle.key.with_key(&update, |k| keys.enqueue(k)),
        };
        let (key, ticket) = match queued {
            Some((k, t)) => (Some(k), Some(t)),
            None => (None, None),
        };
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
                outcome = tracing::field::Empty,
            )
        } else {
            tracing::Span::none()
        };
        let cycle = Arc::clone(&self.cycle);
        let cx = cycle.context(update, key, false);
        async move {
            if let Some(m) = migration {
                // Boxed: a rare path, kept out of every update's future.
                let bot = Pipeline::from_cycle(cycle);
                Box::pin(bot.migrate_chat(m.from, m.to)).await?;
                return Ok(Dispatch::Handled);
            }
            let permit = match ticket {
                Some(t) => Some(t.acquire().await?),
                None => None,
            };
            let result = cycle.run(cx, permit, &Work::Chain).await;
            observe_outcome(&result);
            result
        }
        .instrument(span)
    }

    /// Runs `handler` for the session `key` without an incoming update: a timer firing,
    /// an operator's action, pending work of the key. It takes the key's place in its
    /// queue (in call order with the key's updates, as [`handle`](Self::handle) does)
    /// and its lease across processes, loads the session, runs the handler, applies the
    /// transition it returns, commits with compare-and-set and delivers its held-back
    /// replies: the same cycle as an update's, under the same guarantees.
    ///
    /// `update` stands for the event: it is what [`Cx::update`](crate::Cx::update)
    /// shows and where [`Cx::reply`](crate::Cx::reply) sends (its chat); routes do not
    /// see it. [`Cx::is_event`](crate::Cx::is_event) is true in the handler.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let replies = RecordingTransport::new();
    /// let bot = Pipeline::<u32>::builder().transport(replies.clone()).build();
    /// let chat = TelegramUpdate::from_json(r#"{"update_id":0,"message":{"chat":{"id":7},"from":{"id":7}}}"#).unwrap();
    /// bot.run_event("7:7", chat, |cx: Cx<u32>| async move {
    ///     let n = cx.session_mut(|n| { *n += 1; *n })?;
    ///     cx.reply(format!("reminder #{n}"));
    ///     Ok(Outcome::Handled)
    /// }).await.unwrap();
    /// assert_eq!(replies.texts(), ["reminder #1"]);
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`handle`](Self::handle).
    pub fn run_event(
        &self,
        key: &str,
        update: U,
        handler: impl Handler<S, U>,
    ) -> impl Future<Output = Result<Dispatch>> + Send + 'static {
        let (key, ticket) = self.cycle.keys().enqueue(key);
        let span = event_span(&key, "event");
        let cycle = Arc::clone(&self.cycle);
        let cx = cycle.context(update, Some(key), true);
        let work = Work::Event(Arc::new(handler));
        async move {
            let permit = ticket.acquire().await?;
            let result = cycle.run(cx, Some(permit), &work).await;
            record_outcome(&result);
            result
        }
        .instrument(span)
    }

    /// Delivers the replies that committed steps left pending in the store, and fires
    /// the timers that fell due: the same as [`wake_due`](Self::wake_due), under the
    /// name it had before timers. Call it at start-up.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = Pipeline::<u32>::builder().outbox(true).build();
    /// let done = bot.deliver_pending().await.unwrap();
    /// assert_eq!(done.keys, 0); // a fresh store has nothing pending
    /// # });
    /// ```
    ///
    /// # Errors
    /// As [`wake_due`](Self::wake_due).
    pub async fn deliver_pending(&self) -> Result<PendingDelivery> {
        self.wake_due().await
    }

    /// Does the work that fell due in the store without an update:
    ///
    /// - delivers the replies that committed steps left pending: those of a process
    ///   that crashed (or lost its transport) between committing an update and
    ///   delivering its replies, with the outbox on ([`PipelineBuilder::outbox`]);
    /// - fires the timers that are due by the pipeline's clock: scene and step timeouts
    ///   ([`SceneBuilder::timeout`](crate::scene::SceneBuilder::timeout)) and expiries
    ///   with hooks ([`SceneBuilder::on_expire`](crate::scene::SceneBuilder::on_expire)).
    ///
    /// Call it at start-up (a deadline that passed while the bot was down fires then)
    /// and then every few seconds, or let [`spawn_timers`](Self::spawn_timers) do it.
    ///
    /// The keys come from the store's index of due work
    /// ([`PendingIndex`](crate::store::PendingIndex)), earliest first, not from reading
    /// every session. Each is handled under its key's queue place and lease, as an
    /// update would be, so it never races an update of the same user, here or in
    /// another process, and a timer fires once across replicas (the second finds it
    /// disarmed); 16 keys at a time. Delivery of pending replies is at least once: a
    /// reply whose delivery was cut short by the crash is sent again.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let clock = stagecraft::clock::ManualClock::at_secs(1_700_000_000);
    /// let replies = RecordingTransport::new();
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("quiz")
    ///         .timeout(60, |cx: Cx<()>| async move {
    ///             cx.reply("Still there?");
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = Pipeline::<()>::builder()
    ///     .clock(clock.clone())
    ///     .transport(replies.clone())
    ///     .stage(stage)
    ///     .command("quiz", |_cx: Cx<()>| async move { Ok(Outcome::enter("quiz")) })
    ///     .build();
    /// let msg = TelegramUpdate::from_json(
    ///     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"/quiz"}}"#).unwrap();
    /// bot.handle(msg).await.unwrap();
    /// assert_eq!(bot.wake_due().await.unwrap().timers, 0); // not due yet
    /// clock.advance(std::time::Duration::from_secs(61));
    /// assert_eq!(bot.wake_due().await.unwrap().timers, 1);
    /// assert_eq!(replies.texts(), ["Still there?"]);
    /// assert_eq!(bot.wake_due().await.unwrap().timers, 0); // once per silence
    /// # });
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`](crate::Error::Config) when the store has no index of due work,
    /// [`Error::Store`](crate::Error::Store) when listing the index fails. A session
    /// that fails is counted in [`PendingDelivery::failed`] (and logged with its cause),
    /// not an error; its work stays due.
    pub async fn wake_due(&self) -> Result<PendingDelivery> {
        let store = Arc::clone(self.store());
        let Some(index) = store.pending() else {
            return Err(crate::Error::Config(format!(
                "the `{}` store has no index of due work",
                store.backend()
            )));
        };
        let now = self.cycle.env.clock.now_ms().div_euclid(1000);
        let mut report = PendingDelivery::default();
        let mut tried = std::collections::HashSet::new();
        loop {
            let keys = index.pending_keys(now, tried.len() + PENDING_BATCH).await?;
            let fresh: Vec<String> = keys
                .into_iter()
                .filter(|k| tried.insert(k.clone()))
                .collect();
            if fresh.is_empty() {
                return Ok(report);
            }
            let mut running = tokio::task::JoinSet::new();
            for key in fresh {
                if running.len() >= PENDING_PARALLEL {
                    if let Some(done) = running.join_next().await {
                        tally(&mut report, done);
                    }
                }
                let cycle = Arc::clone(&self.cycle);
                let (key, ticket) = cycle.keys().enqueue(&key);
                running.spawn(async move {
                    let woken = async {
                        let mut permit = ticket.acquire().await?;
                        let (sent, timer) = cycle.flush(&key, &mut permit, now).await?;
                        let fired = match timer {
                            Some(t) => cycle.fire(&key, permit, t).await? == Dispatch::Handled,
                            None => false,
                        };
                        Ok((sent, fired))
                    }
                    .await;
                    if let Err(e) = &woken {
                        tracing::warn!(target: "stagecraft::reply", key = %key,
                            error = %crate::error::error_chain(e),
                            "work due for this session failed; it stays due");
                    }
                    woken
                });
            }
            while let Some(done) = running.join_next().await {
                tally(&mut report, done);
            }
        }
    }

    /// Runs [`wake_due`](Self::wake_due) now and then every `every`, on the current
    /// Tokio runtime, until the returned [`TimerTask`] is dropped (or
    /// [`stopped`](TimerTask::stop)). Failures are logged and retried on the next
    /// tick.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = Pipeline::<u32>::builder().build();
    /// let timers = bot.spawn_timers(std::time::Duration::from_secs(1));
    /// // ... run the bot ...
    /// drop(timers); // stops it
    /// # });
    /// ```
    #[must_use = "the timers stop when the task is dropped"]
    pub fn spawn_timers(&self, every: std::time::Duration) -> TimerTask {
        let bot = self.clone();
        let every = every.max(std::time::Duration::from_millis(10));
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match bot.wake_due().await {
                    Ok(done) if done.keys > 0 || done.failed > 0 => {
                        tracing::debug!(target: "stagecraft::stage", keys = done.keys,
                            timers = done.timers, replies = done.replies, failed = done.failed,
                            "woke sessions with work due");
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(target: "stagecraft::stage",
                            error = %crate::error::error_chain(&e),
                            "could not look for work due; trying again");
                    }
                }
            }
        });
        TimerTask { handle }
    }

    /// Number of keys whose updates are running or queued in this process: 0 when the
    /// bot is idle. It walks the per-key table (which also holds the cached sessions), so
    /// it is meant for tests and diagnostics, not for every update.
    #[must_use]
    pub fn keys_in_flight(&self) -> usize {
        self.cycle.keys().in_flight()
    }

    /// Whether the stage declares timeouts or expiry hooks, which
    /// [`wake_due`](Self::wake_due) fires.
    #[must_use]
    pub fn has_timers(&self) -> bool {
        self.cycle.timers.is_some()
    }

    /// What this pipeline holds per key between updates: the entries of its per-key
    /// table, the decoded sessions cached in them, and the keys with a lease holding
    /// streak. When the bot is idle, `keys` equals `cached_sessions` (at most the
    /// [`session_cache`](PipelineBuilder::session_cache) capacity) and
    /// `lease_streaks` is 0, however many keys came through. It walks the tables: for
    /// tests and diagnostics, not for every update.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let bot = Pipeline::<()>::builder().build();
    /// let f = bot.footprint();
    /// assert_eq!((f.keys, f.cached_sessions, f.lease_streaks), (0, 0, 0));
    /// ```
    #[must_use]
    pub fn footprint(&self) -> Footprint {
        let (keys, cached_sessions) = self.cycle.keys().sizes();
        Footprint {
            keys,
            cached_sessions,
            lease_streaks: self.cycle.leases.streaks(),
        }
    }

    /// The store sessions live in.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn SessionStore> {
        self.cycle.store()
    }

    /// The session key of `update` under this pipeline's [`KeyStrategy`](crate::session::KeyStrategy).
    #[must_use]
    pub fn key_of(&self, update: &U) -> Option<String> {
        self.cycle.key.key(update)
    }
}

/// The span of an event of `key` (`kind`: `event` for [`Pipeline::run_event`], `timer`
/// for a timer fired by [`Pipeline::wake_due`]), built only when a subscriber wants it.
pub(crate) fn event_span(key: &str, kind: &'static str) -> tracing::Span {
    if tracing::enabled!(target: "stagecraft::stage", tracing::Level::INFO) {
        tracing::info_span!(
            target: "stagecraft::stage",
            "event",
            kind,
            key,
            scene = tracing::field::Empty,
            step = tracing::field::Empty,
            outcome = tracing::field::Empty,
        )
    } else {
        tracing::Span::none()
    }
}

/// Records how an event ended on its span (the current one).
pub(crate) fn record_outcome(result: &Result<Dispatch>) {
    use crate::observe::{OUTCOME_FAILED, OUTCOME_HANDLED, OUTCOME_UNHANDLED};
    let outcome = match result {
        Ok(Dispatch::Handled) => OUTCOME_HANDLED,
        Ok(_) => OUTCOME_UNHANDLED,
        Err(_) => OUTCOME_FAILED,
    };
    tracing::Span::current().record("outcome", outcome);
}

/// Records how an update ended on its span (the current one) and counts it.
fn observe_outcome(result: &Result<Dispatch>) {
    use crate::observe::{OUTCOME_DUPLICATE, OUTCOME_FAILED, OUTCOME_HANDLED, OUTCOME_UNHANDLED};
    let outcome = match result {
        Ok(Dispatch::Handled) => OUTCOME_HANDLED,
        Ok(Dispatch::Unhandled) => OUTCOME_UNHANDLED,
        Ok(Dispatch::Duplicate) => {
            tracing::info!(target: "stagecraft::session", event = "duplicate",
                "update handled before; skipped");
            OUTCOME_DUPLICATE
        }
        Err(_) => OUTCOME_FAILED,
    };
    tracing::Span::current().record("outcome", outcome);
    crate::observe::update(outcome);
}

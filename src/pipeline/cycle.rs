//! The session cycle of one update or event, and its one owner: [`Cycle`].
//!
//! For each update (or event) of a key, in this order:
//!
//! 1. **lease**: take the key's lease in the store, or the one the previous update of
//!    the key passed on ([`Cycle::run`]);
//! 2. **attempt**: a fresh context, the chain (or the event's handler) run on it, the
//!    session **loaded** lazily before the first handler ([`Loader`], through the
//!    context's [`Source`]);
//! 3. **commit**: encode, compare-and-set, cache ([`Cycle::commit`]); a conflict reruns
//!    the attempt on a fresh read;
//! 4. **deliver** the held-back replies, in order;
//! 5. **release** the lease, or pass it to the next update of the key waiting here.
//!
//! The release rides on the update's last write where it can ([`Cycle::release_point`]):
//! the commit's compare-and-set when the replies go out directly, the write that marks
//! them delivered when they went through the outbox; a lease about to be passed on is
//! not released at all.
//!
//! Whether a cached session may stand for the stored record without a read is decided
//! in one place, [`CachePolicy`], computed once when the pipeline is built.

use std::sync::Arc;

use tracing::Instrument;

use super::Dispatch;
use super::keys::{Cached, KeyTable, Permit};
use super::lease::{HeldLease, Leases};
use crate::clock::Clock;
use crate::context::{BoxFuture, Cx, Decoded, Env, Ledger, Origin, SessionState, Source};
use crate::error::{BoxError, Error, Result, ReturnedUpdate};
use crate::handler::{Chain, Handler, Next};
use crate::outcome::Outcome;
use crate::record::{DataVersions, Mended, RecordOwned, RecordRef, SessionData, StateUpgrades};
use crate::session::{DecodePolicy, ErrorPolicy, KeyStrategy, SavePolicy};
use crate::store::{Codec, Preload, Record, SessionStore, Version};
use crate::transport::Outgoing;
use crate::update::Update;

/// What the cycle guarantees beyond the session itself (set by the builder).
#[derive(Debug, Clone)]
pub(crate) struct Guarantees {
    /// Replies are committed with the session and delivered after (the outbox).
    pub(crate) outbox: bool,
    /// How many recent update ids each record remembers (0: no de-duplication).
    pub(crate) dedup_window: usize,
    /// How long one update may take, handlers and conflict reruns included.
    pub(crate) deadline: Option<std::time::Duration>,
    /// The largest record a commit writes, in bytes.
    pub(crate) max_session_size: usize,
}

/// The write that marks a committed step's replies delivered: the record without its
/// outbox, over `expected`, due at `due` (its armed timer) in the index of due work.
struct Confirm {
    cleared: Vec<u8>,
    expected: Version,
    due: Option<i64>,
    /// The record had an outbox: the write is due even if no message id came back (a
    /// record written only to keep message ids needs it only when one did).
    outbox: bool,
}

/// When a cached session may stand for the stored record without reading it: the one
/// place that decides, computed by the builder from the cache mode, the leases and the
/// store's [`CacheHint`](crate::store::CacheHint).
#[derive(Clone)]
pub(crate) struct CachePolicy {
    /// How long the store keeps a saved record, by which clock (`None`: no update ever
    /// skips its read).
    life: Option<Life>,
    /// Updates may skip reading a record this process wrote last (write-through).
    own_writes: bool,
    /// An update whose key's lease was passed straight on to it by the previous update
    /// here may use that update's commit unread (the lease was held all along).
    passed_lease: bool,
}

#[derive(Clone)]
struct Life {
    ttl_ms: Option<i64>,
    clock: Arc<dyn Clock>,
}

impl CachePolicy {
    /// A policy over the store's record lifetime (`None`: unknown, so none skips).
    pub(crate) fn new(
        life: Option<(Option<std::time::Duration>, Arc<dyn Clock>)>,
        own_writes: bool,
        passed_lease: bool,
    ) -> Self {
        let life = life
            .filter(|_| own_writes || passed_lease)
            .map(|(ttl, clock)| Life {
                ttl_ms: ttl.map(|t| i64::try_from(t.as_millis()).unwrap_or(i64::MAX)),
                clock,
            });
        Self {
            life,
            own_writes,
            passed_lease,
        }
    }

    /// Whether an attempt may use its key's cached copy `cached` unread: never a rerun
    /// after a stale cached copy, nor when the record came with the lease; otherwise
    /// for write-through, or when the lease came straight from the previous update
    /// here, and only while the copy's trust lasts.
    fn may_use_unread(
        &self,
        cached: &Decoded<impl Sized>,
        lease_passed: bool,
        rerun_after_stale: bool,
        preload: &Preload,
    ) -> bool {
        !rerun_after_stale
            && matches!(preload, Preload::NotRead)
            && (self.own_writes || (lease_passed && self.passed_lease))
            && self.still_trusted(cached.trusted_until)
    }

    /// How long a copy saved now may stand for the record unread. Measured from just
    /// before the save, so the cached copy never outlives the stored one.
    fn trusted_until(&self) -> Option<i64> {
        let life = self.life.as_ref()?;
        Some(match life.ttl_ms {
            None => i64::MAX,
            Some(ttl) => life.clock.now_ms().saturating_add(ttl),
        })
    }

    /// Whether a copy trusted until `until` may still stand for the record.
    fn still_trusted(&self, until: Option<i64>) -> bool {
        match (until, &self.life) {
            (Some(i64::MAX), _) => true,
            (Some(until), Some(life)) => life.clock.now_ms() < until,
            _ => false,
        }
    }
}

/// The load half of the cycle, reached by contexts through [`Source`]: the store, the
/// cache policy and the decode policy. (The key's cached session comes with the
/// attempt's [`Origin`]; the cycle takes it from the key's permit.)
pub(crate) struct Loader {
    pub(crate) store: Arc<dyn SessionStore>,
    policy: CachePolicy,
    decode_policy: DecodePolicy,
    /// The clock that dates the copies of what a mended record lost.
    clock: Arc<dyn Clock>,
    /// The stage's upgrades of stored scene state.
    upgrades: Option<Arc<dyn StateUpgrades>>,
    /// The bot's data version and its upgrades.
    pub(crate) versions: DataVersions,
    /// The fields of the bot's data type, when it is a plain struct (found on the first
    /// load): others found in a stored record are kept.
    data_fields: std::sync::OnceLock<Option<&'static [&'static str]>>,
}

impl Loader {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        policy: CachePolicy,
        decode_policy: DecodePolicy,
        clock: Arc<dyn Clock>,
        upgrades: Option<Arc<dyn StateUpgrades>>,
        versions: DataVersions,
    ) -> Self {
        Self {
            store,
            policy,
            decode_policy,
            clock,
            upgrades,
            versions,
            data_fields: std::sync::OnceLock::new(),
        }
    }
}

impl<S: SessionData> Source<S> for Loader {
    fn start_load<'a>(
        &'a self,
        key: &'a str,
        st: &mut SessionState<S>,
    ) -> Result<Option<BoxFuture<'a, Result<Option<Record>>>>> {
        let Origin::Pending { preload, cached } = std::mem::take(&mut st.origin) else {
            // Loaded already (an attempt loads once).
            return Ok(None);
        };
        st.origin = Origin::Loading { cached };
        match preload {
            // The record read together with the lease stands for this load.
            Preload::Read(record) => self.finish_load(key, st, record).map(|()| None),
            Preload::NotRead => Ok(Some(self.store.load(key))),
        }
    }

    fn finish_load(
        &self,
        key: &str,
        st: &mut SessionState<S>,
        record: Option<Record>,
    ) -> Result<()> {
        let cached = match std::mem::take(&mut st.origin) {
            Origin::Loading { cached } => cached,
            _ => None,
        };
        let Some(rec) = record else {
            st.set_loaded(None, Vec::new(), Ledger::default());
            return Ok(());
        };
        // The cached objects stand for the record only if its bytes are the ones this
        // process committed (whatever another process wrote is decoded afresh).
        let same =
            cached.filter(|c| c.record.version == rec.version && c.record.bytes == rec.bytes);
        let same_copy = same.is_some();
        let mut data_rewritten = false;
        let decoded = match same {
            Some(c) => Ok((c.data, c.stack, c.ledger)),
            None => RecordOwned::<S>::decode(key, &rec.bytes).and_then(|r| {
                if r.dv < self.versions.current {
                    // Written by an older version of the bot's data: upgraded on the
                    // way (the lenient decode runs the upgrades).
                    return Err(Error::Decode {
                        key: key.to_owned(),
                        source: format!(
                            "data of version {} (this build: {})",
                            r.dv, self.versions.current
                        )
                        .into(),
                    });
                }
                let ledger = Ledger::stored(r.seen, r.outbox, r.lost).with_sent(r.sent);
                Ok((Some(r.data), r.scenes, ledger))
            }),
        };
        match decoded {
            Ok((data, stack, ledger)) => st.set_loaded(data, stack, ledger),
            Err(e) if self.decode_policy == DecodePolicy::Mend => {
                let now_s = self.clock.now_ms().div_euclid(1000);
                let r = Mended::<S>::decode(
                    &rec.bytes,
                    now_s,
                    self.upgrades.as_deref(),
                    &self.versions,
                );
                crate::observe::mend();
                tracing::warn!(target: "stagecraft::session", event = "mend", key = %key,
                    error = %crate::error::error_chain(&e), repairs = ?r.repairs,
                    "stored session did not decode as a whole; mended it part by part");
                let ledger = Ledger::stored(r.seen, r.outbox, r.lost).with_sent(r.sent);
                data_rewritten = r.data_rewritten;
                st.set_loaded(r.data, r.scenes, ledger);
            }
            Err(e) if self.decode_policy == DecodePolicy::Reset => {
                tracing::warn!(target: "stagecraft::session", key = %key, error = %crate::error::error_chain(&e),
                    "stored session could not be decoded; starting afresh (a copy is kept in `lost`)");
                let now_s = self.clock.now_ms().div_euclid(1000);
                let copy = crate::record::lost_copy(&rec.bytes, now_s, &e);
                let ledger = Ledger::stored(Vec::new(), Vec::new(), vec![copy]);
                st.set_loaded(None, Vec::new(), ledger);
                st.mark_reset();
            }
            Err(e) => return Err(e),
        }
        if !same_copy {
            // What this build does not know stays in the record (a newer replica's).
            let fields = *self
                .data_fields
                .get_or_init(crate::record::struct_fields::<S>);
            st.ledger.extras = crate::record::Extras::scan(&rec.bytes, fields);
            if data_rewritten {
                st.ledger.extras.data.clear();
            }
        }
        st.origin = Origin::Stored {
            record: rec,
            unread: false,
            trusted_until: None,
        };
        Ok(())
    }
}

/// What an attempt runs.
pub(crate) enum Work<S, U> {
    /// The chain, for an update that arrived.
    Chain,
    /// One handler, for an event of the key.
    Event(Arc<dyn Handler<S, U>>),
}

/// The session cycle's owner: everything an update goes through between taking its
/// key's queue place and giving it back.
pub(crate) struct Cycle<S, U> {
    pub(crate) env: Arc<Env<S, U>>,
    pub(crate) loader: Arc<Loader>,
    /// Per-key locks, cached sessions and passed leases.
    pub(crate) keys: KeyTable<S>,
    pub(crate) chain: Arc<Chain<S, U>>,
    pub(crate) leases: Leases,
    pub(crate) codec: Codec,
    pub(crate) error_policy: ErrorPolicy,
    pub(crate) save_policy: SavePolicy,
    pub(crate) max_attempts: usize,
    pub(crate) guarantees: Guarantees,
    /// How an update maps to its key.
    pub(crate) key: KeyStrategy<U>,
    /// The stage that runs timeouts and expiry hooks (`None`: it declares none).
    pub(crate) timers: Option<crate::stage::Stage<S, U>>,
}

impl<S: SessionData, U: Update> Cycle<S, U> {
    pub(crate) fn store(&self) -> &Arc<dyn SessionStore> {
        &self.loader.store
    }

    pub(crate) fn keys(&self) -> &KeyTable<S> {
        &self.keys
    }

    /// A compare-and-set write of the record of `key`, in the store's index of due work
    /// at `due` (replies to deliver: `0`; an armed timer: its time) or out of it. (The
    /// store's own future, with no second one around it.)
    fn write<'a>(
        &'a self,
        key: &'a str,
        bytes: &'a [u8],
        expected: Option<Version>,
        due: Option<i64>,
    ) -> BoxFuture<'a, Result<Version>> {
        match (due, self.store().pending()) {
            (Some(due), Some(index)) => index.save_pending(key, bytes, expected, due),
            _ => self.store().save(key, bytes, expected),
        }
    }

    /// [`write`](Self::write), giving `held` back in the same write when there is one
    /// ([`SessionStore::save_releasing`]). Hands the lease back when the write did not
    /// release it: on a conflict it is still held, on another error the caller
    /// releases it.
    async fn write_releasing(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        held: Option<HeldLease>,
    ) -> (Result<Version>, Option<HeldLease>) {
        let Some(held) = held else {
            return (self.write(key, bytes, expected, due).await, None);
        };
        let written = self
            .store()
            .save_releasing(key, bytes, expected, due, held.ending())
            .await;
        match written {
            Ok(version) => {
                held.released_by_write();
                (Ok(version), None)
            }
            Err(e) => {
                held.keep();
                (Err(e), Some(held))
            }
        }
    }

    /// A compare-and-set delete of `key`, giving `held` back with it (as
    /// [`write_releasing`](Self::write_releasing) does).
    async fn delete_releasing(
        &self,
        key: &str,
        expected: Version,
        held: Option<HeldLease>,
    ) -> (Result<()>, Option<HeldLease>) {
        let Some(held) = held else {
            return (self.store().delete(key, expected).await, None);
        };
        match self
            .store()
            .delete_releasing(key, expected, held.ending())
            .await
        {
            Ok(()) => {
                held.released_by_write();
                (Ok(()), None)
            }
            Err(e) => {
                held.keep();
                (Err(e), Some(held))
            }
        }
    }

    /// Whether the commit of an update of `key` holding `held` may give the lease back
    /// in its own write (the release point when the replies go out directly): not when
    /// the lease will be passed to the key's next update waiting here, nor when the
    /// configuration keeps it through the delivery
    /// ([`LeaseConfig::hold_through_delivery`](super::LeaseConfig::hold_through_delivery)).
    /// (Replies that go through the outbox, or that keep a message id, make the commit
    /// keep the lease anyway: the write after the delivery releases it.)
    fn release_point(&self, key: &Arc<str>, held: &HeldLease) -> bool {
        if self.leases.config.hold_through_delivery {
            return false;
        }
        let passes = !held.is_lost() && self.leases.may_keep(key) && self.keys().waiting(key) > 0;
        !passes
    }

    /// Runs `work` for `update` under its key (the key's queue place already held):
    /// lease, attempts, release.
    /// The context of the first attempt at `update` (made at arrival, so that the
    /// update is moved once, into it).
    pub(crate) fn context(&self, update: U, key: Option<Arc<str>>, event: bool) -> Cx<S, U> {
        Cx::new(update, key, Arc::clone(&self.env), Origin::Absent, event)
    }

    /// Runs `work` on `cx` (its key's queue place already held): lease, attempts,
    /// release.
    pub(crate) async fn run(
        &self,
        cx: Cx<S, U>,
        mut permit: Option<Permit<S>>,
        work: &Work<S, U>,
    ) -> Result<Dispatch> {
        let key = cx.key_arc();
        let (mut lease, preload, passed) = match &key {
            Some(k) => self.lease_of(k).await?,
            None => (None, Preload::NotRead, false),
        };
        let leased = lease.is_some();
        let mut unconfirmed = None;
        let result = self
            .attempts(
                cx,
                key.as_ref(),
                &mut permit,
                work,
                &mut lease,
                preload,
                passed,
                &mut unconfirmed,
            )
            .await;
        let Some(k) = &key else {
            return result;
        };
        // The write that marks the replies delivered is folded into the key's next
        // write when the lease goes straight to the key's next update here: nobody else
        // can read the record in between, and that update, starting from this one's
        // committed copy, knows them delivered and writes the record without them.
        // Otherwise it is written before the lease is given back, so that no other
        // process finds delivered replies still pending.
        // (A lease the commit's write gave back is gone already.)
        let (passed, mut unpassed) = match lease {
            Some(held) => {
                let unpassed = self.pass_on(k, held);
                (unpassed.is_none(), unpassed)
            }
            None => (false, None),
        };
        if let Some(c) = unconfirmed {
            // (Message ids kept without an outbox are written now: the next update
            // might not write at all.) The lease, unless passed on, goes back with
            // this write.
            if passed && self.folds() && c.outbox {
                tracing::trace!(target: "stagecraft::reply", key = %k,
                    "delivered; marked by the key's next write");
            } else {
                unpassed = self.confirm(k, c, &mut permit, unpassed).await;
            }
        }
        if let Some(held) = unpassed {
            held.release().await;
        }
        // A holding streak exists only for keys whose lease this process took.
        if leased && !passed && self.keys().waiting(k) == 0 {
            self.leases.end_streak(k);
        }
        result
    }

    /// The key's lease across processes (when the store has leases): taken before the
    /// session is loaded, given back after the save and the replies, or passed on to
    /// the next update of the key waiting here. Also says whether it was passed on by
    /// the previous update of the key: held all along, so nobody else took it since;
    /// that update's committed session may stand for the record (see `CachePolicy`),
    /// compare-and-set catching any writer that takes no lease.
    async fn lease_of(&self, key: &Arc<str>) -> Result<(Option<HeldLease>, Preload, bool)> {
        match self.keys().take_lease(key) {
            Some(held) if !held.is_lost() => Ok((Some(held), Preload::NotRead, true)),
            passed => {
                // One a renewal found gone while it waited here is taken afresh.
                if let Some(lost) = passed {
                    lost.release().await;
                }
                let (lease, preload) = self.leases.acquire(self.store(), key).await?;
                Ok((lease, preload, false))
            }
        }
    }

    /// Delivers the replies a committed step left in the record of `key` (a process
    /// that crashed between its commit and its delivery), the key's queue place
    /// already held: lease, a fresh read, delivery, the write that marks them
    /// delivered (and leaves the key in the index of due work only for its armed
    /// timer), release. Returns how many replies it sent, and the record's armed timer
    /// when it is due by `now` (for the caller to fire under the same queue place).
    pub(crate) async fn flush(
        &self,
        key: &Arc<str>,
        permit: &mut Permit<S>,
        now: i64,
    ) -> Result<(usize, Option<crate::record::Timer>)> {
        let (mut lease, preload, _) = self.lease_of(key).await?;
        let leased = lease.is_some();
        let lease = &mut lease;
        let flushed = async {
            // The record may be another process's: read it, never the cached copy.
            drop(permit.take_cached());
            let record = match preload {
                Preload::Read(record) => record,
                Preload::NotRead => self.store().load(key).await?,
            };
            let Some(record) = record else {
                return Ok((0, None));
            };
            let (has_outbox, timer) =
                crate::record::peek_due(&record.bytes).map_err(|e| e.with_key(key))?;
            let timer = timer.filter(|_| self.timers.is_some());
            let due_now = timer.filter(|t| t.at <= now);
            if !has_outbox && due_now.is_some() {
                // Only the timer is due: its event writes the record.
                return Ok((0, due_now));
            }
            let (replies, mut cleared) = crate::record::split_outbox(&record.bytes, self.codec)
                .map_err(|e| e.with_key(key))?;
            if !replies.is_empty() {
                tracing::info!(target: "stagecraft::reply", key = %key, replies = replies.len(),
                    "delivering the replies of a committed step left pending");
                let sent = self.deliver(&replies).await?;
                if !sent.is_empty() {
                    cleared = crate::record::add_sent(&cleared, self.codec, &sent)
                        .map_err(|e| e.with_key(key))?;
                }
            }
            // Also what takes a key whose record has nothing due out of the index (a
            // mark left by a writer that does not keep it). The lease goes back with
            // it, unless a due timer's event follows under it or it is passed on.
            let due = timer.map(|t| t.at);
            let held = lease.take_if(|h| due_now.is_none() && self.release_point(key, h));
            let (written, back) = self
                .write_releasing(key, &cleared, Some(record.version), due, held)
                .await;
            if back.is_some() {
                *lease = back;
            }
            match written {
                // Written since: by an update that delivered them first.
                Err(e) if e.is_conflict() => return Ok((replies.len(), None)),
                done => drop(done?),
            }
            Ok((replies.len(), due_now))
        };
        let result = match self.guarantees.deadline {
            None => flushed.await,
            Some(after) => tokio::time::timeout(after, flushed)
                .await
                .unwrap_or_else(|_| Err(self.deadline_error(Some(key)))),
        };
        if let Some(held) = lease.take() {
            self.release(key, held).await;
        } else if leased && self.keys().waiting(key) == 0 {
            self.leases.end_streak(key);
        }
        result
    }

    /// Fires the due `timer` of `key` (found by [`flush`](Self::flush) under the same
    /// queue place): the stage's timer event, run as an event of the key, with its
    /// lease, compare-and-set and replies.
    pub(crate) async fn fire(
        &self,
        key: &Arc<str>,
        permit: Permit<S>,
        timer: crate::record::Timer,
    ) -> Result<Dispatch> {
        let Some(stage) = &self.timers else {
            return Ok(Dispatch::Unhandled);
        };
        let Some(update) = U::for_event(timer.chat, timer.thread, timer.user) else {
            return Err(Error::Config(format!(
                "the timer of session `{key}` cannot fire: its update type has no \
                 `Update::for_event`"
            )));
        };
        let cx = self.context(update, Some(Arc::clone(key)), true);
        let span = super::event_span(key, "timer");
        async {
            let result = self
                .run(cx, Some(permit), &Work::Event(stage.timer_event()))
                .await;
            super::record_outcome(&result);
            result
        }
        .instrument(span)
        .await
    }

    /// Moves the session `old` of chat `from` to `new` in chat `to` (a group upgraded to
    /// a supergroup), under both keys' queue places and leases: a compare-and-set insert
    /// of `new`, then a compare-and-set delete of `old`. A session already at `new` (the
    /// member wrote in the supergroup first) is kept, and so is `old` then, unless it is
    /// the copy a move cut short left behind. Returns whether it moved one.
    pub(crate) async fn move_key(&self, old: &str, new: &str, from: i64, to: i64) -> Result<bool> {
        let (old_k, old_ticket) = self.keys().enqueue(old);
        let mut old_place = old_ticket.acquire().await?;
        let (new_k, new_ticket) = self.keys().enqueue(new);
        let mut new_place = new_ticket.acquire().await?;
        // Both records change here: no cached copy stands for them any more.
        drop(old_place.take_cached());
        drop(new_place.take_cached());
        let (old_lease, old_pre, _) = self.lease_of(&old_k).await?;
        let taken = self.lease_of(&new_k).await;
        let moved = match taken {
            Ok((new_lease, new_pre, _)) => {
                let moved = self.move_record(old, new, from, to, old_pre, new_pre).await;
                if let Some(held) = new_lease {
                    self.release(&new_k, held).await;
                }
                moved
            }
            Err(e) => Err(e),
        };
        if let Some(held) = old_lease {
            self.release(&old_k, held).await;
        }
        moved
    }

    async fn move_record(
        &self,
        old: &str,
        new: &str,
        from: i64,
        to: i64,
        old_pre: Preload,
        new_pre: Preload,
    ) -> Result<bool> {
        let old_record = match old_pre {
            Preload::Read(record) => record,
            Preload::NotRead => self.store().load(old).await?,
        };
        let Some(record) = old_record else {
            return Ok(false);
        };
        let bytes = crate::record::moved_to_chat(&record.bytes, self.codec, from, to)
            .map_err(|e| e.with_key(old))?;
        let there = match new_pre {
            Preload::Read(record) => record,
            Preload::NotRead => self.store().load(new).await?,
        };
        if let Some(there) = there {
            if there.bytes == bytes {
                // A move cut short between its two writes: finish it.
                self.store().delete(old, record.version).await?;
            } else {
                tracing::warn!(target: "stagecraft::session", from = %old, to = %new,
                    "the member has a session in the new chat already; both are kept");
            }
            return Ok(false);
        }
        let (has_outbox, timer) = crate::record::peek_due(&bytes).map_err(|e| e.with_key(old))?;
        let due = if has_outbox {
            Some(0)
        } else {
            timer.filter(|_| self.timers.is_some()).map(|t| t.at)
        };
        self.write(new, &bytes, None, due).await?;
        self.store().delete(old, record.version).await?;
        Ok(true)
    }

    /// Passes the lease of `key` to its next update waiting here (saving a release and
    /// an acquire), unless it was lost or this process has had the key for its fair
    /// share; then gives it back.
    async fn release(&self, key: &Arc<str>, held: HeldLease) {
        if let Some(held) = self.pass_on(key, held) {
            held.release().await;
            // A holding streak exists only for keys whose lease this process took.
            if self.keys().waiting(key) == 0 {
                self.leases.end_streak(key);
            }
        }
    }

    /// Passes `held` to the key's next update waiting here (`None`), unless it was lost
    /// or this process has had the key for its fair share, or nobody waits (`Some`:
    /// give it back).
    fn pass_on(&self, key: &Arc<str>, held: HeldLease) -> Option<HeldLease> {
        if held.is_lost() || !self.leases.may_keep(key) {
            Some(held)
        } else {
            self.keys().pass_lease(key, held)
        }
    }

    /// Whether the next update of a key, given the lease straight from the previous
    /// one, starts from that update's committed copy (so a delivered outbox may be
    /// marked by its write instead of one of its own).
    fn folds(&self) -> bool {
        self.keys().caches() && self.loader.policy.passed_lease
    }

    /// Runs attempts until one commits (or fails for good), then delivers its replies.
    #[allow(clippy::too_many_arguments)]
    async fn attempts(
        &self,
        mut cx: Cx<S, U>,
        key: Option<&Arc<str>>,
        permit: &mut Option<Permit<S>>,
        work: &Work<S, U>,
        lease: &mut Option<HeldLease>,
        mut preload: Preload,
        mut lease_passed: bool,
        unconfirmed: &mut Option<Confirm>,
    ) -> Result<Dispatch> {
        let policy = &self.loader.policy;
        let g = &self.guarantees;
        // A deadline past the clock's range is no deadline.
        let deadline = g
            .deadline
            .and_then(|d| tokio::time::Instant::now().checked_add(d));
        // The id this update is remembered by (de-duplication), and whether the session
        // must be there before the first handler: to deliver a committed step's
        // replies still pending, and to recognise a redelivered update.
        let update_id = match (key, cx.is_event(), g.dedup_window) {
            (Some(_), false, 1..) => cx.update().update_id(),
            _ => None,
        };
        let eager = key.is_some() && (g.outbox || update_id.is_some());
        let mut attempt = 0;
        let mut after_stale = false;
        let mut backoff = Backoff::default();
        loop {
            attempt += 1;
            // The record read with the lease stands for the first attempt's load; a
            // rerun after a conflict reads afresh.
            {
                let cached = permit.as_mut().and_then(Permit::take_cached);
                let mut st = cx.state();
                match cached {
                    // The cached copy stands for the record: the session is there
                    // already, no read to make (so taken now, not lazily).
                    Some(c) if policy.may_use_unread(&c, lease_passed, after_stale, &preload) => {
                        st.set_loaded(c.data, c.stack, c.ledger);
                        st.origin = Origin::Stored {
                            record: c.record,
                            unread: true,
                            trusted_until: c.trusted_until,
                        };
                    }
                    cached => {
                        st.origin = Origin::Pending {
                            preload: std::mem::take(&mut preload),
                            cached,
                        }
                    }
                }
            }
            let duplicate = if eager {
                match self.prepare(&cx, update_id).await {
                    Ok(duplicate) => duplicate,
                    Err(e) => {
                        cx.state().close();
                        drop(cx.take_outbox());
                        return Err(e);
                    }
                }
            } else {
                false
            };
            let run = async {
                if duplicate {
                    return Ok(Outcome::Handled);
                }
                match work {
                    Work::Chain => Next::start(&self.chain).run(cx.clone()).await,
                    Work::Event(handler) => run_event(&cx, handler.as_ref()).await,
                }
            };
            let outcome = match deadline {
                None => run.await,
                Some(at) => match tokio::time::timeout_at(at, run).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(BoxError::from(self.deadline_error(key))),
                },
            };
            let (dispatch, failure) = match outcome {
                Ok(_) if duplicate => (Dispatch::Duplicate, None),
                Ok(Outcome::Pass) => (Dispatch::Unhandled, None),
                Ok(_) => (Dispatch::Handled, None),
                Err(e) if self.error_policy == ErrorPolicy::RollBack => {
                    // Nothing is written and nothing is sent; the context is finished.
                    drop(cx.take_outbox());
                    self.roll_back(&cx, permit).await;
                    return Err(Error::handler(e));
                }
                Err(e) => (Dispatch::Handled, Some(Error::handler(e))),
            };
            let replies = cx.take_outbox();
            let remember = update_id.filter(|_| !duplicate);
            let release = match (key, lease.as_ref()) {
                (Some(k), Some(held)) => self.release_point(k, held),
                _ => false,
            };
            let committed = self
                .commit(&cx, permit, replies.as_slice(), remember, lease, release)
                .await;
            let confirm = match committed {
                Err(e) if e.is_conflict() => {
                    // A stale cached session (someone else wrote the record since this
                    // process did) is not a lost race: the rerun reads, and is not
                    // counted as an attempt.
                    let stale = matches!(cx.state().origin, Origin::Stored { unread: true, .. });
                    let late = deadline.is_some_and(|at| tokio::time::Instant::now() >= at);
                    if !stale && (attempt >= self.max_attempts || late) {
                        let key = key.map_or_else(String::new, |k| k.to_string());
                        crate::observe::conflict();
                        tracing::warn!(target: "stagecraft::session", event = "not_handled", key = %key,
                            attempt, "session kept changing elsewhere; update not handled");
                        return Err(Error::NotHandled {
                            key,
                            attempts: attempt,
                            update: ReturnedUpdate::new(cx.into_update()),
                            source: Box::new(e),
                        });
                    }
                    if stale {
                        tracing::debug!(target: "stagecraft::session", key = ?key,
                            "cached session was stale; reading it and running the update again");
                        attempt -= 1;
                        after_stale = true;
                    } else {
                        crate::observe::conflict();
                        crate::observe::retry();
                        tracing::info!(target: "stagecraft::session", event = "conflict", key = ?key,
                            attempt, "session changed elsewhere");
                        tracing::info!(target: "stagecraft::session", event = "retry", key = ?key,
                            attempt, "running the update again");
                        backoff.wait(deadline).await;
                    }
                    drop(replies);
                    let event = cx.is_event();
                    cx = self.context(cx.into_update(), key.cloned(), event);
                    lease_passed = false;
                    // A lost lease (a renewal came too late) is taken again before the
                    // rerun, so that the rerun does not race the new holder.
                    if let (Some(k), Some(held)) = (key, lease.as_ref()) {
                        if held.is_lost() {
                            if let Some(old) = lease.take() {
                                old.release().await;
                            }
                            *lease = self.leases.acquire(self.store(), k).await?.0;
                        }
                    }
                    continue;
                }
                Err(e) => return Err(e),
                Ok(confirm) => confirm,
            };
            let sent = match self.deliver(replies.as_slice()).await {
                Ok(sent) => sent,
                Err(e) => {
                    if confirm.as_ref().is_some_and(|c| c.outbox) {
                        // The replies stay in the record: the next update reads it (not
                        // the cached copy, which counts them sent) and sends them first.
                        drop(permit.as_mut().and_then(Permit::take_cached));
                    }
                    return Err(e);
                }
            };
            *unconfirmed = self.keep_sent(confirm, &sent, permit);
            return match failure {
                Some(e) => Err(e),
                None => Ok(dispatch),
            };
        }
    }

    fn deadline_error(&self, key: Option<&Arc<str>>) -> Error {
        let after = self.guarantees.deadline.unwrap_or_default();
        tracing::warn!(target: "stagecraft::session", key = ?key, ?after,
            "update ran past its deadline; stopped");
        Error::Deadline {
            key: key.map(|k| k.to_string()),
            after,
        }
    }

    /// Before the first handler: loads the session, delivers the replies of a
    /// committed step whose delivery was never confirmed (a crash between commit and
    /// delivery), and says whether this update was handled already (its id is among
    /// the key's recent ones).
    async fn prepare(&self, cx: &Cx<S, U>, update_id: Option<i64>) -> Result<bool> {
        cx.ensure_loaded().await?;
        let pending = std::mem::take(&mut cx.state().ledger.outbox);
        if !pending.is_empty() {
            tracing::info!(target: "stagecraft::reply", key = ?cx.key(), replies = pending.len(),
                "delivering the replies of a committed step first");
            let sent = self.deliver(&pending).await?;
            cx.state().ledger.sent.extend(&sent);
        }
        Ok(update_id.is_some_and(|id| cx.state().ledger.seen.contains(&id)))
    }

    /// Sends replies, in order. Returns the ids of the messages sent by replies that
    /// asked to be remembered, by name.
    async fn deliver(&self, replies: &[Outgoing]) -> Result<Vec<(String, i64)>> {
        let mut sent = Vec::new();
        for (i, msg) in replies.iter().enumerate() {
            let delivered = match self.env.transport.deliver(msg).await {
                Ok(delivered) => delivered,
                Err(e) => {
                    // The replies after it are not sent either (their order holds): said,
                    // not dropped silently.
                    let after = replies.len() - i - 1;
                    let outbox = self.guarantees.outbox;
                    tracing::warn!(target: "stagecraft::reply", method = msg.method(), not_sent = after + 1,
                        kept = outbox, error = %crate::error::error_chain(e.as_ref()),
                        "a reply failed; it and the {after} after it were not sent{}",
                        if outbox { " (they wait in the outbox)" } else { " (lost: no outbox)" });
                    return Err(Error::Transport(e));
                }
            };
            if let (Some(name), Some(id)) = (msg.remember(), delivered.message_id) {
                sent.push((name.to_owned(), id));
            }
        }
        Ok(sent)
    }

    /// After a delivery: the ids of messages sent under a name (`sent`) go into the
    /// key's cached copy and into the write that marks the replies delivered (the
    /// record written by the commit, when there was no outbox). Returns that write,
    /// or `None` when it is not needed.
    fn keep_sent(
        &self,
        confirm: Option<Confirm>,
        sent: &[(String, i64)],
        permit: &mut Option<Permit<S>>,
    ) -> Option<Confirm> {
        let mut confirm = confirm?;
        if sent.is_empty() {
            return confirm.outbox.then_some(confirm);
        }
        match crate::record::add_sent(&confirm.cleared, self.codec, sent) {
            Ok(bytes) => confirm.cleared = bytes,
            Err(e) => {
                tracing::warn!(target: "stagecraft::reply", error = %crate::error::error_chain(&e),
                    "the ids of the messages sent could not be added to the session");
                return confirm.outbox.then_some(confirm);
            }
        }
        if let Some(p) = permit.as_mut() {
            if let Some(mut cached) = p.take_cached() {
                cached.ledger.sent.extend(sent);
                p.put_cached(cached);
            }
        }
        Some(confirm)
    }

    /// Marks a committed step's replies delivered: writes the record without them,
    /// giving `held` back in the same write. Off the update's answer (the replies are
    /// out already); a failure only means they may be sent again after a crash. Returns
    /// the lease when the write did not release it.
    async fn confirm(
        &self,
        key: &str,
        c: Confirm,
        permit: &mut Option<Permit<S>>,
        held: Option<HeldLease>,
    ) -> Option<HeldLease> {
        let (written, held) = self
            .write_releasing(key, &c.cleared, Some(c.expected), c.due, held)
            .await;
        // The cached copy (kept by the commit) now stands for the record without them.
        let cached = permit.as_mut().and_then(Permit::take_cached);
        let (Some(p), Some(mut cached)) = (permit.as_mut(), cached) else {
            return held;
        };
        match written {
            Ok(version) => {
                cached.record = Record {
                    bytes: c.cleared,
                    version,
                };
                cached.ledger.stored_outbox = false;
            }
            Err(e) => {
                tracing::warn!(target: "stagecraft::reply", key = %key, error = %crate::error::error_chain(&e),
                    "replies sent, but not marked delivered; the next write of the session does it");
            }
        }
        p.put_cached(cached);
        held
    }

    /// A rolled-back attempt writes nothing, except that the replies of an earlier
    /// step it delivered before its handlers ran (left pending by a crash) are marked
    /// delivered.
    async fn roll_back(&self, cx: &Cx<S, U>, permit: &mut Option<Permit<S>>) {
        let (untouched, clear) = {
            let mut st = cx.state();
            st.close();
            let clear = match (&st.origin, st.ledger.stored_outbox) {
                (Origin::Stored { record, .. }, true) => Some(record.clone()),
                _ => None,
            };
            (untouched(&mut st), clear)
        };
        if let (Some(p), Some(c)) = (permit.as_mut(), untouched) {
            p.put_cached(c);
        }
        let (Some(key), Some(record)) = (cx.key(), clear) else {
            return;
        };
        let done = match crate::record::without_outbox(&record.bytes, self.codec) {
            Ok(bytes) => {
                let due = crate::record::peek_due(&bytes)
                    .ok()
                    .and_then(|(_, t)| t.filter(|_| self.timers.is_some()).map(|t| t.at));
                self.write(key, &bytes, Some(record.version), due)
                    .await
                    .map(drop)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            tracing::warn!(target: "stagecraft::reply", key = %key, error = %crate::error::error_chain(&e),
                "replies sent, but not marked delivered");
        }
    }

    /// Writes the session back if it needs it (compare-and-set), with the cycle's
    /// bookkeeping (`remember`: this update's id; `replies`: its replies, when they go
    /// through the outbox), then hands the decoded session to the cache. The context is
    /// finished afterwards. Returns the write that will mark the replies delivered.
    ///
    /// With `release`, the write gives `lease` back (taking it out of `lease`) unless a
    /// write follows the delivery (replies in the outbox, or message ids to keep): that
    /// one releases it then. A write that fails leaves the lease in `lease`.
    async fn commit(
        &self,
        cx: &Cx<S, U>,
        permit: &mut Option<Permit<S>>,
        replies: &[Outgoing],
        remember: Option<i64>,
        lease: &mut Option<HeldLease>,
        release: bool,
    ) -> Result<Option<Confirm>> {
        let Some(key) = cx.key() else {
            cx.state().close();
            return Ok(None);
        };
        let outbox = if self.guarantees.outbox { replies } else { &[] };
        // A reply whose message id is to be kept needs a record to keep it in.
        let remembers = replies.iter().any(|r| r.remember().is_some());
        let (bytes, cleared, expected, wake) = {
            let mut st = cx.state();
            let closed = st.close();
            if !closed.loaded {
                // Never loaded: the key's cached session goes back as it was.
                if let (Some(p), Some(c)) = (permit.as_mut(), untouched(&mut st)) {
                    p.put_cached(c);
                }
                return Ok(None);
            }
            // A stored outbox is always cleared by the next write; otherwise the
            // bookkeeping rides on the writes the session needs anyway (an update that
            // writes nothing has nothing to lose: its replies go out directly, and
            // handling it again would change nothing).
            let must_clear = st.ledger.stored_outbox || remembers;
            let needed = must_clear
                || match self.save_policy {
                    SavePolicy::Touched => closed.dirty || closed.touched,
                    _ => closed.dirty,
                };
            if !needed {
                self.keep(&mut st, permit, None);
                return Ok(None);
            }
            let (expected, original) = match &st.origin {
                Origin::Stored { record, .. } => (Some(record.version), Some(record.bytes.len())),
                _ => (None, None),
            };
            if let Some(id) = remember {
                let seen = &mut st.ledger.seen;
                seen.push(id);
                let window = self.guarantees.dedup_window;
                if seen.len() > window {
                    seen.drain(..seen.len() - window);
                }
            }
            if st.is_empty() && !remembers {
                // A session that ended is deleted; its last replies go out after the
                // delete, outside the outbox. (One whose reply keeps a message id is
                // kept, with fresh data, to hold it.)
                (None, None, expected, None)
            } else {
                let size_hint = original.map_or(128, |n| n + 32);
                let (data, scenes, ledger) = st.parts(|| (self.env.default_session)());
                // Timers count only for a stage that runs them (one that declares none
                // leaves the ones in the record alone, for a rollback to find).
                let wake = self
                    .timers
                    .as_ref()
                    .and_then(|_| crate::record::wake_of(scenes));
                let encoded = RecordRef::new(data, scenes)
                    .with_ledger(&ledger.seen, outbox)
                    .with_sent(&ledger.sent)
                    .with_lost(&ledger.lost)
                    .with_data_version(self.loader.versions.current)
                    .with_activity(self.env.clock.now_ms().div_euclid(1000))
                    .with_extras(&ledger.extras)
                    .encode_with_cleared(self.codec, size_hint)
                    .map_err(|e| Error::Encode {
                        key: key.to_owned(),
                        source: e,
                    })?;
                let unchanged = matches!(&st.origin,
                    Origin::Stored { record, .. } if encoded.same_session_as(&record.bytes));
                if unchanged && self.save_policy == SavePolicy::Changed && !must_clear {
                    self.keep(&mut st, permit, None);
                    return Ok(None);
                }
                let limit = self.guarantees.max_session_size;
                if encoded.bytes.len() > limit {
                    tracing::warn!(target: "stagecraft::session", key = %key,
                        size = encoded.bytes.len(), limit, "session too large; not stored");
                    return Err(Error::SessionTooLarge {
                        key: key.to_owned(),
                        size: encoded.bytes.len(),
                        limit,
                    });
                }
                if self.codec == Codec::Json {
                    let depth = crate::util::json_depth(&encoded.bytes);
                    if depth > crate::util::JSON_MAX_DEPTH {
                        // Stored, it would not decode: the session would be lost.
                        return Err(Error::Encode {
                            key: key.to_owned(),
                            source: format!(
                                "nested {depth} levels deep; records are read back to {} levels",
                                crate::util::JSON_MAX_DEPTH
                            )
                            .into(),
                        });
                    }
                }
                (Some(encoded.bytes), encoded.cleared, expected, wake)
            }
        };
        match (bytes, expected) {
            (Some(bytes), expected) => {
                let trusted_until = self.loader.policy.trusted_until();
                // A record with replies to deliver is due at once in the store's index
                // of due work (in the same write), for the next process to find after a
                // crash; one with an armed timer, at its time.
                let due = if cleared.is_some() { Some(0) } else { wake };
                let held = lease.take_if(|_| release && cleared.is_none() && !remembers);
                let (written, back) = self.write_releasing(key, &bytes, expected, due, held).await;
                if back.is_some() {
                    *lease = back;
                }
                let version = written?;
                // Without an outbox, the record just written is what a message id sent
                // under a name is added to once delivered.
                let kept = (remembers && cleared.is_none()).then(|| bytes.clone());
                let mut st = cx.state();
                // The stored record now has this step's replies, about to be sent.
                st.ledger.stored_outbox = cleared.is_some();
                self.keep(
                    &mut st,
                    permit,
                    Some((Record { bytes, version }, trusted_until)),
                );
                Ok(match cleared {
                    Some(cleared) => Some(Confirm {
                        cleared,
                        expected: version,
                        outbox: true,
                        due: wake,
                    }),
                    None => kept.map(|cleared| Confirm {
                        cleared,
                        expected: version,
                        outbox: false,
                        due: wake,
                    }),
                })
            }
            (None, Some(v)) => {
                // The key's cached session was taken at the attempt's start: gone now.
                let held = lease.take_if(|_| release);
                let (deleted, back) = self.delete_releasing(key, v, held).await;
                if back.is_some() {
                    *lease = back;
                }
                deleted?;
                Ok(None)
            }
            (None, None) => Ok(None),
        }
    }

    /// Moves the committed session into the key's cache; `written` is the record saved
    /// and how long it is trusted, `None` when the stored record is unchanged.
    fn keep(
        &self,
        st: &mut SessionState<S>,
        permit: &mut Option<Permit<S>>,
        written: Option<(Record, Option<i64>)>,
    ) {
        let Some(permit) = permit.as_mut() else {
            return;
        };
        if !self.keys().caches() {
            return;
        }
        let (record, trusted_until) = match written {
            Some(w) => w,
            None => match std::mem::take(&mut st.origin) {
                Origin::Stored {
                    record,
                    trusted_until,
                    ..
                } => (record, trusted_until),
                _ => return,
            },
        };
        let (data, stack, ledger) = st.take_parts();
        permit.put_cached(Cached {
            record,
            data,
            stack,
            ledger,
            trusted_until,
        });
    }
}

/// The key's cached session of an attempt that never loaded it.
fn untouched<S>(st: &mut SessionState<S>) -> Option<Decoded<S>> {
    match std::mem::take(&mut st.origin) {
        Origin::Pending { cached, .. } | Origin::Loading { cached } => cached,
        _ => None,
    }
}

/// Runs an event's handler on a loaded session and applies its transition.
async fn run_event<S: SessionData, U: Update>(
    cx: &Cx<S, U>,
    handler: &dyn Handler<S, U>,
) -> crate::handler::HandlerResult {
    cx.ensure_loaded().await?;
    let o = handler.call(cx.clone()).await?;
    if o.is_transition() {
        cx.apply(o).await?;
        return Ok(Outcome::Handled);
    }
    Ok(o)
}

/// Pauses between attempts that lost their compare-and-set: doubling from 1 ms to
/// 200 ms, with jitter, never past the deadline.
#[derive(Default)]
struct Backoff {
    next_ms: u64,
}

impl Backoff {
    async fn wait(&mut self, deadline: Option<tokio::time::Instant>) {
        self.next_ms = (self.next_ms * 2).clamp(1, 200);
        let half = self.next_ms / 2;
        let jitter = crate::store::random_u64() % (half + 1);
        let mut at = tokio::time::Instant::now()
            + std::time::Duration::from_millis(self.next_ms - half + jitter);
        if let Some(d) = deadline {
            at = at.min(d);
        }
        tokio::time::sleep_until(at).await;
    }
}

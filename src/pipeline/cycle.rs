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
//! Whether a cached session may stand for the stored record without a read is decided
//! in one place, [`CachePolicy`], computed once when the pipeline is built.

use std::sync::Arc;

use super::Dispatch;
use super::keys::{Cached, KeyTable, Permit};
use super::lease::{HeldLease, Leases};
use crate::clock::Clock;
use crate::context::{BoxFuture, Cx, Decoded, Env, Origin, SessionState, Source};
use crate::error::{Error, Result};
use crate::handler::{Chain, Handler, Next};
use crate::outcome::Outcome;
use crate::record::{RecordOwned, RecordRef, SessionData};
use crate::session::{DecodePolicy, ErrorPolicy, KeyStrategy, SavePolicy};
use crate::store::{Codec, Preload, Record, SessionStore};
use crate::update::Update;

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
}

impl Loader {
    pub(crate) fn new(
        store: Arc<dyn SessionStore>,
        policy: CachePolicy,
        decode_policy: DecodePolicy,
    ) -> Self {
        Self {
            store,
            policy,
            decode_policy,
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
            st.set_loaded(None, Vec::new());
            return Ok(());
        };
        // The cached objects stand for the record only if its bytes are the ones this
        // process committed (whatever another process wrote is decoded afresh).
        let same =
            cached.filter(|c| c.record.version == rec.version && c.record.bytes == rec.bytes);
        let decoded = match same {
            Some(c) => Ok((c.data, c.stack)),
            None => RecordOwned::<S>::decode(key, &rec.bytes).map(|r| (Some(r.data), r.scenes)),
        };
        match decoded {
            Ok((data, stack)) => st.set_loaded(data, stack),
            Err(e) if self.decode_policy == DecodePolicy::Reset => {
                tracing::warn!(target: "stagecraft::session", key = %key, error = %crate::error::error_chain(&e),
                    "stored session could not be decoded; starting afresh");
                st.set_loaded(None, Vec::new());
                st.mark_reset();
            }
            Err(e) => return Err(e),
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
    /// How an update maps to its key.
    pub(crate) key: KeyStrategy<U>,
}

impl<S: SessionData, U: Update> Cycle<S, U> {
    pub(crate) fn store(&self) -> &Arc<dyn SessionStore> {
        &self.loader.store
    }

    pub(crate) fn keys(&self) -> &KeyTable<S> {
        &self.keys
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
        // The key's lease across processes (when the store has leases): taken before the
        // session is loaded, given back after the save and the replies, or passed on to
        // the next update of the key waiting here.
        let (mut lease, preload, passed) = match &key {
            Some(k) => match self.keys().take_lease(k) {
                // Passed on by the previous update of the key: held all along, so nobody
                // else took it since; that update's committed session may stand for the
                // record (see `CachePolicy`), compare-and-set catching any writer that
                // takes no lease.
                Some(held) if !held.is_lost() => (Some(held), Preload::NotRead, true),
                passed => {
                    // One a renewal found gone while it waited here is taken afresh.
                    if let Some(lost) = passed {
                        lost.release().await;
                    }
                    let (lease, preload) = self.leases.acquire(self.store(), k).await?;
                    (lease, preload, false)
                }
            },
            None => (None, Preload::NotRead, false),
        };
        let result = self
            .attempts(
                cx,
                key.as_ref(),
                &mut permit,
                work,
                &mut lease,
                preload,
                passed,
            )
            .await;
        if let (Some(held), Some(k)) = (lease, &key) {
            self.release(k, held).await;
        }
        result
    }

    /// Passes the lease of `key` to its next update waiting here (saving a release and
    /// an acquire), unless it was lost or this process has had the key for its fair
    /// share; then gives it back.
    async fn release(&self, key: &Arc<str>, held: HeldLease) {
        let unpassed = if held.is_lost() || !self.leases.may_keep(key) {
            Some(held)
        } else {
            self.keys().pass_lease(key, held)
        };
        if let Some(held) = unpassed {
            held.release().await;
            // A holding streak exists only for keys whose lease this process took.
            if self.keys().waiting(key) == 0 {
                self.leases.end_streak(key);
            }
        }
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
    ) -> Result<Dispatch> {
        let policy = &self.loader.policy;
        let mut attempt = 0;
        let mut after_stale = false;
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
                        st.set_loaded(c.data, c.stack);
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
            let outcome = match work {
                Work::Chain => Next::start(&self.chain).run(cx.clone()).await,
                Work::Event(handler) => run_event(&cx, handler.as_ref()).await,
            };
            let (dispatch, failure) = match outcome {
                Ok(Outcome::Pass) => (Dispatch::Unhandled, None),
                Ok(_) => (Dispatch::Handled, None),
                Err(e) if self.error_policy == ErrorPolicy::RollBack => {
                    // Nothing is written and nothing is sent; the context is finished.
                    let untouched = {
                        let mut st = cx.state();
                        st.close();
                        untouched(&mut st)
                    };
                    if let (Some(p), Some(c)) = (permit.as_mut(), untouched) {
                        p.put_cached(c);
                    }
                    drop(cx.take_outbox());
                    return Err(Error::handler(e));
                }
                Err(e) => (Dispatch::Handled, Some(Error::handler(e))),
            };
            match self.commit(&cx, permit).await {
                Err(e) if e.is_conflict() => {
                    // A stale cached session (someone else wrote the record since this
                    // process did) is not a lost race: the rerun reads, and is not
                    // counted as an attempt.
                    let stale = matches!(cx.state().origin, Origin::Stored { unread: true, .. });
                    if !stale && attempt >= self.max_attempts {
                        return Err(e);
                    }
                    if stale {
                        tracing::debug!(target: "stagecraft::session", key = ?key,
                            "cached session was stale; reading it and running the update again");
                        attempt -= 1;
                        after_stale = true;
                    } else {
                        tracing::info!(target: "stagecraft::session", key = ?key, attempt,
                            "session changed elsewhere; running the update again");
                    }
                    drop(cx.take_outbox());
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
                Ok(()) => {}
            }
            self.deliver(&cx).await?;
            return match failure {
                Some(e) => Err(e),
                None => Ok(dispatch),
            };
        }
    }

    /// Sends the held-back replies of a committed attempt, in order.
    async fn deliver(&self, cx: &Cx<S, U>) -> Result<()> {
        for msg in cx.take_outbox() {
            self.env
                .transport
                .send(&msg)
                .await
                .map_err(Error::Transport)?;
        }
        Ok(())
    }

    /// Writes the session back if it needs it (compare-and-set), then hands the
    /// decoded session to the cache. The context is finished afterwards.
    async fn commit(&self, cx: &Cx<S, U>, permit: &mut Option<Permit<S>>) -> Result<()> {
        let Some(key) = cx.key() else {
            cx.state().close();
            return Ok(());
        };
        let (bytes, expected) = {
            let mut st = cx.state();
            let closed = st.close();
            if !closed.loaded {
                // Never loaded: the key's cached session goes back as it was.
                if let (Some(p), Some(c)) = (permit.as_mut(), untouched(&mut st)) {
                    p.put_cached(c);
                }
                return Ok(());
            }
            let needed = match self.save_policy {
                SavePolicy::Touched => closed.dirty || closed.touched,
                _ => closed.dirty,
            };
            if !needed {
                self.keep(&mut st, permit, None);
                return Ok(());
            }
            let (expected, original) = match &st.origin {
                Origin::Stored { record, .. } => (Some(record.version), Some(record.bytes.len())),
                _ => (None, None),
            };
            if st.is_empty() {
                (None, expected)
            } else {
                let size_hint = original.map_or(128, |n| n + 32);
                let (data, scenes) = st.parts(|| (self.env.default_session)());
                let bytes = RecordRef::new(data, scenes)
                    .encode(self.codec, size_hint)
                    .map_err(|e| Error::Encode {
                        key: key.to_owned(),
                        source: e,
                    })?;
                let unchanged = matches!(&st.origin,
                    Origin::Stored { record, .. } if record.bytes == bytes);
                if self.save_policy == SavePolicy::Changed && unchanged {
                    self.keep(&mut st, permit, None);
                    return Ok(());
                }
                (Some(bytes), expected)
            }
        };
        match (bytes, expected) {
            (Some(bytes), expected) => {
                let trusted_until = self.loader.policy.trusted_until();
                let version = self.store().save(key, &bytes, expected).await?;
                let mut st = cx.state();
                self.keep(
                    &mut st,
                    permit,
                    Some((Record { bytes, version }, trusted_until)),
                );
            }
            (None, Some(v)) => {
                // The key's cached session was taken at the attempt's start: gone now.
                self.store().delete(key, v).await?;
            }
            (None, None) => {}
        }
        Ok(())
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
        let (data, stack) = st.take_parts();
        permit.put_cached(Cached {
            record,
            data,
            stack,
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

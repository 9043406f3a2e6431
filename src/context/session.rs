//! [`SessionState`]: the session of one update attempt as its handlers see it.
//!
//! The handler-facing half (data, scene stack, the dirty/touched flags, the transition
//! guards) is private to this module and changed only through its methods. The other
//! half, where the session came from ([`Origin`]), is the session cycle's bookkeeping:
//! written and read only by `pipeline/cycle.rs`, which loads and commits.

use crate::error::{Error, Result};
use crate::outcome::MAX_TRANSITIONS;
use crate::record::Frame;
use crate::store::{Preload, Record};
use crate::transport::Outgoing;

/// The session cycle's bookkeeping stored with a session (the record's `seen` and
/// `outbox`), as loaded and as the commit writes it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ledger {
    /// The ids of the key's recent updates, oldest first.
    pub(crate) seen: Vec<i64>,
    /// Stored replies of a committed step not delivered yet.
    pub(crate) outbox: Vec<Outgoing>,
    /// The stored record has an outbox (delivered since or not): the next write of the
    /// record leaves it out.
    pub(crate) stored_outbox: bool,
    /// Copies of parts of the record that could not be decoded (kept on every write).
    pub(crate) lost: Vec<serde_json::Value>,
    /// Fields of the record this build does not know (written back as read).
    pub(crate) extras: crate::record::Extras,
    /// The ids of messages sent under a name (the record's `sent`).
    pub(crate) sent: crate::record::SentIds,
}

impl Ledger {
    /// The bookkeeping read from a record.
    pub(crate) fn stored(
        seen: Vec<i64>,
        outbox: Vec<Outgoing>,
        lost: Vec<serde_json::Value>,
    ) -> Self {
        Self {
            seen,
            stored_outbox: !outbox.is_empty(),
            outbox,
            lost,
            extras: crate::record::Extras::default(),
            sent: crate::record::SentIds::default(),
        }
    }

    /// The bookkeeping with the ids of messages sent under a name.
    pub(crate) fn with_sent(mut self, sent: crate::record::SentIds) -> Self {
        self.sent = sent;
        self
    }
}

/// A decoded copy of a stored record, as the session cycle keeps it between updates:
/// the record, the objects decoded from it, and until when (store clock, ms) it may
/// stand for the stored record without a read (`None`: only after a read shows the
/// same bytes and version).
pub(crate) struct Decoded<S> {
    pub(crate) record: Record,
    pub(crate) data: Option<S>,
    pub(crate) stack: Vec<Frame>,
    pub(crate) ledger: Ledger,
    pub(crate) trusted_until: Option<i64>,
}

/// Where an attempt's session came from, as the session cycle recorded it.
#[derive(Default)]
pub(crate) enum Origin<S> {
    /// Not loaded yet. `preload` is the record read together with the key's lease;
    /// `cached` the key's decoded copy, used if the record read is byte-equal to it.
    Pending {
        preload: Preload,
        cached: Option<Decoded<S>>,
    },
    /// Being read from the store; `cached` is used if the record read is byte-equal.
    Loading { cached: Option<Decoded<S>> },
    /// Nothing was loaded: the update has no session, or no record was stored.
    #[default]
    Absent,
    /// Decoded from (or found byte-equal to) this stored record. `unread`: taken from
    /// the cache without reading the store; `trusted_until`: how long (store clock, ms)
    /// the cached copy may stand for the record unread (`None`: only after a read).
    Stored {
        record: Record,
        unread: bool,
        trusted_until: Option<i64>,
    },
}

/// What the handlers of one update attempt see of the session, and how they left it.
pub(crate) struct SessionState<S> {
    loaded: bool,
    data: Option<S>,
    stack: Vec<Frame>,
    /// Something was borrowed mutably (or the stack changed).
    dirty: bool,
    /// Something was read (Telegraf's "touched").
    touched: bool,
    /// The update was committed: the session is gone from this context.
    closed: bool,
    /// > 0 while leave hooks run: transitions are refused.
    leaving: usize,
    transitions: usize,
    /// The stored bookkeeping (recent update ids, undelivered replies).
    pub(crate) ledger: Ledger,
    /// The session cycle's bookkeeping (see [`Origin`]).
    pub(crate) origin: Origin<S>,
}

/// How a closed session was left, for the commit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed {
    pub(crate) loaded: bool,
    pub(crate) dirty: bool,
    pub(crate) touched: bool,
}

impl<S> SessionState<S> {
    /// A session not loaded yet, to be loaded as `origin` says.
    pub(crate) fn new(origin: Origin<S>) -> Self {
        Self {
            loaded: false,
            data: None,
            stack: Vec::new(),
            dirty: false,
            touched: false,
            closed: false,
            leaving: 0,
            transitions: 0,
            ledger: Ledger::default(),
            origin,
        }
    }

    pub(crate) fn is_loaded(&self) -> bool {
        self.loaded
    }

    /// The session is loaded: `data` (`None`: created on first use) and `stack`.
    pub(crate) fn set_loaded(&mut self, data: Option<S>, stack: Vec<Frame>, ledger: Ledger) {
        self.data = data;
        self.stack = stack;
        self.ledger = ledger;
        self.loaded = true;
    }

    /// The stored session was discarded (it could not be decoded): it must be written.
    pub(crate) fn mark_reset(&mut self) {
        self.dirty = true;
    }

    fn open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Finished)
        } else {
            Ok(())
        }
    }

    /// The data for reading, created by `default` when new.
    pub(crate) fn data(&mut self, default: impl FnOnce() -> S) -> Result<&S> {
        self.open()?;
        self.touched = true;
        Ok(self.data.get_or_insert_with(default))
    }

    /// The data for changing, created by `default` when new.
    pub(crate) fn data_mut(&mut self, default: impl FnOnce() -> S) -> Result<&mut S> {
        self.open()?;
        self.touched = true;
        self.dirty = true;
        Ok(self.data.get_or_insert_with(default))
    }

    /// Deletes data and stack (the record is deleted at the commit).
    pub(crate) fn clear(&mut self) -> Result<()> {
        self.open()?;
        self.data = None;
        self.stack.clear();
        self.dirty = true;
        self.touched = true;
        Ok(())
    }

    /// The scene stack, bottom first.
    pub(crate) fn stack(&self) -> &[Frame] {
        &self.stack
    }

    /// The scene stack for changing (marks the session dirty).
    pub(crate) fn stack_mut(&mut self) -> Result<&mut Vec<Frame>> {
        self.open()?;
        self.dirty = true;
        Ok(&mut self.stack)
    }

    /// The active frame.
    pub(crate) fn top(&self) -> Result<&Frame> {
        self.open()?;
        self.stack.last().ok_or(Error::NoActiveScene)
    }

    /// The active frame for changing (marks the session dirty).
    pub(crate) fn top_mut(&mut self) -> Result<&mut Frame> {
        self.stack_mut()?.last_mut().ok_or(Error::NoActiveScene)
    }

    /// Moves the active wizard's cursor (no step runs).
    pub(crate) fn move_cursor(&mut self, f: impl FnOnce(i64) -> i64) -> Result<()> {
        let frame = self.top_mut()?;
        let cursor = frame
            .cursor
            .as_mut()
            .ok_or(Error::Transition("the active scene is not a wizard"))?;
        *cursor = f(*cursor);
        Ok(())
    }

    /// Counts a transition, refusing it inside a leave hook, past [`MAX_TRANSITIONS`]
    /// and after the commit.
    pub(crate) fn begin_transition(&mut self) -> Result<()> {
        self.open()?;
        if self.leaving > 0 {
            return Err(Error::Transition(
                "scenes cannot change inside a leave hook",
            ));
        }
        self.transitions += 1;
        if self.transitions > MAX_TRANSITIONS {
            return Err(Error::TransitionLoop(MAX_TRANSITIONS));
        }
        Ok(())
    }

    /// Leave hooks start (`true`) or end (`false`) running: no transitions meanwhile.
    pub(crate) fn set_leaving(&mut self, leaving: bool) {
        if leaving {
            self.leaving += 1;
        } else {
            self.leaving = self.leaving.saturating_sub(1);
        }
    }

    /// Ends the session's life in this context, saying how it was left.
    pub(crate) fn close(&mut self) -> Closed {
        self.closed = true;
        Closed {
            loaded: self.loaded,
            dirty: self.dirty,
            touched: self.touched,
        }
    }

    /// Neither data nor scenes: the record is to be deleted.
    pub(crate) fn is_empty(&self) -> bool {
        self.data.is_none() && self.stack.is_empty()
    }

    /// The data (created by `default` when missing), the stack and the bookkeeping,
    /// for encoding.
    pub(crate) fn parts(&mut self, default: impl FnOnce() -> S) -> (&S, &[Frame], &Ledger) {
        (
            self.data.get_or_insert_with(default),
            &self.stack,
            &self.ledger,
        )
    }

    /// Moves data, stack and bookkeeping out (into the cycle's cache, after the
    /// commit).
    pub(crate) fn take_parts(&mut self) -> (Option<S>, Vec<Frame>, Ledger) {
        (
            self.data.take(),
            std::mem::take(&mut self.stack),
            std::mem::take(&mut self.ledger),
        )
    }
}

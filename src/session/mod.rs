//! Sessions: which key an update's session lives under, and the policies of the session
//! cycle (what a handler error, an undecodable record and an unchanged session do).
//!
//! A session record holds the bot's own data `S` and the [scene stack](crate::record::Frame);
//! its stored shape is the [`record`](crate::record) module's. The session lives for
//! one update: loaded lazily before the first handler runs, written back after the chain
//! when it changed, under a per-key lock so that updates of one key never interleave.
//! See [`Pipeline`](crate::Pipeline) for the whole cycle.

mod key;

pub use key::{KeyFn, KeyStrategy};

pub use crate::record::{FrameInfo, RecordInfo, SessionData, inspect};

/// What happens to the session when a handler fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorPolicy {
    /// Write the session as the handlers left it, then report the error; held-back
    /// replies made before the error are sent. This is what Telegraf does.
    #[default]
    WriteAnyway,
    /// Keep the stored session as it was before the update (nothing is written) and drop
    /// the replies the update made through its context.
    RollBack,
}

/// What happens when a stored session cannot be decoded (changed types, corruption,
/// an unregistered scene state tag).
///
/// Whatever the policy, nothing is destroyed without a copy: what a repair replaces is
/// kept in the record's `lost` field (the newest four copies, each with when and why),
/// for an operator to restore.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodePolicy {
    /// Decode the record part by part and keep every part that decodes (the default):
    /// a scene state that does not decode is upgraded (see
    /// [`SceneBuilder::upgrade`](crate::scene::SceneBuilder::upgrade)) or kept as
    /// stored, and its scene's [`Recovery`](crate::scene::Recovery) applies when it
    /// becomes the active scene; user data that does not decode starts afresh, its JSON
    /// copied into `lost`. A `tracing` warning says what was mended. No user is ever
    /// stuck, and the other parts of the session are kept.
    #[default]
    Mend,
    /// Report [`Error::Decode`](crate::Error::Decode) for the update and leave the stored
    /// bytes untouched (every update of that user fails until an operator repairs or
    /// migrates the record).
    Fail,
    /// Log a warning and start the session afresh, the whole old record copied into
    /// `lost`.
    Reset,
}

/// When a session is written back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SavePolicy {
    /// Only when its encoding changed during the update (the default).
    #[default]
    Changed,
    /// Whenever a handler read or wrote it (Telegraf's "touched"); refreshes store TTLs on reads.
    Touched,
}

//! What a running bot tells the outside: its `tracing` span and events, its counters
//! (feature `metrics`), and how to read them with `log`.
//!
//! # The span of an update
//!
//! Every update handled by [`Pipeline::handle`](crate::Pipeline::handle) runs inside one
//! `tracing` span, target `stagecraft::stage`, name `update`, level `INFO`, with the
//! fields
//!
//! | field | value |
//! |---|---|
//! | `update_id` | the update's id, when it has one |
//! | `key` | the session key, when the update has a session |
//! | `scene` | the active scene when the update reached the stage (absent outside scenes) |
//! | `step` | the active wizard step then (absent for plain scenes) |
//! | `outcome` | [`OUTCOME_HANDLED`], [`OUTCOME_UNHANDLED`], [`OUTCOME_DUPLICATE`] or [`OUTCOME_FAILED`] |
//!
//! An event of a session without an update ([`Pipeline::run_event`](crate::Pipeline::run_event),
//! a timer fired by [`Pipeline::wake_due`](crate::Pipeline::wake_due)) runs inside a span
//! `event` of the same target and level, with `kind` (`event` or `timer`), `key`,
//! `scene` and `step` (of a timer's scene) and `outcome`.
//!
//! Store calls inside it have spans of their own (`key`, and the error when one failed).
//!
//! # Events
//!
//! Each event has an `event` field naming it, so a subscriber can filter on it:
//!
//! | `event` | target | level | when |
//! |---|---|---|---|
//! | `enter` | `stagecraft::stage` | `DEBUG` | a scene was entered (`scene`, `silent`) |
//! | `leave` | `stagecraft::stage` | `DEBUG` | a scene was left (`scene`) |
//! | `expire` | `stagecraft::stage` | `DEBUG` | an expired scene was dropped from the stack (`scene`); `INFO` with `hooks` when its expiry hooks ran |
//! | `timeout` | `stagecraft::stage` | `INFO` | no update in time: a timeout hook runs (`scene`, `step`) |
//! | `mend` | `stagecraft::session` | `WARN` | a stored session did not decode as a whole and was mended part by part (`repairs`) |
//! | `recover` | `stagecraft::stage` | `WARN` | the active frame could not be resumed; its scene's `Recovery` applies (`scene`, `recovery`) |
//! | `chat_migrated` | `stagecraft::session` | `INFO` | a group became a supergroup; its sessions moved (`from`, `to`, `moved`, `kept`) |
//! | `conflict` | `stagecraft::session` | `INFO` | a write lost its compare-and-set to another writer (`attempt`) |
//! | `retry` | `stagecraft::session` | `INFO` | the update runs again after a conflict (`attempt`) |
//! | `not_handled` | `stagecraft::session` | `WARN` | the attempts ran out; the update is handed back |
//! | `duplicate` | `stagecraft::session` | `INFO` | the update was handled before (its id is recent): skipped |
//!
//! # Counters (feature `metrics`)
//!
//! With the `metrics` feature, the pipeline counts through the
//! [`metrics`](https://docs.rs/metrics) crate's facade; install the exporter of your
//! choice (Prometheus, StatsD, ...) as the global recorder and they show up there.
//! Without a recorder, counting costs next to nothing.
//!
//! | counter | labels | counts |
//! |---|---|---|
//! | [`UPDATES`] | `outcome` | updates, by outcome (as the span's) |
//! | [`CONFLICTS`] | | writes that lost their compare-and-set |
//! | [`RETRIES`] | | updates run again after a conflict |
//! | [`EXPIRIES`] | `scene` | scenes dropped because they expired |
//! | [`TIMEOUTS`] | `scene` | timeouts that fired (no update in time) |
//! | [`MENDS`] | | stored sessions mended part by part (a deploy changed their types) |
//! | [`RECOVERIES`] | `scene` | active frames that could not be resumed and were recovered |
//! | [`ENTERS`] | `scene` | scenes entered |
//!
//! # Reading it with `log`
//!
//! stagecraft emits through `tracing` only. A bot that logs with the `log` crate (e.g.
//! `env_logger`) sees stagecraft's events when `tracing`'s `log` bridge is on: enable
//! stagecraft's `log` feature (`stagecraft = { version = "0.1", features = ["log"] }`,
//! which turns on `tracing/log`), and with no `tracing` subscriber installed every event
//! becomes a `log` record of the same target and level. A bot that has a `tracing`
//! subscriber needs none of this; to see the `log` records of other crates there, use
//! `tracing-log`'s `LogTracer`.

/// Counter: updates, labelled `outcome`.
pub const UPDATES: &str = "stagecraft_updates_total";
/// Counter: writes that lost their compare-and-set to another writer.
pub const CONFLICTS: &str = "stagecraft_conflicts_total";
/// Counter: updates run again after a conflict.
pub const RETRIES: &str = "stagecraft_retries_total";
/// Counter: scenes dropped because they expired, labelled `scene`.
pub const EXPIRIES: &str = "stagecraft_expiries_total";
/// Counter: timeouts that fired (no update in time), labelled `scene`.
pub const TIMEOUTS: &str = "stagecraft_timeouts_total";
/// Counter: stored sessions that did not decode as a whole and were mended part by part
/// (upgraded, or parts kept undecoded; see `DecodePolicy::Mend`).
pub const MENDS: &str = "stagecraft_mends_total";
/// Counter: active frames that could not be resumed and were recovered by their scene's
/// `Recovery` (the user heard the recovery notice), labelled `scene`.
pub const RECOVERIES: &str = "stagecraft_recoveries_total";
/// Counter: scenes entered, labelled `scene`.
pub const ENTERS: &str = "stagecraft_scene_enters_total";

/// The `outcome` of an update some handler took.
pub const OUTCOME_HANDLED: &str = "handled";
/// The `outcome` of an update no handler took.
pub const OUTCOME_UNHANDLED: &str = "unhandled";
/// The `outcome` of an update skipped as one handled before.
pub const OUTCOME_DUPLICATE: &str = "duplicate";
/// The `outcome` of an update that ended in an error.
pub const OUTCOME_FAILED: &str = "failed";

/// Counts one update of `outcome`.
#[inline]
pub(crate) fn update(outcome: &'static str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(UPDATES, "outcome" => outcome).increment(1);
    let _ = outcome;
}

/// Counts a lost compare-and-set.
#[inline]
pub(crate) fn conflict() {
    #[cfg(feature = "metrics")]
    metrics::counter!(CONFLICTS).increment(1);
}

/// Counts a rerun after a conflict.
#[inline]
pub(crate) fn retry() {
    #[cfg(feature = "metrics")]
    metrics::counter!(RETRIES).increment(1);
}

/// Counts an expired scene of id `scene`.
#[inline]
pub(crate) fn expiry(scene: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(EXPIRIES, "scene" => scene.to_owned()).increment(1);
    let _ = scene;
}

/// Counts a timeout of scene `scene` that fired.
#[inline]
pub(crate) fn timeout(scene: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(TIMEOUTS, "scene" => scene.to_owned()).increment(1);
    let _ = scene;
}

/// Counts a mended stored session.
#[inline]
pub(crate) fn mend() {
    #[cfg(feature = "metrics")]
    metrics::counter!(MENDS).increment(1);
}

/// Counts a recovered frame of scene `scene`.
#[inline]
pub(crate) fn recovery(scene: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(RECOVERIES, "scene" => scene.to_owned()).increment(1);
    let _ = scene;
}

/// Counts an entered scene of id `scene`.
#[inline]
pub(crate) fn enter(scene: &str) {
    #[cfg(feature = "metrics")]
    metrics::counter!(ENTERS, "scene" => scene.to_owned()).increment(1);
    let _ = scene;
}

//! Replaying recorded conversations: the replay format of the reference bot.
//!
//! One JSON value per line (blank lines ignored):
//! - a Telegram Bot API `Update` object: handled, and finished before the next line;
//! - `{"parallel": [Update, ...]}`: handed to the pipeline together, each in its own
//!   task (as one `getUpdates` batch or concurrent webhook requests would be);
//! - `{"advance_clock_s": N}`: moves the replay clock forward N seconds;
//! - `{"comment": "..."}`: ignored.

use std::io::BufRead;
use std::time::Duration;

use serde_json::Value;

use crate::clock::ManualClock;
use crate::error::{Error, Message, Result};
use crate::pipeline::Pipeline;
use crate::session::SessionData;
use crate::update::TelegramUpdate;

/// The Unix time (seconds) a replay clock starts at.
pub const REPLAY_EPOCH_S: i64 = 1_700_000_000;

/// One line of a replay file.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Line {
    /// An update, handled before the next line.
    Update(Box<TelegramUpdate>),
    /// Updates delivered at the same time.
    Parallel(Vec<TelegramUpdate>),
    /// Move the clock forward this many seconds.
    AdvanceClock(u64),
    /// A comment or a blank line.
    Comment,
}

impl Line {
    /// Parses one line.
    ///
    /// # Errors
    /// [`Error::Update`] when the line is not valid JSON or not one of the forms above.
    pub fn parse(line: &str) -> Result<Self> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(Self::Comment);
        }
        let value: Value = serde_json::from_str(line).map_err(|e| Error::Update(e.into()))?;
        let bad = |what: &str| Error::Update(Box::new(Message(format!("replay line: {what}"))));
        let Value::Object(map) = &value else {
            return Err(bad("expected a JSON object"));
        };
        if map.contains_key("comment") {
            return Ok(Self::Comment);
        }
        if let Some(n) = map.get("advance_clock_s") {
            return n
                .as_u64()
                .map(Self::AdvanceClock)
                .ok_or_else(|| bad("advance_clock_s must be a whole number"));
        }
        if let Some(list) = map.get("parallel") {
            let Value::Array(items) = list else {
                return Err(bad("parallel must be an array"));
            };
            return items
                .iter()
                .cloned()
                .map(TelegramUpdate::from_value)
                .collect::<Result<_>>()
                .map(Self::Parallel);
        }
        if map.contains_key("update_id") {
            return TelegramUpdate::from_value(value).map(|u| Self::Update(Box::new(u)));
        }
        Err(bad(
            "not an update, parallel, advance_clock_s or comment line",
        ))
    }
}

/// Replays `input` through `pipeline`, moving `clock` on `advance_clock_s` lines.
///
/// A handler error is logged (as a bot's error handler would) and the replay goes on;
/// a malformed line stops the replay with its line number.
///
/// # Errors
/// [`Error::Update`] for a malformed line (with its number), or an I/O error reading input.
pub async fn replay<S: SessionData>(
    pipeline: &Pipeline<S, TelegramUpdate>,
    clock: &ManualClock,
    input: impl BufRead,
) -> Result<()> {
    for (n, line) in input.lines().enumerate() {
        let line = line.map_err(|e| Error::Update(e.into()))?;
        let parsed = Line::parse(&line).map_err(|e| {
            Error::Update(Box::new(Message(format!(
                "line {}: {}",
                n + 1,
                error_chain(&e)
            ))))
        })?;
        match parsed {
            Line::Comment => {}
            Line::AdvanceClock(s) => clock.advance(Duration::from_secs(s)),
            Line::Update(u) => report(pipeline.handle(*u).await),
            Line::Parallel(updates) => {
                // Handing them over in order joins each key's queue in order; then they run at once.
                let futures: Vec<_> = updates.into_iter().map(|u| pipeline.handle(u)).collect();
                let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
                for t in tasks {
                    match t.await {
                        Ok(r) => report(r),
                        Err(e) => {
                            tracing::error!(target: "stagecraft::replay", error = %e, "update task failed")
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

fn report<T>(r: Result<T>) {
    if let Err(e) = r {
        tracing::error!(target: "stagecraft::replay", error = %error_chain(&e), "update failed");
    }
}

pub use crate::error::error_chain;

//! Replaying recorded conversations: the replay format of the reference bot.
//!
//! One JSON value per line (blank lines ignored):
//! - a Telegram Bot API `Update` object: handled, and finished before the next line;
//! - `{"parallel": [Update, ...]}`: handed to the pipeline together, each in its own
//!   task (as one `getUpdates` batch or concurrent webhook requests would be);
//! - `{"advance_clock_s": N}`: moves the replay clock forward N seconds (it stops at the
//!   end of time rather than wrap, see [`ManualClock::advance`]); the timeouts that
//!   fall due then fire at once, before the next line is read
//!   ([`Pipeline::wake_due`]), a deadline stored by an earlier process on the same
//!   store included;
//! - `{"comment": "..."}`: ignored.
//!
//! A malformed line (not UTF-8, longer than [`Limits::max_line_bytes`], not JSON, not
//! one of the forms above, an update that cannot be read) is reported in the
//! [`ReplaySummary`] with its line number, and the replay goes on with the next line. A
//! bad item of a `parallel` batch costs only that item: the others are handled. Updates
//! are read from the line's text as [`TelegramUpdate::from_json`] reads them.
//!
//! ```
//! use stagecraft::clock::ManualClock;
//! use stagecraft::prelude::*;
//! use stagecraft::replay::{REPLAY_EPOCH_S, replay};
//! use stagecraft::transport::RecordingTransport;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
//! let replies = RecordingTransport::new();
//! let bot = Pipeline::<()>::builder()
//!     .clock(clock.clone())
//!     .transport(replies.clone())
//!     .on_text(|cx: Cx<()>| async move {
//!         cx.reply("hi");
//!         Ok(Outcome::Handled)
//!     })
//!     .build();
//! let input = concat!(
//!     r#"{"update_id":1,"message":{"chat":{"id":5},"from":{"id":5},"text":"a"}}"#, "\n",
//!     "not json\n",
//!     r#"{"update_id":2,"message":{"chat":{"id":5},"from":{"id":5},"text":"b"}}"#, "\n",
//! );
//! let summary = replay(&bot, &clock, input.as_bytes()).await.unwrap();
//! assert_eq!(replies.texts(), ["hi", "hi"]);
//! assert_eq!((summary.lines, summary.updates), (3, 2));
//! assert_eq!(summary.bad_lines[0].line, 2);
//! assert_eq!(
//!     stagecraft::error::error_chain(&summary.bad_lines[0]),
//!     "line 2: not JSON: expected ident at column 2"
//! );
//! # });
//! ```

use std::fmt;
use std::io::{self, BufRead};
use std::time::Duration;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::clock::ManualClock;
use crate::error::Result;
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

/// Why a line of a replay could not be used.
///
/// `Display` says what is wrong with the line; the parser's own message, when there is
/// one, is the [`source`](std::error::Error::source) (so
/// [`error_chain`] prints each once).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LineError {
    /// The line is not valid UTF-8.
    #[error("not UTF-8 (invalid byte at column {column})")]
    NotUtf8 {
        /// The byte column (1-based) of the first invalid byte.
        column: usize,
    },
    /// The line is longer than the replay accepts ([`Limits::max_line_bytes`]); it was
    /// skipped without being kept in memory.
    #[error("longer than {limit} bytes")]
    TooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// The line is not JSON.
    #[error("not JSON")]
    Json(#[source] JsonError),
    /// The line nests arrays or objects deeper than the JSON parser's limit (128) where
    /// it reads them. (Nesting in the parts it skips, such as the fields of an update
    /// that stagecraft does not read, is skipped at any depth in bounded memory.)
    #[error("nested too deeply")]
    TooDeep(#[source] JsonError),
    /// The line is a JSON object that cannot be a line of the replay format (a key given
    /// twice).
    #[error("not a replay line")]
    Form(#[source] JsonError),
    /// The line is JSON, but not an object.
    #[error("a JSON {found}, not an object")]
    NotAnObject {
        /// What it is instead (`"array"`, `"string"`, `"number"`, `"boolean"`, `"null"`).
        found: &'static str,
    },
    /// An object that is none of the forms of the replay format.
    #[error("not an update, parallel, advance_clock_s or comment line")]
    UnknownKind,
    /// `advance_clock_s` is not a whole number of seconds, 0 or more.
    #[error("advance_clock_s must be a whole number of seconds, 0 or more")]
    BadClock,
    /// `parallel` is not an array.
    #[error("parallel must be an array of updates")]
    NotAList,
    /// The line (or the item of a `parallel` batch) is not a Telegram `Update`.
    #[error("not a Telegram update")]
    Update(#[source] JsonError),
    /// An item of a `parallel` batch is bad (from [`Line::parse`], which takes a batch
    /// whole or not at all; the replay skips only the bad items).
    #[error("parallel item {item}")]
    ParallelItem {
        /// The item's position in the batch (1-based).
        item: usize,
        /// What is wrong with it ([`NotAnObject`](Self::NotAnObject) or
        /// [`Update`](Self::Update)).
        #[source]
        source: Box<LineError>,
    },
}

impl LineError {
    /// The parser's error about the JSON that starts at byte `offset` of the line.
    fn json(e: serde_json::Error, offset: usize) -> Self {
        // serde_json has no public code for it: its message is the stable way to tell.
        let deep = e.to_string().starts_with("recursion limit exceeded");
        let data = e.is_data();
        let e = JsonError::new(e, offset);
        if deep {
            Self::TooDeep(e)
        } else if data {
            Self::Form(e)
        } else {
            Self::Json(e)
        }
    }
}

/// The JSON parser's message about a replay line, placed by its byte column in that
/// line (`expected value at column 7`: the parser's own "line 1" would read as the
/// replay's first line).
#[derive(Debug)]
pub struct JsonError {
    error: serde_json::Error,
    column: Option<usize>,
}

impl JsonError {
    fn new(error: serde_json::Error, offset: usize) -> Self {
        let column = (error.line() > 0).then(|| offset.saturating_add(error.column()));
        Self { error, column }
    }

    /// The byte column (1-based) in the line where the parser stopped, when it says.
    #[must_use]
    pub fn column(&self) -> Option<usize> {
        self.column
    }

    /// The parser's own error (its position is within the JSON value it read).
    #[must_use]
    pub fn inner(&self) -> &serde_json::Error {
        &self.error
    }
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.error.to_string();
        let at = format!(
            " at line {} column {}",
            self.error.line(),
            self.error.column()
        );
        f.write_str(text.strip_suffix(&at).unwrap_or(&text))?;
        if let Some(column) = self.column {
            write!(f, " at column {column}")?;
        }
        Ok(())
    }
}

impl std::error::Error for JsonError {}

/// Where `inner`, a slice of `outer`, starts in it.
fn offset_in(outer: &str, inner: &str) -> usize {
    (inner.as_ptr() as usize).saturating_sub(outer.as_ptr() as usize)
}

/// A line (or an item of a `parallel` batch) the replay skipped, and why.
///
/// Its `Display` is where it is (`line 4`, `line 7, parallel item 2`); the reason is its
/// [`source`](std::error::Error::source), so
/// [`error_chain`] gives `line 4: not JSON: expected value at column 1`.
#[derive(Debug)]
#[non_exhaustive]
pub struct BadLine {
    /// The line number (1-based, blank lines counted).
    pub line: usize,
    /// The position in the line's `parallel` batch (1-based), when only that item was bad.
    pub item: Option<usize>,
    /// What is wrong with it.
    pub error: LineError,
}

impl fmt::Display for BadLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}", self.line)?;
        if let Some(item) = self.item {
            write!(f, ", parallel item {item}")?;
        }
        Ok(())
    }
}

impl std::error::Error for BadLine {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// What a replay did.
#[derive(Debug, Default)]
#[non_exhaustive]
pub struct ReplaySummary {
    /// Lines read (blank lines and comments included).
    pub lines: usize,
    /// Updates handed to the pipeline.
    pub updates: usize,
    /// Of those, the updates the pipeline answered with an error (each is logged at
    /// `error` level under the target `stagecraft::replay`, as a bot's error handler
    /// would, and the replay goes on).
    pub failed_updates: usize,
    /// The lines skipped (one entry per bad item of a `parallel` batch), in input order:
    /// the first [`Limits::max_kept_bad_lines`] of them.
    pub bad_lines: Vec<BadLine>,
    /// How many lines (and batch items) were skipped in all, kept or not.
    pub bad_lines_total: usize,
    /// Timers that fired when `advance_clock_s` lines moved the clock past them.
    pub timers: usize,
}

impl ReplaySummary {
    /// Was every line good?
    #[must_use]
    pub fn is_clean(&self) -> bool {
        self.bad_lines_total == 0
    }

    fn bad(&mut self, limits: &Limits, bad: BadLine) {
        self.bad_lines_total = self.bad_lines_total.saturating_add(1);
        if self.bad_lines.len() < limits.max_kept_bad_lines {
            self.bad_lines.push(bad);
        }
    }
}

/// Bounds on what a replay holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// The longest line read, in bytes (without its line break): 1 MiB by default. A
    /// longer line is skipped as it is read, without being kept.
    pub max_line_bytes: usize,
    /// How many bad lines the summary keeps with their errors: 1,000 by default (all are
    /// counted).
    pub max_kept_bad_lines: usize,
    /// How many updates of a `parallel` batch are handed to the pipeline and not yet
    /// finished at a time: 1,024 by default. The items of a batch are read one by one
    /// as they are handed over, so a batch of any length holds at most this many
    /// updates in memory (and the pipeline's per-key queue bound,
    /// [`PipelineBuilder::max_queue_per_key`](crate::pipeline::PipelineBuilder::max_queue_per_key),
    /// refuses the excess of one key as it would a live flood).
    pub max_parallel_tasks: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_line_bytes: 1 << 20,
            max_kept_bad_lines: 1000,
            max_parallel_tasks: 1024,
        }
    }
}

impl Limits {
    /// Sets [`max_line_bytes`](Self::max_line_bytes).
    #[must_use]
    pub fn max_line_bytes(mut self, bytes: usize) -> Self {
        self.max_line_bytes = bytes;
        self
    }

    /// Sets [`max_kept_bad_lines`](Self::max_kept_bad_lines).
    #[must_use]
    pub fn max_kept_bad_lines(mut self, n: usize) -> Self {
        self.max_kept_bad_lines = n;
        self
    }

    /// Sets [`max_parallel_tasks`](Self::max_parallel_tasks) (at least 1).
    #[must_use]
    pub fn max_parallel_tasks(mut self, n: usize) -> Self {
        self.max_parallel_tasks = n.max(1);
        self
    }
}

impl Line {
    /// Parses one line. A `parallel` batch is taken whole or not at all
    /// ([`LineError::ParallelItem`] names the first bad item); the replay itself skips
    /// only the bad items.
    ///
    /// # Errors
    /// A [`LineError`] when the line is not valid JSON or not one of the forms above.
    pub fn parse(line: &str) -> Result<Self, LineError> {
        let (line, mut bad) = Self::parse_lenient(line)?;
        match bad.drain(..).next() {
            Some((item, source)) => Err(LineError::ParallelItem {
                item,
                source: Box::new(source),
            }),
            None => Ok(line),
        }
    }

    /// Parses one line, keeping the good items of a `parallel` batch and returning the
    /// bad ones with their positions (1-based).
    ///
    /// Updates are read from the line's text as [`TelegramUpdate::from_json`] reads
    /// them (not through a `serde_json::Value`, which is stricter about the parts an
    /// update ignores, and allocates a tree first).
    fn parse_lenient(text: &str) -> Result<(Self, Vec<(usize, LineError)>), LineError> {
        match Self::parse_parts(text)? {
            Parts::Line(line) => Ok((line, Vec::new())),
            Parts::Parallel(items) => {
                let mut updates = Vec::with_capacity(items.len());
                let mut bad = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    match parse_item(text, item) {
                        Ok(u) => updates.push(u),
                        Err(e) => bad.push((i + 1, e)),
                    }
                }
                Ok((Self::Parallel(updates), bad))
            }
        }
    }

    /// Parses one line, leaving the items of a `parallel` batch unread (for the replay
    /// to read one by one as it hands them over).
    fn parse_parts(text: &str) -> Result<Parts<'_>, LineError> {
        let line = text.trim();
        if line.is_empty() {
            return Ok(Parts::Line(Self::Comment));
        }
        let at = offset_in(text, line);
        check_object(line, at)?;
        let probe: Probe<'_> = serde_json::from_str(line).map_err(|e| LineError::json(e, at))?;
        if probe.comment {
            return Ok(Parts::Line(Self::Comment));
        }
        if let Some(n) = probe.advance_clock_s {
            let s = serde_json::from_str(n.get()).map_err(|_| LineError::BadClock)?;
            return Ok(Parts::Line(Self::AdvanceClock(s)));
        }
        if let Some(list) = probe.parallel {
            let items: Vec<&RawValue> =
                serde_json::from_str(list.get()).map_err(|_| LineError::NotAList)?;
            return Ok(Parts::Parallel(items));
        }
        if probe.update_id {
            let u =
                serde_json::from_str(line).map_err(|e| LineError::Update(JsonError::new(e, at)))?;
            return Ok(Parts::Line(Self::Update(Box::new(u))));
        }
        Err(LineError::UnknownKind)
    }
}

/// A parsed line whose `parallel` items, if any, are still unread.
enum Parts<'a> {
    Line(Line),
    Parallel(Vec<&'a RawValue>),
}

/// Reads one item of a `parallel` batch of the line `text`.
fn parse_item(text: &str, item: &RawValue) -> Result<TelegramUpdate, LineError> {
    let at = offset_in(text, item.get());
    check_object(item.get(), at)?;
    serde_json::from_str(item.get()).map_err(|e| LineError::Update(JsonError::new(e, at)))
}

/// Which of the replay format's keys a line has. The values of the others are skipped
/// unread (at any depth, in bounded memory).
#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(default, deserialize_with = "present")]
    comment: bool,
    #[serde(default, borrow, deserialize_with = "raw")]
    advance_clock_s: Option<&'a RawValue>,
    #[serde(default, borrow, deserialize_with = "raw")]
    parallel: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "present")]
    update_id: bool,
}

/// The key is there, whatever its value (`null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    IgnoredAny::deserialize(d).map(|_| true)
}

/// The key's value, unparsed (`null` included).
fn raw<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

/// `Ok` for a JSON object; for other JSON, what it is instead; for other text, why it
/// is not JSON. (serde would read an array of a struct's field values, in order, as the
/// struct.)
fn check_object(json: &str, at: usize) -> Result<(), LineError> {
    let found = match json.trim_start().as_bytes().first() {
        Some(b'{') => return Ok(()),
        Some(b'[') => "array",
        Some(b'"') => "string",
        Some(b'-' | b'0'..=b'9') => "number",
        Some(b't' | b'f') => "boolean",
        _ => "null",
    };
    serde_json::from_str::<IgnoredAny>(json).map_err(|e| LineError::json(e, at))?;
    Err(LineError::NotAnObject { found })
}

/// Replays `input` through `pipeline`, moving `clock` on `advance_clock_s` lines, with
/// the default [`Limits`].
///
/// A handler error is logged (as a bot's error handler would) and counted; a malformed
/// line is reported in the summary with its number; either way the replay goes on.
///
/// # Errors
/// Only an I/O error reading `input` (after which nothing more can be read).
pub async fn replay<S: SessionData>(
    pipeline: &Pipeline<S, TelegramUpdate>,
    clock: &ManualClock,
    input: impl BufRead,
) -> io::Result<ReplaySummary> {
    replay_with(pipeline, clock, input, Limits::default()).await
}

/// [`replay`] with your own [`Limits`].
///
/// # Errors
/// Only an I/O error reading `input` (after which nothing more can be read).
pub async fn replay_with<S: SessionData>(
    pipeline: &Pipeline<S, TelegramUpdate>,
    clock: &ManualClock,
    mut input: impl BufRead,
    limits: Limits,
) -> io::Result<ReplaySummary> {
    let mut summary = ReplaySummary::default();
    let mut buf = Vec::new();
    while let Some(read) = read_line(&mut input, &mut buf, limits.max_line_bytes)? {
        summary.lines += 1;
        let n = summary.lines;
        let text = match read {
            Read::TooLong => Err(LineError::TooLong {
                limit: limits.max_line_bytes,
            }),
            Read::Line => std::str::from_utf8(&buf).map_err(|e| LineError::NotUtf8 {
                column: e.valid_up_to() + 1,
            }),
        };
        let parsed = text.and_then(|text| Ok((text, Line::parse_parts(text)?)));
        let line = match parsed {
            Ok((_, Parts::Line(line))) => line,
            Ok((text, Parts::Parallel(items))) => {
                run_parallel(pipeline, text, items, n, &limits, &mut summary).await;
                continue;
            }
            Err(error) => {
                summary.bad(
                    &limits,
                    BadLine {
                        line: n,
                        item: None,
                        error,
                    },
                );
                continue;
            }
        };
        match line {
            Line::Comment => {}
            Line::AdvanceClock(s) => {
                clock.advance(Duration::from_secs(s));
                // Timeouts that fall due fire now, before the next line is read (a
                // deadline an earlier process stored too).
                if pipeline.has_timers() {
                    match pipeline.wake_due().await {
                        Ok(done) => summary.timers += done.timers,
                        Err(e) => log_failure(n, &e),
                    }
                }
            }
            Line::Update(u) => {
                summary.updates += 1;
                if let Err(e) = pipeline.handle(*u).await {
                    summary.failed_updates += 1;
                    log_failure(n, &e);
                }
            }
            // Read by `run_parallel` above.
            Line::Parallel(_) => {}
        }
    }
    Ok(summary)
}

/// Hands the items of a `parallel` batch (line `n`, whose text is `text`) to the
/// pipeline one by one, each in its own task, with at most
/// [`Limits::max_parallel_tasks`] unfinished at a time, and waits for all of them.
/// Handing them over in order joins each key's queue in order; then they run at once.
async fn run_parallel<S: SessionData>(
    pipeline: &Pipeline<S, TelegramUpdate>,
    text: &str,
    items: Vec<&RawValue>,
    n: usize,
    limits: &Limits,
    summary: &mut ReplaySummary,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, item) in items.into_iter().enumerate() {
        let update = match parse_item(text, item) {
            Ok(u) => u,
            Err(error) => {
                summary.bad(
                    limits,
                    BadLine {
                        line: n,
                        item: Some(i + 1),
                        error,
                    },
                );
                continue;
            }
        };
        while tasks.len() >= limits.max_parallel_tasks {
            if let Some(done) = tasks.join_next().await {
                tally_task(n, done, summary);
            }
        }
        summary.updates += 1;
        tasks.spawn(pipeline.handle(update));
    }
    while let Some(done) = tasks.join_next().await {
        tally_task(n, done, summary);
    }
}

/// Counts one finished update of a `parallel` batch.
fn tally_task(
    n: usize,
    done: std::result::Result<Result<crate::pipeline::Dispatch>, tokio::task::JoinError>,
    summary: &mut ReplaySummary,
) {
    match done {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            summary.failed_updates += 1;
            log_failure(n, &e);
        }
        Err(e) => {
            summary.failed_updates += 1;
            tracing::error!(target: "stagecraft::replay", line = n, error = %e, "update task failed");
        }
    }
}

fn log_failure(line: usize, e: &crate::Error) {
    tracing::error!(target: "stagecraft::replay", line, error = %error_chain(e), "update failed");
}

/// What [`read_line`] found.
enum Read {
    /// A line, in the buffer.
    Line,
    /// A line longer than the limit, skipped (the buffer is empty).
    TooLong,
}

/// Reads the next line (up to `\n`, which is not kept) into `buf`, keeping at most
/// `limit` bytes in memory: a longer line is read to its end and dropped. `None` at the
/// end of the input.
fn read_line(
    input: &mut impl BufRead,
    buf: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Option<Read>> {
    buf.clear();
    let mut too_long = false;
    let mut started = false;
    loop {
        let chunk = match input.fill_buf() {
            Ok(chunk) => chunk,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if chunk.is_empty() {
            return Ok(started.then_some(if too_long { Read::TooLong } else { Read::Line }));
        }
        started = true;
        let newline = chunk.iter().position(|&b| b == b'\n');
        let part = &chunk[..newline.unwrap_or(chunk.len())];
        if !too_long {
            if buf.len().saturating_add(part.len()) > limit {
                too_long = true;
                buf.clear();
                buf.shrink_to(limit.min(64 * 1024));
            } else {
                buf.extend_from_slice(part);
            }
        }
        let used = newline.map_or(chunk.len(), |i| i + 1);
        input.consume(used);
        if newline.is_some() {
            return Ok(Some(if too_long { Read::TooLong } else { Read::Line }));
        }
    }
}

pub use crate::error::error_chain;

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(input: &[u8], limit: usize) -> Vec<Option<Vec<u8>>> {
        let mut input = io::BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while let Some(read) = read_line(&mut input, &mut buf, limit).unwrap() {
            out.push(match read {
                Read::Line => Some(buf.clone()),
                Read::TooLong => None,
            });
            assert!(buf.len() <= limit);
        }
        out
    }

    #[test]
    fn lines_are_read_within_the_limit() {
        let got = lines(b"ab\n\nabcdefgh\nabc\r\nxyz", 4);
        assert_eq!(
            got,
            [
                Some(b"ab".to_vec()),
                Some(Vec::new()),
                None,
                Some(b"abc\r".to_vec()),
                Some(b"xyz".to_vec()),
            ]
        );
        assert_eq!(lines(b"", 4), Vec::<Option<Vec<u8>>>::new());
        assert_eq!(lines(b"\n", 4), [Some(Vec::new())]);
        assert_eq!(lines(b"abcde", 4), [None]);
        assert_eq!(lines(b"abcd", 4), [Some(b"abcd".to_vec())]);
    }

    #[test]
    fn each_kind_of_bad_line_has_its_error() {
        let cases: &[(&str, &str)] = &[
            ("nope", "not JSON: expected ident at column 2"),
            ("  nope", "not JSON: expected ident at column 4"),
            ("[1]", "a JSON array, not an object"),
            ("\"s\"", "a JSON string, not an object"),
            ("7", "a JSON number, not an object"),
            ("null", "a JSON null, not an object"),
            ("true", "a JSON boolean, not an object"),
            (
                "{\"kind\":1}",
                "not an update, parallel, advance_clock_s or comment line",
            ),
            (
                "{\"advance_clock_s\":-1}",
                "advance_clock_s must be a whole number of seconds, 0 or more",
            ),
            (
                "{\"advance_clock_s\":1.5}",
                "advance_clock_s must be a whole number of seconds, 0 or more",
            ),
            ("{\"parallel\":{}}", "parallel must be an array of updates"),
            (
                "{\"update_id\":\"x\"}",
                "not a Telegram update: invalid type: string \"x\", expected i64 at column 16",
            ),
            (
                "{\"parallel\":[{\"update_id\":1},{\"update_id\":[]}]}",
                "parallel item 2: not a Telegram update: invalid type: sequence, expected i64 at column 42",
            ),
            (
                "{\"parallel\":[{\"update_id\":1},[1,null,null,null,null,null,null,null,null,null,null]]}",
                "parallel item 2: a JSON array, not an object",
            ),
        ];
        for (line, want) in cases {
            let err = Line::parse(line).unwrap_err();
            assert_eq!(error_chain(&err), *want, "{line}");
        }
        // Nesting is skipped at any depth where nothing is read, and reported where it is.
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            Line::parse(&deep),
            Err(LineError::NotAnObject { found: "array" })
        ));
        let deep_comment = format!("{{\"comment\":{deep}}}");
        assert_eq!(Line::parse(&deep_comment).unwrap(), Line::Comment);
        let unclosed = "[".repeat(10_000);
        assert!(matches!(Line::parse(&unclosed), Err(LineError::Json(_))));
        assert!(matches!(
            Line::parse("{\"comment\":1,\"comment\":2}"),
            Err(LineError::Form(_))
        ));
        // The same update as `TelegramUpdate::from_json` reads, where a `Value` would
        // refuse the lone surrogate in a field stagecraft does not read.
        let odd = r#"{"update_id":3,"message":{"chat":{"id":1,"type":"p\ud800"},"text":"x"}}"#;
        assert_eq!(
            Line::parse(odd).unwrap(),
            Line::Update(Box::new(TelegramUpdate::from_json(odd).unwrap()))
        );
        assert_eq!(Line::parse(" \t ").unwrap(), Line::Comment);
        assert_eq!(
            Line::parse("{\"advance_clock_s\":18446744073709551615}").unwrap(),
            Line::AdvanceClock(u64::MAX)
        );
    }
}

//! The fuzz targets' bodies, shared by `cargo fuzz` (`fuzz_targets/*.rs`) and the plain
//! test harness `tests/fuzz_corpus.rs`, which runs them over `fuzz/corpus/` and
//! deterministic mutations of it on every `cargo test`.
//!
//! The rule each target checks: hostile bytes get an error, never a panic and never an
//! unbounded allocation; and what stagecraft itself writes, it can read back.
//!
//! Every target takes `&[u8]` and panics (with a message) when the rule is broken.

#![allow(clippy::missing_panics_doc, unreachable_pub, dead_code)]

#[path = "../../examples/shared/demo_bot.rs"]
mod demo_bot;

use std::cell::RefCell;

use serde_json::{Value, json};
use stagecraft::Pipeline;
use stagecraft::clock::ManualClock;
use stagecraft::error::error_chain;
use stagecraft::replay::{Limits, Line, REPLAY_EPOCH_S, replay_with};
use stagecraft::session::{DecodePolicy, KeyStrategy};
use stagecraft::store::{ListFilter, MemoryStore, SessionStore};
use stagecraft::transport::RecordingTransport;
use stagecraft::update::{TelegramUpdate, Update};

/// A fuzz target: panics when the rule is broken.
pub type Target = fn(&[u8]);

/// The targets, by name (the names of `fuzz_targets/*.rs` and `fuzz/corpus/*`).
pub const TARGETS: [(&str, Target); 5] = [
    ("record_bytes", record_bytes),
    ("record_json", record_json),
    ("telegram_update", telegram_update),
    ("replay", replay),
    ("key_strategies", key_strategies),
];

/// The longest replay line the replay target reads (so one input stays small).
pub const REPLAY_MAX_LINE: usize = 64 * 1024;

thread_local! {
    static RUNTIME: RefCell<Option<tokio::runtime::Runtime>> = const { RefCell::new(None) };
}

/// Runs `f` to completion on this thread's current-thread runtime.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    RUNTIME.with(|rt| {
        let mut rt = rt.borrow_mut();
        let rt = rt.get_or_insert_with(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .expect("a runtime")
        });
        rt.block_on(f)
    })
}

/// The reference bot on a fresh memory store.
fn demo(
    store: &MemoryStore,
    clock: &ManualClock,
    key: KeyStrategy<TelegramUpdate>,
    decode: DecodePolicy,
) -> Pipeline<demo_bot::Demo> {
    demo_bot::build(
        Pipeline::<demo_bot::Demo>::builder()
            .store(store.clone())
            .clock(clock.clone())
            .transport(RecordingTransport::new())
            .key(key)
            .decode_policy(decode),
    )
    .expect("the demo bot builds")
}

/// A message from user 7 in chat 7 (the key `7:7`).
fn message(id: i64, text: &str) -> TelegramUpdate {
    TelegramUpdate::from_value(json!({
        "update_id": id,
        "message": {"message_id": id, "chat": {"id": 7}, "from": {"id": 7}, "text": text}
    }))
    .expect("a message")
}

/// What exercises each scene of the demo bot from wherever a stored record put it.
const TEXTS: [&str; 9] = [
    "/where", "30", "yes", "back", "jump", "/whoami", "/cancel", "/signup", "hello",
];

/// `bytes` stored as the session `7:7`, then updates of that session through the demo
/// bot. A record that does not decode is an error that leaves it untouched (or, with
/// `DecodePolicy::Reset`, a fresh session); a record the bot wrote reads back.
fn load_stored(bytes: &[u8], pick: u8) {
    let _ = stagecraft::record::inspect(bytes);
    for decode in [DecodePolicy::Fail, DecodePolicy::Reset] {
        let store = MemoryStore::new();
        let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
        block_on(async {
            store
                .save("7:7", bytes, None)
                .await
                .expect("a new key saves");
            let bot = demo(&store, &clock, KeyStrategy::UserInChat, decode);
            let first = TEXTS[usize::from(pick) % TEXTS.len()];
            for (i, text) in std::iter::once(first).chain(TEXTS).enumerate() {
                let before = store.load("7:7").await.expect("memory loads");
                let result = bot.handle(message(i as i64, text)).await;
                let after = store.load("7:7").await.expect("memory loads");
                // Any other error (e.g. a stored frame whose state is of another type
                // than its scene expects) is an error, which is fine.
                if let Err(stagecraft::Error::Decode { key, .. }) = result {
                    assert_eq!(key, "7:7");
                    assert_eq!(decode, DecodePolicy::Fail, "Reset decodes afresh");
                    assert_eq!(before, after, "an undecodable record stays as it was");
                    return;
                }
                if let Some(after) = after {
                    if Some(&after) != before.as_ref() {
                        // Written by the pipeline: readable by operators and by itself.
                        let info = stagecraft::record::inspect(&after.bytes);
                        assert!(
                            info.is_ok(),
                            "the pipeline wrote a record inspect cannot read: {:?}: {}",
                            String::from_utf8_lossy(&after.bytes),
                            error_chain(&info.unwrap_err())
                        );
                    }
                }
            }
            clock.advance(std::time::Duration::from_secs(u64::MAX));
            let _ = bot.handle(message(99, "/where")).await;
        });
    }
}

/// Arbitrary bytes as a stored session record: `record::inspect` and a pipeline
/// loading it through the memory store.
pub fn record_bytes(data: &[u8]) {
    let pick = data.first().copied().unwrap_or_default();
    load_stored(data, pick);
}

/// Arbitrary JSON shaped like session records of this and other schema versions
/// (unknown versions, missing or mistyped fields, odd cursors and times, unknown scene
/// ids and state tags), built from the bytes.
pub fn record_json(data: &[u8]) {
    let mut g = Gen::new(data);
    let record = g.record();
    let bytes = serde_json::to_vec(&record).expect("a Value encodes");
    load_stored(&bytes, g.byte());
}

/// Arbitrary bytes as Bot API `Update` JSON: an error or an update whose accessors and
/// keys all answer.
pub fn telegram_update(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let Ok(update) = TelegramUpdate::from_json(&text) else {
        return;
    };
    check_update(&update);
    // The replay reads an update line as `from_json` does.
    match Line::parse(&text) {
        Ok(Line::Update(u)) => assert_eq!(*u, update, "{text}"),
        other => {
            // Only a key of another kind of line makes it one.
            let other_kind = ["comment", "parallel", "advance_clock_s", "\\"]
                .iter()
                .any(|k| text.contains(k));
            assert!(other_kind, "{text}: {other:?}");
        }
    }
}

/// Every accessor of `update`, and every built-in key strategy against its ids.
fn check_update(update: &TelegramUpdate) {
    let _ = (update.update_id(), update.kind(), update.text());
    let _ = (update.callback_data(), update.callback_id());
    let _ = update.message_text();
    if let Some(cmd) = update.command() {
        let text = update.message_text().unwrap_or_default();
        assert!(
            text.contains(cmd.name) && text.contains(cmd.args),
            "{text:?}"
        );
    }
    let (user, chat, thread) = (update.sender_id(), update.chat_id(), update.thread_id());
    let keys = [
        (
            KeyStrategy::UserInChat,
            user.zip(chat).map(|(u, c)| format!("{u}:{c}")),
        ),
        (KeyStrategy::Chat, chat.map(|c| c.to_string())),
        (KeyStrategy::User, user.map(|u| u.to_string())),
        (
            KeyStrategy::ChatThread,
            chat.map(|c| match thread {
                Some(t) => format!("{c}:{t}"),
                None => c.to_string(),
            }),
        ),
    ];
    for (strategy, want) in keys {
        assert_eq!(strategy.key(update), want, "{strategy:?}");
    }
}

/// Arbitrary bytes as a replay file through the demo bot: a summary whose counts add
/// up, each bad line named by its number.
pub fn replay(data: &[u8]) {
    let store = MemoryStore::new();
    let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
    let bot = demo(&store, &clock, KeyStrategy::UserInChat, DecodePolicy::Fail);
    let limits = Limits::default()
        .max_line_bytes(REPLAY_MAX_LINE)
        .max_kept_bad_lines(64);
    let summary = block_on(replay_with(&bot, &clock, data, limits)).expect("a slice reads");
    let newlines = data.iter().filter(|&&b| b == b'\n').count();
    let lines = newlines + usize::from(!data.is_empty() && !data.ends_with(b"\n"));
    assert_eq!(summary.lines, lines, "lines read");
    assert!(summary.failed_updates <= summary.updates);
    assert!(summary.bad_lines.len() <= summary.bad_lines_total);
    assert!(summary.bad_lines.len() <= 64);
    let mut last = 0;
    for bad in &summary.bad_lines {
        assert!(bad.line >= 1 && bad.line <= lines, "{bad}");
        assert!(bad.line >= last, "bad lines in order");
        last = bad.line;
        let chain = error_chain(bad);
        let place = bad.to_string();
        assert!(chain.starts_with(&format!("{place}: ")), "{chain}");
        assert!(chain.len() > place.len() + 2, "{chain}");
    }
}

/// An update with odd ids (`i64::MIN`, `i64::MAX`, 0, -1, missing), of each kind,
/// under each key strategy and a custom key of arbitrary text: the key is what the ids
/// say, and the pipeline stores the session under it (or none without one).
pub fn key_strategies(data: &[u8]) {
    let mut g = Gen::new(data);
    let value = g.update();
    let update = TelegramUpdate::from_value(value.clone())
        .unwrap_or_else(|e| panic!("a well-formed update: {value}: {}", error_chain(&e)));
    check_update(&update);
    let custom = g.string();
    let strategies = [
        KeyStrategy::UserInChat,
        KeyStrategy::Chat,
        KeyStrategy::User,
        KeyStrategy::ChatThread,
        KeyStrategy::custom(move |u: &TelegramUpdate| u.message.as_ref().map(|_| custom.clone())),
    ];
    for strategy in strategies {
        let key = strategy.key(&update);
        let store = MemoryStore::new();
        let clock = ManualClock::at_secs(REPLAY_EPOCH_S);
        let bot = demo(&store, &clock, strategy, DecodePolicy::Fail);
        block_on(async {
            let result = bot.handle(update.clone()).await;
            assert!(
                result.is_ok(),
                "{value}: {}",
                error_chain(&result.unwrap_err())
            );
            let stored = store
                .list(&ListFilter::default())
                .await
                .expect("memory lists");
            // The counter changes every session it sees: its key is stored.
            assert_eq!(stored, key.iter().cloned().collect::<Vec<_>>(), "{value}");
        });
    }
}

/// Structured values from fuzz bytes (zeros once the bytes run out).
#[derive(Debug)]
pub struct Gen<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Gen<'a> {
    /// A generator reading `data`.
    #[must_use]
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    /// The next byte.
    pub fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or_default();
        self.pos = self.pos.saturating_add(1);
        b
    }

    fn below(&mut self, n: u8) -> u8 {
        self.byte() % n
    }

    fn chance(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    fn bytes8(&mut self) -> [u8; 8] {
        std::array::from_fn(|_| self.byte())
    }

    /// An integer, often one at an edge.
    pub fn int(&mut self) -> i64 {
        match self.below(10) {
            0 => 0,
            1 => -1,
            2 => 1,
            3 => i64::MIN,
            4 => i64::MAX,
            5 => REPLAY_EPOCH_S,
            6 => i64::from(self.byte()) - 2,
            7 => i64::MAX - i64::from(self.byte()),
            8 => i64::MIN + i64::from(self.byte()),
            _ => i64::from_le_bytes(self.bytes8()),
        }
    }

    /// A JSON number (or something in its place), often one no field expects.
    fn number(&mut self) -> Value {
        match self.below(8) {
            0 => json!(u64::MAX),
            1 => json!(1.5),
            2 => json!(-0.0),
            3 => json!("7"),
            4 => Value::Null,
            5 => json!(1e300),
            _ => json!(self.int()),
        }
    }

    /// A short string, often a scene id, a state tag or a command of the demo bot.
    pub fn string(&mut self) -> String {
        const WORDS: [&str; 16] = [
            "signup",
            "profile",
            "poll",
            "nope",
            "",
            "demo.signup.v1",
            "json",
            "unknown.v9",
            "/start",
            "/where",
            "yes",
            "back",
            "jump",
            "7:7",
            "\u{0}",
            "ünï✓",
        ];
        if self.chance() {
            return WORDS[usize::from(self.below(16))].to_owned();
        }
        let len = usize::from(self.below(24));
        let bytes: Vec<u8> = (0..len).map(|_| self.byte()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Any JSON value, nested at most `depth` deep.
    pub fn any(&mut self, depth: u8) -> Value {
        match self.below(if depth == 0 { 4 } else { 6 }) {
            0 => Value::Null,
            1 => Value::Bool(self.chance()),
            2 => self.number(),
            3 => Value::String(self.string()),
            4 => (0..self.below(4)).map(|_| self.any(depth - 1)).collect(),
            _ => {
                let mut map = serde_json::Map::new();
                for _ in 0..self.below(4) {
                    let k = self.string();
                    let v = self.any(depth - 1);
                    map.insert(k, v);
                }
                Value::Object(map)
            }
        }
    }

    /// A field of `map` set to `value`, or left out, or mistyped.
    fn field(&mut self, map: &mut serde_json::Map<String, Value>, name: &str, value: Value) {
        match self.below(8) {
            0 => {}
            1 => {
                let odd = self.any(1);
                map.insert(name.to_owned(), odd);
            }
            _ => {
                map.insert(name.to_owned(), value);
            }
        }
    }

    /// A session record of the demo bot, of this or another schema version.
    pub fn record(&mut self) -> Value {
        let mut record = serde_json::Map::new();
        let v = match self.below(6) {
            0 => json!(0),
            1 | 2 => json!(stagecraft::record::SCHEMA_VERSION),
            3 => json!(stagecraft::record::SCHEMA_VERSION + 1),
            4 => json!(u32::MAX),
            _ => self.number(),
        };
        self.field(&mut record, "v", v);
        let data = self.data_value();
        self.field(&mut record, "data", data);
        let scenes: Vec<Value> = (0..self.below(4)).map(|_| self.frame()).collect();
        self.field(&mut record, "scenes", Value::Array(scenes));
        if self.below(4) == 0 {
            // A field of a later version.
            let k = self.string();
            let v = self.any(2);
            record.insert(k, v);
        }
        Value::Object(record)
    }

    fn data_value(&mut self) -> Value {
        let mut data = serde_json::Map::new();
        let updates = self.number();
        self.field(&mut data, "updates", updates);
        if self.chance() {
            let mut profile = serde_json::Map::new();
            let name = Value::String(self.string());
            self.field(&mut profile, "name", name);
            let age = self.number();
            self.field(&mut profile, "age", age);
            data.insert("profile".to_owned(), Value::Object(profile));
        }
        Value::Object(data)
    }

    fn frame(&mut self) -> Value {
        let mut frame = serde_json::Map::new();
        let scene = Value::String(self.string());
        self.field(&mut frame, "scene", scene);
        let cursor = self.number();
        self.field(&mut frame, "cursor", cursor);
        let entered = self.number();
        self.field(&mut frame, "entered_at", entered);
        let expires = self.number();
        self.field(&mut frame, "expires", expires);
        let state = match self.below(6) {
            0 => {
                let name = Value::String(self.string());
                let age = self.number();
                json!({"demo.signup.v1": {"name": name, "age": age}})
            }
            1 => json!({"json": self.any(2)}),
            2 => json!({"json": {}}),
            3 => {
                let tag = self.string();
                let inner = self.any(1);
                json!({ tag: inner })
            }
            _ => self.any(2),
        };
        self.field(&mut frame, "state", state);
        Value::Object(frame)
    }

    fn id(&mut self) -> Option<i64> {
        if self.below(5) == 0 {
            None
        } else {
            Some(self.int())
        }
    }

    /// A well-formed Bot API update of some kind, with odd ids.
    pub fn update(&mut self) -> Value {
        let update_id = self.int();
        let chat = self.int();
        let user = self.id();
        let thread = self.id();
        let text = self.string();
        let mut message = json!({"message_id": self.int(), "chat": {"id": chat}, "text": text});
        if let Some(u) = user {
            message["from"] = json!({"id": u});
        }
        if let Some(t) = thread {
            message["message_thread_id"] = json!(t);
        }
        let user = user.unwrap_or_default();
        let kind = self.below(9);
        let mut update = json!({"update_id": update_id});
        match kind {
            0 => update["message"] = message,
            1 => update["edited_message"] = message,
            2 => update["channel_post"] = message,
            3 => update["edited_channel_post"] = message,
            4 => {
                update["callback_query"] = json!({"id": self.string(), "from": {"id": user}, "message": message, "data": self.string()});
            }
            5 => update["callback_query"] = json!({"id": "q", "from": {"id": user}}),
            6 => update["inline_query"] = json!({"from": {"id": user}}),
            7 => update["chat_member"] = json!({"chat": {"id": chat}, "from": {"id": user}}),
            _ => {}
        }
        update
    }
}

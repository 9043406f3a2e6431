//! The stored shape of a session and nothing else: the envelope, the scene stack's
//! [frames](Frame), scene state ([`SceneState`], tagged by `typetag`), and [`inspect`],
//! which reads a record without the bot's types.
//!
//! A record is stored through the configured [`Codec`] as
//!
//! ```json
//! {"v": 1, "data": S, "scenes": [frame, ...]}
//! ```
//!
//! `v` is the envelope's schema version ([`SCHEMA_VERSION`]); a record without it is a
//! version-0 record of the same shape, as written before the field existed. `scenes` is
//! left out when the stack is empty. The envelope also holds the session cycle's
//! bookkeeping, each a field of its own beside `data` and `scenes` and left out when
//! empty, so operator tools keep reading it without the bot's Rust types:
//!
//! - `seen`: the ids of the key's most recent updates, oldest first, so that an update
//!   delivered twice is recognised (de-duplication);
//! - `sent`: the ids of messages the bot sent with a name to find them by
//!   (`{"question": 1234}`, see `Reply::remember`), written once their delivery is
//!   confirmed;
//! - `outbox`: the replies of the last committed step not yet confirmed delivered, as
//!   transcript lines (`{"method":"sendMessage",...}`); always the last field, so the
//!   record without it is the bytes before it.
//!
//! ```json
//! {"v": 1, "data": S, "scenes": [frame, ...], "seen": [41, 42], "sent": {"q": 7}, "outbox": [call, ...]}
//! ```
//!
//! This module sits low in the crate's layers: it knows the store's [`Codec`] and
//! nothing above it.

use std::any::Any;
use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{BoxError, Error, Result};
use crate::store::Codec;
use crate::transport::Outgoing;

/// The envelope's schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// How an envelope of [`SCHEMA_VERSION`] starts (checked against it by a test).
const ENVELOPE_HEAD: &[u8] = b"{\"v\":1,\"data\":";

/// Bounds on the bot's session data type: anything serde can write and read back,
/// implemented for every such type. `Default` gives a new user's session.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use stagecraft::prelude::*;
/// use stagecraft::testing::TestBot;
///
/// #[derive(Debug, Default, Serialize, Deserialize)]
/// struct Profile {
///     name: Option<String>,
///     #[serde(default)] // added later: records written before it still load
///     visits: u32,
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bot = TestBot::<Profile>::new(|b| {
///     b.on_text(|cx: Cx<Profile>| async move {
///         let visits = cx.session_mut(|p| { p.visits += 1; p.visits })?;
///         cx.reply(format!("visit {visits}"));
///         Ok(Outcome::Handled)
///     })
///     .build()
/// });
/// bot.send("hi").await.unwrap();
/// assert_eq!(bot.send("hi again").await.unwrap(), ["visit 2"]);
/// # });
/// ```
pub trait SessionData: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> SessionData for T {}

/// Type-erasure helpers for [`SceneState`]; implemented for every `'static` type.
/// An implementation detail of `SceneState` (its supertrait), not meant to be called.
#[doc(hidden)]
pub trait AsAny: Any {
    /// `&self` as `&dyn Any`.
    fn as_any(&self) -> &dyn Any;
    /// `&mut self` as `&mut dyn Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The Rust type name, for error messages.
    fn type_name(&self) -> &'static str;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// A scene's own typed state, stored in its frame.
///
/// Implement it with `typetag` (add `typetag = "0.2"` to your `Cargo.toml`) and an
/// explicit, stable name, so that renaming the Rust type does not orphan stored
/// conversations:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use stagecraft::scene::SceneState;
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Signup { name: String, age: u8 }
///
/// #[typetag::serde(name = "signup.v1")]
/// impl SceneState for Signup {}
/// ```
///
/// Keep implementations non-generic (typetag cannot deserialize generic impls). For
/// quick scripts, [`JsonState`] holds untyped JSON.
#[typetag::serde]
pub trait SceneState: AsAny + fmt::Debug + Send + Sync {}

/// Untyped JSON scene state, for quick scripts (and the default state of scenes that
/// declare none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonState(pub serde_json::Value);

#[typetag::serde(name = "json")]
impl SceneState for JsonState {}

impl JsonState {
    /// An empty JSON object.
    #[must_use]
    pub fn object() -> Self {
        Self(serde_json::Value::Object(serde_json::Map::new()))
    }
}

/// One entry of the scene stack, as stored in the session record.
///
/// `scene`, `cursor`, `entered_at` and `expires` are plain fields, readable from the
/// stored JSON without the bot's types; `state` is the scene's typed state, tagged with
/// its stable `typetag` name.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Frame {
    /// The scene id.
    pub scene: String,
    /// The wizard step; `None` for a plain scene. May be out of range (Telegraf lets
    /// `next()` run past the last step; the next update then leaves the scene).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    /// When the scene was (re)entered, Unix seconds.
    pub entered_at: i64,
    /// When the scene expires, Unix seconds: still active while `now <= expires`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The frame's armed timeout, if any (see
    /// [`SceneBuilder::timeout`](crate::scene::SceneBuilder::timeout)): when it falls due
    /// and where its hook replies. (Boxed: most frames have none, and a frame is moved
    /// around on every update.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer: Option<Box<Timer>>,
    /// The scene's state. A state this build could not decode (an unregistered tag, a
    /// changed type) is an [`Undecodable`], written back as it was read.
    #[serde(serialize_with = "serialize_state")]
    pub state: Box<dyn SceneState>,
}

/// A frame's armed timer: when it falls due (Unix seconds of the pipeline's clock) and
/// where the hook that runs then replies (the chat, forum topic and user of the last
/// update that armed it). Only the active (top) frame is ever armed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Timer {
    /// When it falls due, Unix seconds.
    pub at: i64,
    /// The chat the hook replies to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chat: Option<i64>,
    /// The forum topic (message thread) it replies in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread: Option<i64>,
    /// The user whose silence it measures.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<i64>,
}

impl Timer {
    /// A timer due at `at` (Unix seconds), replying to `chat` (in `thread`) for `user`.
    #[must_use]
    pub fn new(at: i64, chat: Option<i64>, thread: Option<i64>, user: Option<i64>) -> Self {
        Self {
            at,
            chat,
            thread,
            user,
        }
    }
}

/// When the earliest armed timer of `scenes` falls due.
pub(crate) fn wake_of(scenes: &[Frame]) -> Option<i64> {
    scenes
        .iter()
        .filter_map(|f| f.timer.as_ref().map(|t| t.at))
        .min()
}

/// What a stored record holds that is due without an update, read without the bot's
/// types: whether it has replies in its outbox, and its earliest armed timer.
///
/// # Errors
/// [`Error::Decode`] (with an empty key) when the bytes are not a record.
pub(crate) fn peek_due(bytes: &[u8]) -> Result<(bool, Option<Timer>)> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        outbox: Vec<serde::de::IgnoredAny>,
        #[serde(default)]
        scenes: Vec<PeekFrame>,
    }
    #[derive(Deserialize)]
    struct PeekFrame {
        #[serde(default)]
        timer: Option<Timer>,
    }
    let peek: Peek = Codec::decode(bytes).map_err(|e| Error::Decode {
        key: String::new(),
        source: e,
    })?;
    let timer = peek
        .scenes
        .iter()
        .filter_map(|f| f.timer)
        .min_by_key(|t| t.at);
    Ok((!peek.outbox.is_empty(), timer))
}

/// A frame's state as stored: its typetag form, or the original JSON of an
/// [`Undecodable`] one.
// `serialize_with` hands over a reference to the field, a `Box`.
#[allow(clippy::borrowed_box)]
fn serialize_state<Ser: serde::Serializer>(
    state: &Box<dyn SceneState>,
    ser: Ser,
) -> std::result::Result<Ser::Ok, Ser::Error> {
    match (**state).as_any().downcast_ref::<Undecodable>() {
        Some(u) => u.raw.serialize(ser),
        None => state.serialize(ser),
    }
}

/// The state of a stored frame that this build could not decode: the scene's state tag
/// is not registered (a deploy renamed or removed the type, or a newer replica wrote
/// it) and no upgrade turned it into one that is, or its fields do not fit the type.
///
/// It keeps the stored JSON and is written back as it was read, so a rollback, or a
/// replica that knows the type, still finds it. When such a frame becomes the active
/// scene, the stage applies the scene's [`Recovery`](crate::scene::Recovery) before any
/// handler sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Undecodable {
    /// The stored state, as read (`{"tag": {...}}`).
    pub raw: serde_json::Value,
    /// Why it could not be decoded.
    pub error: String,
}

#[typetag::serde(name = "stagecraft.undecodable")]
impl SceneState for Undecodable {}

impl Frame {
    /// Whether this frame's state could not be decoded (see [`Undecodable`]).
    #[must_use]
    pub fn is_undecodable(&self) -> bool {
        (*self.state).as_any().is::<Undecodable>()
    }
}

impl Frame {
    /// A frame of scene `scene` entered at `entered_at` (Unix seconds), with `state`.
    #[must_use]
    pub fn new(scene: impl Into<String>, entered_at: i64, state: Box<dyn SceneState>) -> Self {
        Self {
            scene: scene.into(),
            cursor: None,
            entered_at,
            expires: None,
            timer: None,
            state,
        }
    }

    /// Has this frame expired at `now_s`?
    #[must_use]
    pub fn is_expired(&self, now_s: i64) -> bool {
        self.expires.is_some_and(|e| e < now_s)
    }
}

/// The stored shape of a session, borrowed for encoding.
#[derive(Serialize)]
pub(crate) struct RecordRef<'a, S> {
    pub(crate) v: u32,
    pub(crate) data: &'a S,
    #[serde(skip_serializing_if = "<[Frame]>::is_empty")]
    pub(crate) scenes: &'a [Frame],
    #[serde(skip_serializing_if = "<[serde_json::Value]>::is_empty")]
    pub(crate) lost: &'a [serde_json::Value],
    /// The version of the bot's data type (0: unversioned, left out).
    #[serde(skip_serializing_if = "is_zero")]
    pub(crate) dv: u32,
    /// Fields this build does not know, written back as they were read (JSON only).
    #[serde(skip)]
    pub(crate) extras: Option<&'a Extras>,
    /// When the session last changed, Unix seconds (0: not known, left out). After the
    /// session itself, so that it never makes an unchanged session look changed.
    #[serde(skip_serializing_if = "is_zero_i64")]
    pub(crate) at: i64,
    #[serde(skip_serializing_if = "<[i64]>::is_empty")]
    pub(crate) seen: &'a [i64],
    #[serde(skip_serializing_if = "SentIds::is_empty")]
    pub(crate) sent: &'a SentIds,
    #[serde(skip_serializing_if = "<[Outgoing]>::is_empty")]
    pub(crate) outbox: &'a [Outgoing],
}

/// The ids of messages the bot sent under a name ([`Reply::remember`]), oldest first:
/// the record's `sent` field, a JSON object (`{"question": 1234}`). At most
/// [`MAX_SENT`] names are kept; a name sent again takes its new id.
///
/// [`Reply::remember`]: crate::transport::Reply::remember
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SentIds(pub(crate) Vec<(String, i64)>);

/// The most message names a session keeps ([`SentIds`]); the oldest goes first.
pub(crate) const MAX_SENT: usize = 32;

static NO_SENT: SentIds = SentIds(Vec::new());

impl SentIds {
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The id kept under `name`.
    pub(crate) fn get(&self, name: &str) -> Option<i64> {
        self.0.iter().find(|(n, _)| n == name).map(|(_, id)| *id)
    }

    /// Keeps `id` under `name` (replacing an earlier one), dropping the oldest names
    /// beyond [`MAX_SENT`].
    pub(crate) fn insert(&mut self, name: &str, id: i64) {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_owned(), id));
        let skip = self.0.len().saturating_sub(MAX_SENT);
        self.0.drain(..skip);
    }

    /// Keeps every pair of `more`, in order.
    pub(crate) fn extend(&mut self, more: &[(String, i64)]) {
        for (name, id) in more {
            self.insert(name, *id);
        }
    }
}

impl Serialize for SentIds {
    fn serialize<Ser: serde::Serializer>(&self, s: Ser) -> Result<Ser::Ok, Ser::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (name, id) in &self.0 {
            map.serialize_entry(name, id)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for SentIds {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SentIds;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object of message ids")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<SentIds, A::Error> {
                let mut sent = SentIds::default();
                while let Some((name, id)) = map.next_entry::<String, i64>()? {
                    sent.insert(&name, id);
                }
                Ok(sent)
            }
        }
        d.deserialize_map(V)
    }
}

impl<'a, S: Serialize> RecordRef<'a, S> {
    /// The record of `data` and `scenes`, at this build's schema version.
    pub(crate) fn new(data: &'a S, scenes: &'a [Frame]) -> Self {
        Self {
            v: SCHEMA_VERSION,
            data,
            scenes,
            lost: &[],
            dv: 0,
            extras: None,
            at: 0,
            seen: &[],
            sent: &NO_SENT,
            outbox: &[],
        }
    }

    /// The record stamped with the time it is written (Unix seconds): when the session
    /// last changed, for operators (`stagecraft list`'s "last active").
    pub(crate) fn with_activity(mut self, at: i64) -> Self {
        self.at = at;
        self
    }

    /// The record with the ids of the messages sent under a name.
    pub(crate) fn with_sent(mut self, sent: &'a SentIds) -> Self {
        self.sent = sent;
        self
    }

    /// The record with the fields a read found that this build does not know.
    pub(crate) fn with_extras(mut self, extras: &'a Extras) -> Self {
        self.extras = (!extras.is_empty()).then_some(extras);
        self
    }

    /// The record with the version of the bot's data type (see [`DataVersions`]).
    pub(crate) fn with_data_version(mut self, dv: u32) -> Self {
        self.dv = dv;
        self
    }

    /// The record with copies of what could not be decoded when it was read (see
    /// [`Lost`]), kept for an operator to restore.
    pub(crate) fn with_lost(mut self, lost: &'a [serde_json::Value]) -> Self {
        self.lost = lost;
        self
    }

    /// The record with the cycle's bookkeeping: the recent update ids `seen` and the
    /// replies not yet confirmed delivered, `outbox`.
    pub(crate) fn with_ledger(mut self, seen: &'a [i64], outbox: &'a [Outgoing]) -> Self {
        self.seen = seen;
        self.outbox = outbox;
        self
    }

    /// Encodes the record, and (when it has an outbox) the same record without it: what
    /// is written once the transport confirmed the replies.
    pub(crate) fn encode_with_cleared(
        &self,
        codec: Codec,
        size_hint: usize,
    ) -> Result<Encoded, BoxError> {
        if codec != Codec::Json {
            let cleared = if self.outbox.is_empty() {
                None
            } else {
                Some(
                    Self {
                        outbox: &[],
                        ..*self
                    }
                    .encode(codec, size_hint)?,
                )
            };
            return Ok(Encoded {
                bytes: self.encode(codec, size_hint)?,
                cleared,
                core: None,
            });
        }
        let (bytes, core, at) = self.write_json(size_hint)?;
        // The outbox is the envelope's last field: the record without it is the bytes
        // before it, closed.
        let cleared = (!self.outbox.is_empty()).then(|| {
            let mut cleared = Vec::with_capacity(at + 1);
            cleared.extend_from_slice(&bytes[..at]);
            cleared.push(b'}');
            cleared
        });
        Ok(Encoded {
            bytes,
            cleared,
            core: Some(core),
        })
    }

    /// Encodes the record with `codec` into a buffer of `size_hint` bytes to start with.
    ///
    /// JSON is written here field by field, byte for byte what the derived
    /// `Serialize` writes through `serde_json`, without its per-field key escaping: the
    /// record's own field names are constants (measured: about 15% of the memory
    /// store's instructions per update, see docs/performance.md). The bot's data and
    /// each frame's state still go through `serde_json`.
    pub(crate) fn encode(&self, codec: Codec, size_hint: usize) -> Result<Vec<u8>, BoxError> {
        if codec != Codec::Json {
            return codec.encode_sized(self, size_hint);
        }
        Ok(self.write_json(size_hint)?.0)
    }

    /// The JSON encoding, where its bookkeeping starts (after `data` and `scenes`) and
    /// where its outbox field starts (its length before the closing brace when it has
    /// none).
    fn write_json(&self, size_hint: usize) -> Result<(Vec<u8>, usize, usize), BoxError> {
        let mut ints = itoa::Buffer::new();
        let mut buf = Vec::with_capacity(size_hint);
        if self.v == SCHEMA_VERSION {
            buf.extend_from_slice(ENVELOPE_HEAD);
        } else {
            buf.extend_from_slice(b"{\"v\":");
            buf.extend_from_slice(ints.format(self.v).as_bytes());
            buf.extend_from_slice(b",\"data\":");
        }
        serde_json::to_writer(&mut buf, self.data)?;
        if let Some(extras) = self.extras {
            // The data's fields its type does not know, put back into its object.
            if !extras.data.is_empty() && buf.last() == Some(&b'}') {
                buf.pop();
                let empty = buf.last() == Some(&b'{');
                for (i, (k, v)) in extras.data.iter().enumerate() {
                    if i > 0 || !empty {
                        buf.push(b',');
                    }
                    serde_json::to_writer(&mut buf, k)?;
                    buf.push(b':');
                    buf.extend_from_slice(v.get().as_bytes());
                }
                buf.push(b'}');
            }
        }
        if !self.scenes.is_empty() {
            buf.extend_from_slice(b",\"scenes\":[");
            for (i, f) in self.scenes.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(b"{\"scene\":");
                serde_json::to_writer(&mut buf, &f.scene)?;
                if let Some(c) = f.cursor {
                    buf.extend_from_slice(b",\"cursor\":");
                    buf.extend_from_slice(ints.format(c).as_bytes());
                }
                buf.extend_from_slice(b",\"entered_at\":");
                buf.extend_from_slice(ints.format(f.entered_at).as_bytes());
                if let Some(e) = f.expires {
                    buf.extend_from_slice(b",\"expires\":");
                    buf.extend_from_slice(ints.format(e).as_bytes());
                }
                if let Some(t) = &f.timer {
                    buf.extend_from_slice(b",\"timer\":");
                    serde_json::to_writer(&mut buf, t)?;
                }
                buf.extend_from_slice(b",\"state\":");
                match (*f.state).as_any().downcast_ref::<Undecodable>() {
                    Some(u) => serde_json::to_writer(&mut buf, &u.raw)?,
                    None => serde_json::to_writer(&mut buf, &f.state)?,
                }
                buf.push(b'}');
            }
            buf.push(b']');
        }
        if !self.lost.is_empty() {
            buf.extend_from_slice(b",\"lost\":");
            serde_json::to_writer(&mut buf, self.lost)?;
        }
        if self.dv != 0 {
            buf.extend_from_slice(b",\"dv\":");
            buf.extend_from_slice(ints.format(self.dv).as_bytes());
        }
        if let Some(extras) = self.extras {
            for (k, v) in &extras.envelope {
                buf.push(b',');
                serde_json::to_writer(&mut buf, k)?;
                buf.push(b':');
                buf.extend_from_slice(v.get().as_bytes());
            }
        }
        let core = buf.len();
        if self.at != 0 {
            buf.extend_from_slice(b",\"at\":");
            buf.extend_from_slice(ints.format(self.at).as_bytes());
        }
        if !self.seen.is_empty() {
            buf.extend_from_slice(b",\"seen\":[");
            for (i, id) in self.seen.iter().enumerate() {
                if i > 0 {
                    buf.push(b',');
                }
                buf.extend_from_slice(ints.format(*id).as_bytes());
            }
            buf.push(b']');
        }
        if !self.sent.is_empty() {
            buf.extend_from_slice(b",\"sent\":");
            serde_json::to_writer(&mut buf, self.sent)?;
        }
        let outbox_at = buf.len();
        if !self.outbox.is_empty() {
            buf.extend_from_slice(b",\"outbox\":");
            serde_json::to_writer(&mut buf, self.outbox)?;
        }
        buf.push(b'}');
        Ok((buf, core, outbox_at))
    }
}

/// An encoded record (see [`RecordRef::encode_with_cleared`]).
pub(crate) struct Encoded {
    pub(crate) bytes: Vec<u8>,
    /// The record without its outbox, when it has one.
    pub(crate) cleared: Option<Vec<u8>>,
    /// JSON: how many leading bytes hold the session itself (`data` and `scenes`).
    core: Option<usize>,
}

impl Encoded {
    /// Whether `stored` holds the same session (data and scenes) as this encoding,
    /// whatever bookkeeping either carries.
    pub(crate) fn same_session_as(&self, stored: &[u8]) -> bool {
        let Some(core) = self.core else {
            return stored == self.bytes;
        };
        let head = &self.bytes[..core];
        stored.starts_with(head) && {
            let rest = &stored[core..];
            rest == b"}"
                || rest.starts_with(b",\"at\":")
                || rest.starts_with(b",\"seen\":")
                || rest.starts_with(b",\"sent\":")
                || rest.starts_with(b",\"outbox\":")
        }
    }
}

/// The stored shape of a session, owned for decoding.
#[derive(Deserialize)]
pub(crate) struct RecordOwned<S> {
    /// The schema version the record was written with (0: before the field existed).
    #[serde(default)]
    #[allow(dead_code)] // read by the upgrades that later schema versions bring
    pub(crate) v: u32,
    pub(crate) data: S,
    #[serde(default)]
    pub(crate) scenes: Vec<Frame>,
    /// Copies of what could not be decoded when the record was read before.
    #[serde(default)]
    pub(crate) lost: Vec<serde_json::Value>,
    /// The version of the bot's data type it was written with.
    #[serde(default)]
    pub(crate) dv: u32,
    /// The ids of the key's recent updates, oldest first (de-duplication).
    #[serde(default)]
    pub(crate) seen: Vec<i64>,
    /// The ids of messages sent under a name.
    #[serde(default)]
    pub(crate) sent: SentIds,
    /// Replies committed with the session and not yet confirmed delivered.
    #[serde(default)]
    pub(crate) outbox: Vec<Outgoing>,
}

impl<S: SessionData> RecordOwned<S> {
    /// Decodes a stored record (the codec is detected from the bytes).
    ///
    /// # Errors
    /// [`Error::Decode`] naming `key` when the bytes are not a record of `S`.
    pub(crate) fn decode(key: &str, bytes: &[u8]) -> Result<Self> {
        Codec::decode::<Self>(bytes).map_err(|e| Error::Decode {
            key: key.to_owned(),
            source: e,
        })
    }
}

/// Upgrades of stored scene state, as the stage registered them
/// ([`SceneBuilder::upgrade`](crate::scene::SceneBuilder::upgrade)): from a tag this
/// build no longer registers to the next one.
pub(crate) trait StateUpgrades: Send + Sync {
    /// The state `inner` stored under `tag` in a frame of `scene`, upgraded one step:
    /// its new tag and JSON. `None` when the scene has no upgrade from `tag`.
    fn upgrade(
        &self,
        scene: &str,
        tag: &str,
        inner: serde_json::Value,
    ) -> Option<std::result::Result<(String, serde_json::Value), BoxError>>;
}

/// What a record holds that this build does not know, kept so that a save by it does
/// not wipe what a newer version wrote (JSON records only): fields of the envelope, and
/// fields of the bot's data that its type does not have.
#[derive(Debug, Clone, Default)]
pub(crate) struct Extras {
    pub(crate) envelope: Vec<(String, Box<serde_json::value::RawValue>)>,
    pub(crate) data: Vec<(String, Box<serde_json::value::RawValue>)>,
}

impl Extras {
    pub(crate) fn is_empty(&self) -> bool {
        self.envelope.is_empty() && self.data.is_empty()
    }

    /// The unknown fields of the JSON record `bytes`: envelope fields other than the
    /// ones this build writes, and data fields not among `data_fields` (the fields of
    /// the bot's data type; `None`: it is not a plain struct, nothing is kept).
    /// Nothing for records that are not JSON objects.
    pub(crate) fn scan(bytes: &[u8], data_fields: Option<&[&str]>) -> Self {
        use serde_json::value::RawValue;
        use std::borrow::Cow;
        type Fields<'a> = Vec<(Cow<'a, str>, &'a RawValue)>;
        #[derive(Deserialize)]
        struct Map<'a>(#[serde(borrow, deserialize_with = "fields")] Fields<'a>);
        fn fields<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> std::result::Result<Fields<'de>, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Fields<'de>;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object")
                }
                fn visit_map<A: serde::de::MapAccess<'de>>(
                    self,
                    mut map: A,
                ) -> std::result::Result<Self::Value, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                        out.push((k, v));
                    }
                    Ok(out)
                }
            }
            d.deserialize_map(V)
        }
        const KNOWN: [&str; 9] = [
            "v", "dv", "data", "scenes", "lost", "at", "seen", "sent", "outbox",
        ];
        let mut extras = Self::default();
        if !bytes.starts_with(b"{") {
            return extras;
        }
        let Ok(Map(top)) = serde_json::from_slice::<Map<'_>>(bytes) else {
            return extras;
        };
        for (k, v) in top {
            if k == "data" {
                let Some(known) = data_fields else { continue };
                if let Ok(Map(data)) = serde_json::from_str::<Map<'_>>(v.get()) {
                    extras.data = data
                        .into_iter()
                        .filter(|(k, _)| !known.contains(&k.as_ref()))
                        .map(|(k, v)| (k.into_owned(), v.to_owned()))
                        .collect();
                }
            } else if !KNOWN.contains(&k.as_ref()) {
                extras.envelope.push((k.into_owned(), v.to_owned()));
            }
        }
        extras
    }
}

/// The fields of `S` when it deserializes as a plain struct (`derive(Deserialize)`
/// without `flatten`), read from what it asks its deserializer for; `None` otherwise.
pub(crate) fn struct_fields<S: DeserializeOwned>() -> Option<&'static [&'static str]> {
    use serde::de::{Error as _, Visitor};
    struct Probe(Option<&'static [&'static str]>);
    impl<'de> serde::Deserializer<'de> for &mut Probe {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: Visitor<'de>>(
            self,
            _: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            Err(Self::Error::custom("probe"))
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> std::result::Result<V::Value, Self::Error> {
            self.0 = Some(fields);
            Err(Self::Error::custom("probe"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = S::deserialize(&mut probe);
    probe.0
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `skip_serializing_if` passes a reference
fn is_zero_i64(n: &i64) -> bool {
    *n == 0
}

/// An upgrade of the bot's stored data from one version to the next.
pub(crate) type DataUpgrade = std::sync::Arc<
    dyn Fn(serde_json::Value) -> std::result::Result<serde_json::Value, BoxError> + Send + Sync,
>;

/// The version of the bot's data type and the upgrades from older ones (set with
/// [`PipelineBuilder::data_version`](crate::pipeline::PipelineBuilder::data_version)).
#[derive(Clone, Default)]
pub(crate) struct DataVersions {
    /// The version this build writes (0: unversioned).
    pub(crate) current: u32,
    /// `upgrades[n]` turns data of version `n` into version `n + 1`.
    pub(crate) upgrades: std::collections::BTreeMap<u32, DataUpgrade>,
}

impl DataVersions {
    /// `data` stored at version `from`, brought to the current version: `Ok` unchanged
    /// when it is current (or newer: a newer replica wrote it; it is read as it is).
    fn upgrade(
        &self,
        from: u32,
        mut data: serde_json::Value,
    ) -> std::result::Result<serde_json::Value, String> {
        for n in from..self.current {
            let f = self
                .upgrades
                .get(&n)
                .ok_or_else(|| format!("no upgrade of the data from version {n} to {}", n + 1))?;
            data = f(data)
                .map_err(|e| format!("the upgrade of the data from version {n} failed: {e}"))?;
        }
        Ok(data)
    }
}

/// At most this many copies of undecodable parts a record keeps (the newest).
const MAX_LOST: usize = 4;

/// At most this many upgrades run on one frame's state (a loop of upgrades stops).
const MAX_UPGRADES: usize = 64;

/// What a lenient decode did to a stored record: each entry says what it mended.
pub(crate) type Repairs = Vec<String>;

/// A record decoded part by part ([`Mended::decode`]).
pub(crate) struct Mended<S> {
    /// The data, `None` when there was none or it did not decode (start afresh).
    pub(crate) data: Option<S>,
    pub(crate) scenes: Vec<Frame>,
    pub(crate) lost: Vec<serde_json::Value>,
    pub(crate) seen: Vec<i64>,
    pub(crate) sent: SentIds,
    pub(crate) outbox: Vec<Outgoing>,
    /// What was mended.
    pub(crate) repairs: Repairs,
    /// The data was upgraded or dropped: the stored data's other fields are not kept.
    pub(crate) data_rewritten: bool,
}

/// Adds `entry` to the copies of lost parts `lost`, keeping the newest [`MAX_LOST`].
pub(crate) fn push_lost(lost: &mut Vec<serde_json::Value>, entry: serde_json::Value) {
    lost.push(entry);
    let skip = lost.len().saturating_sub(MAX_LOST);
    lost.drain(..skip);
}

/// A copy of a stored frame the stage could not resume, for the `lost` field.
pub(crate) fn lost_frame(frame: &Frame, now_s: i64, why: &str) -> serde_json::Value {
    let value = serde_json::to_value(frame).unwrap_or(serde_json::Value::Null);
    serde_json::json!({"at": now_s, "what": "frame", "error": why, "value": value})
}

/// A copy of a whole record that could not be decoded, for the `lost` field.
pub(crate) fn lost_copy(bytes: &[u8], now_s: i64, error: &Error) -> serde_json::Value {
    let value = Codec::decode::<serde_json::Value>(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()));
    let error = crate::error::error_chain(error);
    serde_json::json!({"at": now_s, "what": "record", "error": error, "value": value})
}

impl<S: SessionData> Mended<S> {
    /// Decodes a record that the strict decode could not, part by part, so that no
    /// part of it can strand the user:
    ///
    /// - a frame whose state does not decode is upgraded through `upgrades` while one
    ///   applies, and otherwise kept as an [`Undecodable`] (written back as read);
    /// - a frame without a scene id is dropped, its JSON copied into `lost`;
    /// - data of an older version is upgraded by `versions`; data that no upgrade
    ///   reaches or that does not decode as `S` is dropped (`None`: start afresh), its
    ///   JSON copied into `lost`;
    /// - bytes that are not a record at all are replaced by an empty session, copied
    ///   into `lost` as text;
    /// - bookkeeping (`seen`, `outbox`) that does not decode is dropped.
    ///
    /// `lost` keeps the newest [`MAX_LOST`] copies, each with when (`now_s`) and why.
    pub(crate) fn decode(
        bytes: &[u8],
        now_s: i64,
        upgrades: Option<&dyn StateUpgrades>,
        versions: &DataVersions,
    ) -> Self {
        let mut repairs = Repairs::new();
        let mut lost = Vec::new();
        let mut keep =
            |what: &str, error: String, value: serde_json::Value, repairs: &mut Repairs| {
                repairs.push(format!("{what}: {error}"));
                lost.push(
                    serde_json::json!({"at": now_s, "what": what, "error": error, "value": value}),
                );
            };
        let mut obj = match Codec::decode::<serde_json::Value>(bytes) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(other) => {
                keep("record", "not a session record".into(), other, &mut repairs);
                serde_json::Map::new()
            }
            Err(e) => {
                let text = String::from_utf8_lossy(bytes).into_owned();
                keep(
                    "record",
                    e.to_string(),
                    serde_json::Value::String(text),
                    &mut repairs,
                );
                serde_json::Map::new()
            }
        };
        let dv = obj
            .get("dv")
            .and_then(serde_json::Value::as_u64)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(0);
        let data_rewritten = dv < versions.current;
        let data = match obj.remove("data") {
            None => None,
            Some(value) => match versions.upgrade(dv, value.clone()) {
                Err(e) => {
                    keep("data", e, value, &mut repairs);
                    None
                }
                Ok(upgraded) => match S::deserialize(&upgraded) {
                    Ok(data) => {
                        if dv < versions.current {
                            repairs.push(format!(
                                "data upgraded from version {dv} to {}",
                                versions.current
                            ));
                        }
                        Some(data)
                    }
                    Err(e) => {
                        keep("data", e.to_string(), value, &mut repairs);
                        None
                    }
                },
            },
        };
        let mut scenes = Vec::new();
        if let Some(list) = obj.remove("scenes") {
            let list = match list {
                serde_json::Value::Array(list) => list,
                other => {
                    keep("scenes", "not a list of frames".into(), other, &mut repairs);
                    Vec::new()
                }
            };
            for value in list {
                match mend_frame(value, upgrades) {
                    Ok((frame, note)) => {
                        if let Some(note) = note {
                            repairs.push(note);
                        }
                        scenes.push(frame);
                    }
                    Err((error, value)) => keep("frame", error, value, &mut repairs),
                }
            }
        }
        let seen: Vec<i64> = take_field(&mut obj, "seen", &mut repairs).unwrap_or_default();
        let sent: SentIds = take_field(&mut obj, "sent", &mut repairs).unwrap_or_default();
        let outbox: Vec<Outgoing> =
            take_field(&mut obj, "outbox", &mut repairs).unwrap_or_default();
        let mut earlier: Vec<serde_json::Value> =
            take_field(&mut obj, "lost", &mut repairs).unwrap_or_default();
        for entry in lost {
            push_lost(&mut earlier, entry);
        }
        Self {
            data_rewritten: data_rewritten || data.is_none(),
            data,
            scenes,
            lost: earlier,
            seen,
            sent,
            outbox,
            repairs,
        }
    }
}

/// The envelope field `name` of `obj` as a `T`, or `None` (noted in `repairs` when it
/// was there but did not decode).
fn take_field<T: DeserializeOwned>(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    repairs: &mut Repairs,
) -> Option<T> {
    let value = obj.remove(name)?;
    match T::deserialize(&value) {
        Ok(v) => Some(v),
        Err(e) => {
            repairs.push(format!("{name}: {e} (dropped)"));
            None
        }
    }
}

/// One stored frame, decoded leniently: its state upgraded while an upgrade applies, or
/// kept as [`Undecodable`]; with a note of what was done. `Err` (why, and the JSON)
/// when it has no scene id to keep it by.
fn mend_frame(
    value: serde_json::Value,
    upgrades: Option<&dyn StateUpgrades>,
) -> std::result::Result<(Frame, Option<String>), (String, serde_json::Value)> {
    let serde_json::Value::Object(mut map) = value else {
        return Err(("a frame that is not an object".into(), value));
    };
    let Some(scene) = map
        .get("scene")
        .and_then(serde_json::Value::as_str)
        .map(str::to_owned)
    else {
        return Err((
            "a frame without a scene id".into(),
            serde_json::Value::Object(map),
        ));
    };
    let int = |map: &serde_json::Map<String, serde_json::Value>, k: &str| {
        map.get(k).and_then(serde_json::Value::as_i64)
    };
    let cursor = int(&map, "cursor");
    let entered_at = int(&map, "entered_at").unwrap_or(0);
    let expires = int(&map, "expires");
    // A timer that does not read is dropped: the frame is armed again by its next
    // update.
    let timer = map
        .get("timer")
        .and_then(|t| Timer::deserialize(t).ok())
        .map(Box::new);
    let raw = map.remove("state").unwrap_or(serde_json::Value::Null);
    let mut state = raw.clone();
    let mut note = None;
    let mut error = String::new();
    for _ in 0..MAX_UPGRADES {
        match <Box<dyn SceneState>>::deserialize(&state) {
            Ok(decoded) => {
                let frame = Frame {
                    scene,
                    cursor,
                    entered_at,
                    expires,
                    timer,
                    state: decoded,
                };
                return Ok((frame, note));
            }
            Err(e) => error = e.to_string(),
        }
        // One tagged state (`{"tag": inner}`) with an upgrade from its tag: apply it.
        let tagged = match &state {
            serde_json::Value::Object(m) if m.len() == 1 => m.iter().next().map(|(t, _)| t.clone()),
            _ => None,
        };
        let Some(tag) = tagged else { break };
        let inner = state
            .as_object_mut()
            .and_then(|m| m.remove(&tag))
            .unwrap_or(serde_json::Value::Null);
        match upgrades.and_then(|u| u.upgrade(&scene, &tag, inner)) {
            Some(Ok((next, upgraded))) => {
                note = Some(format!(
                    "frame `{scene}`: state upgraded from `{tag}` to `{next}`"
                ));
                let mut m = serde_json::Map::new();
                m.insert(next, upgraded);
                state = serde_json::Value::Object(m);
            }
            Some(Err(e)) => {
                error = format!("upgrade from `{tag}` failed: {e}");
                break;
            }
            None => break,
        }
    }
    let frame = Frame {
        scene: scene.clone(),
        cursor,
        entered_at,
        expires,
        timer,
        state: Box::new(Undecodable {
            raw,
            error: error.clone(),
        }),
    };
    Ok((
        frame,
        Some(format!("frame `{scene}`: state kept undecoded: {error}")),
    ))
}

/// A stored record moved from chat `from` to chat `to` (a group upgraded to a
/// supergroup), written with `codec`: its armed timers reply to `to`, and so do the
/// replies in its outbox. Read without the bot's types; everything else is kept.
///
/// # Errors
/// [`Error::Decode`] (with an empty key) when the bytes are not a record.
pub(crate) fn moved_to_chat(bytes: &[u8], codec: Codec, from: i64, to: i64) -> Result<Vec<u8>> {
    let mut value: serde_json::Value = Codec::decode(bytes).map_err(|e| Error::Decode {
        key: String::new(),
        source: e,
    })?;
    let retarget = |v: &mut serde_json::Value, field: &str| {
        if let Some(chat) = v.get_mut(field) {
            if chat.as_i64() == Some(from) {
                *chat = to.into();
            }
        }
    };
    if let Some(scenes) = value.get_mut("scenes").and_then(|s| s.as_array_mut()) {
        for frame in scenes {
            if let Some(timer) = frame.get_mut("timer") {
                retarget(timer, "chat");
            }
        }
    }
    if let Some(outbox) = value.get_mut("outbox").and_then(|s| s.as_array_mut()) {
        for reply in outbox {
            retarget(reply, "chat_id");
        }
    }
    codec.encode(&value).map_err(|e| Error::Encode {
        key: String::new(),
        source: e,
    })
}

/// The stored record `bytes` with the message ids `more` added to its `sent` field,
/// written with `codec`, read without the bot's types. JSON records keep every other
/// field byte for byte and in place (`sent` goes after them, before an outbox); other
/// codecs go through a generic value.
///
/// # Errors
/// [`Error::Decode`] (with an empty key) when the bytes are not a record.
pub(crate) fn add_sent(bytes: &[u8], codec: Codec, more: &[(String, i64)]) -> Result<Vec<u8>> {
    let err = |e| Error::Decode {
        key: String::new(),
        source: e,
    };
    let encode_err = |e| Error::Encode {
        key: String::new(),
        source: e,
    };
    if codec == Codec::Json && bytes.first() == Some(&b'{') {
        let fields: Vec<(std::borrow::Cow<'_, str>, &serde_json::value::RawValue)> =
            serde_json::from_slice::<OrderedFields<'_>>(bytes)
                .map_err(|e| err(e.into()))?
                .0;
        let mut sent = SentIds::default();
        let mut out = Vec::with_capacity(bytes.len() + 32);
        out.push(b'{');
        let mut outbox = None;
        for (k, v) in &fields {
            match k.as_ref() {
                "sent" => {
                    sent = serde_json::from_str(v.get()).map_err(|e| err(e.into()))?;
                    continue;
                }
                "outbox" => {
                    outbox = Some(*v);
                    continue;
                }
                _ => {}
            }
            if out.len() > 1 {
                out.push(b',');
            }
            serde_json::to_writer(&mut out, k).map_err(|e| encode_err(e.into()))?;
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        sent.extend(more);
        if !sent.is_empty() {
            out.extend_from_slice(b",\"sent\":");
            serde_json::to_writer(&mut out, &sent).map_err(|e| encode_err(e.into()))?;
        }
        if let Some(v) = outbox {
            out.extend_from_slice(b",\"outbox\":");
            out.extend_from_slice(v.get().as_bytes());
        }
        out.push(b'}');
        return Ok(out);
    }
    let mut value: serde_json::Value = Codec::decode(bytes).map_err(err)?;
    let Some(map) = value.as_object_mut() else {
        return Err(err("not a session record".into()));
    };
    let mut sent: SentIds = match map.remove("sent") {
        Some(v) => serde_json::from_value(v).map_err(|e| err(e.into()))?,
        None => SentIds::default(),
    };
    sent.extend(more);
    map.insert(
        "sent".to_owned(),
        serde_json::to_value(&sent).map_err(|e| encode_err(e.into()))?,
    );
    codec.encode(&value).map_err(encode_err)
}

/// A JSON object's fields in order, each value as written.
struct OrderedFields<'a>(Vec<(std::borrow::Cow<'a, str>, &'a serde_json::value::RawValue)>);

impl<'de> Deserialize<'de> for OrderedFields<'de> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OrderedFields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a session record")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::new();
                while let Some(k) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    let v: &'de serde_json::value::RawValue = map.next_value()?;
                    fields.push((k, v));
                }
                Ok(OrderedFields(fields))
            }
        }
        d.deserialize_map(V)
    }
}

/// A stored record without its outbox, written with `codec`: what marks its replies
/// delivered when the bot's types are not at hand.
pub(crate) fn without_outbox(bytes: &[u8], codec: Codec) -> Result<Vec<u8>> {
    split_outbox(bytes, codec).map(|(_, cleared)| cleared)
}

/// A stored record's outbox (the replies of its last step not yet confirmed delivered)
/// and the record without it, written with `codec`: read without the bot's types.
///
/// # Errors
/// [`Error::Decode`] (with an empty key) when the bytes are not a record, or a reply in
/// the outbox is not one this version knows.
pub(crate) fn split_outbox(bytes: &[u8], codec: Codec) -> Result<(Vec<Outgoing>, Vec<u8>)> {
    let err = |e| Error::Decode {
        key: String::new(),
        source: e,
    };
    let mut value: serde_json::Value = Codec::decode(bytes).map_err(err)?;
    let outbox = match value.as_object_mut().and_then(|map| map.remove("outbox")) {
        Some(list) => serde_json::from_value(list).map_err(|e| err(e.into()))?,
        None => Vec::new(),
    };
    let cleared = codec.encode(&value).map_err(|e| Error::Encode {
        key: String::new(),
        source: e,
    })?;
    Ok((outbox, cleared))
}

/// A stored frame read without the bot's types (see [`inspect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FrameInfo {
    /// The scene id.
    pub scene: String,
    /// The wizard cursor.
    #[serde(default)]
    pub cursor: Option<i64>,
    /// When it was entered (Unix seconds).
    #[serde(default)]
    pub entered_at: i64,
    /// When it expires (Unix seconds).
    #[serde(default)]
    pub expires: Option<i64>,
    /// Its armed timer (a timeout waiting for the user).
    #[serde(default)]
    pub timer: Option<Timer>,
    /// The `typetag` name of its state (e.g. `"signup.v1"`).
    #[serde(skip)]
    pub state_tag: Option<String>,
}

/// What [`inspect`] reads from a stored session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordInfo {
    /// The envelope's schema version (0: written before the field existed).
    pub schema: u32,
    /// The bot's data, as untyped JSON.
    pub data: serde_json::Value,
    /// The scene stack, bottom first.
    pub scenes: Vec<FrameInfo>,
    /// The ids of the session's recent updates, oldest first (what de-duplication
    /// checks).
    pub seen: Vec<i64>,
    /// The ids of messages sent under a name ([`Reply::remember`]), oldest first.
    ///
    /// [`Reply::remember`]: crate::transport::Reply::remember
    pub sent: Vec<(String, i64)>,
    /// Replies committed with the session's last step and not yet confirmed delivered.
    pub outbox: Vec<Outgoing>,
    /// When the session last changed (the last write of an update or event that changed
    /// it), Unix seconds; `None` for a record written before the field existed.
    pub last_active: Option<i64>,
}

/// Reads a stored session record without the bot's Rust types: who is in which scene
/// and step. This is what operator tools build on.
///
/// ```
/// let bytes = br#"{"v":1,"data":{"n":1},"scenes":[{"scene":"signup","cursor":2,"entered_at":5,
///     "state":{"signup.v1":{"name":"Ann"}}}]}"#;
/// let info = stagecraft::record::inspect(bytes).unwrap();
/// assert_eq!(info.schema, 1);
/// assert_eq!(info.scenes[0].scene, "signup");
/// assert_eq!(info.scenes[0].cursor, Some(2));
/// assert_eq!(info.scenes[0].state_tag.as_deref(), Some("signup.v1"));
/// assert!(stagecraft::record::inspect(b"\x00garbage").is_err());
/// ```
///
/// # Errors
/// [`Error::Decode`] (with an empty key) when the bytes are not a session record.
pub fn inspect(bytes: &[u8]) -> Result<RecordInfo> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        v: u32,
        #[serde(default)]
        data: serde_json::Value,
        #[serde(default)]
        scenes: Vec<serde_json::Value>,
        #[serde(default)]
        seen: Vec<i64>,
        #[serde(default)]
        sent: SentIds,
        #[serde(default)]
        outbox: Vec<Outgoing>,
        #[serde(default)]
        at: Option<i64>,
    }
    let decode_err = |e| Error::Decode {
        key: String::new(),
        source: e,
    };
    let raw: Raw = Codec::decode(bytes).map_err(decode_err)?;
    let scenes = raw
        .scenes
        .into_iter()
        .map(|v| {
            let tag = v
                .get("state")
                .and_then(|s| s.as_object())
                .and_then(|o| o.keys().next().cloned());
            let mut info: FrameInfo =
                serde_json::from_value(v).map_err(|e| decode_err(e.into()))?;
            info.state_tag = tag;
            Ok(info)
        })
        .collect::<Result<_>>()?;
    Ok(RecordInfo {
        schema: raw.v,
        data: raw.data,
        scenes,
        seen: raw.seen,
        sent: raw.sent.0,
        outbox: raw.outbox,
        last_active: raw.at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Serialize, Deserialize)]
    struct Known {
        a: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        b: Option<String>,
    }

    #[test]
    fn unknown_fields_are_kept_and_known_ones_omitted_on_save_are_not_brought_back() {
        let fields = struct_fields::<Known>().unwrap();
        assert_eq!(fields, ["a", "b"]);
        assert!(struct_fields::<serde_json::Value>().is_none());
        assert!(struct_fields::<u32>().is_none());
        let stored = br#"{"v":1,"data":{"a":1,"b":"old","z":[1,2]},"t":{"k":true}}"#;
        let extras = Extras::scan(stored, Some(fields));
        let data = Known { a: 2, b: None };
        let bytes = RecordRef::new(&data, &[])
            .with_extras(&extras)
            .encode(Codec::Json, 64)
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"v": 1, "data": {"a": 2, "z": [1, 2]}, "t": {"k": true}})
        );
    }

    fn frame(scene: &str, cursor: Option<i64>, expires: Option<i64>, state: &str) -> Frame {
        Frame {
            scene: scene.to_owned(),
            cursor,
            entered_at: -17,
            expires,
            timer: None,
            state: Box::new(JsonState(serde_json::from_str(state).unwrap())),
        }
    }

    /// The hand-written JSON is byte for byte what the derived `Serialize` writes.
    #[test]
    fn json_records_are_written_as_serde_would() {
        let data = serde_json::json!({"n": 1, "name": "A \"quoted\" name\n", "list": [1, 2]});
        let stacks = vec![
            vec![],
            vec![frame("menu", None, None, "null")],
            vec![
                frame(
                    "sign\"up\\",
                    Some(2),
                    Some(i64::MAX),
                    r#"{"a":[1,{"b":"\u0001"}]}"#,
                ),
                frame("ünïcode ✓", Some(-1), None, "{}"),
                frame("", None, Some(i64::MIN), "\"s\""),
            ],
            vec![
                Frame {
                    timer: Some(Box::new(Timer::new(i64::MAX, Some(-100), None, Some(7)))),
                    ..frame("a", Some(0), Some(5), "{}")
                },
                Frame {
                    timer: Some(Box::new(Timer::new(-3, None, Some(4), None))),
                    ..frame("b", None, None, "{}")
                },
            ],
        ];
        let outbox = [
            Outgoing::text(5, "a \"reply\""),
            Outgoing::answer_callback("q", None),
        ];
        let ledgers: [(&[i64], &[Outgoing]); 4] = [
            (&[], &[]),
            (&[1, -2, i64::MAX], &[]),
            (&[], &outbox),
            (&[7], &outbox),
        ];
        for scenes in &stacks {
            for (seen, out) in ledgers {
                // Stamped or not (a seen list long enough to stamp some records).
                let at = if seen.len() > 1 { 1_700_000_123 } else { 0 };
                let record = RecordRef::new(&data, scenes)
                    .with_ledger(seen, out)
                    .with_activity(at);
                let by_serde = serde_json::to_vec(&record).unwrap();
                let enc = record.encode_with_cleared(Codec::Json, 8).unwrap();
                let (by_hand, cleared) = (enc.bytes.clone(), enc.cleared.clone());
                let plain = serde_json::to_vec(&RecordRef::new(&data, scenes)).unwrap();
                assert!(enc.same_session_as(&plain));
                assert!(
                    !enc.same_session_as(&serde_json::to_vec(&RecordRef::new(&1, scenes)).unwrap())
                );
                assert_eq!(
                    String::from_utf8(by_hand).unwrap(),
                    String::from_utf8(by_serde).unwrap()
                );
                // The cleared record is the same record with an empty outbox.
                let without =
                    serde_json::to_vec(&RecordRef::new(&data, scenes).with_ledger(seen, &[]))
                        .unwrap();
                assert_eq!(cleared.is_some(), !out.is_empty());
                if let Some(c) = cleared {
                    assert_eq!(
                        String::from_utf8(c).unwrap(),
                        String::from_utf8(without).unwrap()
                    );
                }
                let back = RecordOwned::<serde_json::Value>::decode(
                    "k",
                    &serde_json::to_vec(&record).unwrap(),
                )
                .unwrap();
                assert_eq!((back.seen.as_slice(), back.outbox.as_slice()), (seen, out));
            }
        }
    }

    #[test]
    fn message_ids_are_kept_between_seen_and_the_outbox() {
        let mut sent = SentIds::default();
        sent.insert("q", 7);
        sent.insert("pic", 9);
        sent.insert("q", 8);
        let outbox = [Outgoing::text(5, "hi")];
        let data = serde_json::json!({"n": 1});
        let encoded = RecordRef::new(&data, &[])
            .with_ledger(&[3], &outbox)
            .with_sent(&sent)
            .encode_with_cleared(Codec::Json, 64)
            .unwrap();
        let text = String::from_utf8(encoded.bytes.clone()).unwrap();
        assert_eq!(
            text,
            r#"{"v":1,"data":{"n":1},"seen":[3],"sent":{"pic":9,"q":8},"outbox":[{"method":"sendMessage","chat_id":5,"text":"hi"}]}"#
        );
        // The derived serialisation (other codecs) agrees.
        let derived = serde_json::to_string(
            &RecordRef::new(&data, &[])
                .with_ledger(&[3], &outbox)
                .with_sent(&sent),
        )
        .unwrap();
        assert_eq!(derived, text);
        let cleared = String::from_utf8(encoded.cleared.clone().unwrap()).unwrap();
        assert_eq!(
            cleared,
            r#"{"v":1,"data":{"n":1},"seen":[3],"sent":{"pic":9,"q":8}}"#
        );
        let back = RecordOwned::<serde_json::Value>::decode("k", &encoded.bytes).unwrap();
        assert_eq!(back.sent, sent);
        let plain = RecordRef::new(&data, &[])
            .encode_with_cleared(Codec::Json, 64)
            .unwrap();
        assert!(plain.same_session_as(&encoded.bytes), "ids are bookkeeping");
        // A record written before the field existed reads without ids.
        let old = RecordOwned::<serde_json::Value>::decode("k", br#"{"v":1,"data":{}}"#).unwrap();
        assert!(old.sent.is_empty());
        assert!(
            inspect(&encoded.bytes).unwrap().sent == [("pic".to_owned(), 9), ("q".to_owned(), 8)]
        );
    }

    #[test]
    fn ids_are_added_to_a_stored_record_keeping_everything_else() {
        let stored = br#"{"v":1,"data":{"b":1,"a":2},"scenes":[{"scene":"s","entered_at":1,"state":{"json":{}}}],"x-new":[1, 2],"seen":[4],"sent":{"old":1},"outbox":[{"method":"sendMessage","chat_id":5,"text":"hi"}]}"#;
        let out = add_sent(stored, Codec::Json, &[("q".into(), 12), ("old".into(), 2)]).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"v":1,"data":{"b":1,"a":2},"scenes":[{"scene":"s","entered_at":1,"state":{"json":{}}}],"x-new":[1, 2],"seen":[4],"sent":{"q":12,"old":2},"outbox":[{"method":"sendMessage","chat_id":5,"text":"hi"}]}"#
        );
        let out = add_sent(br#"{"v":1,"data":null}"#, Codec::Json, &[("q".into(), 1)]).unwrap();
        assert_eq!(out, br#"{"v":1,"data":null,"sent":{"q":1}}"#);
        assert!(add_sent(b"[1]", Codec::Json, &[("q".into(), 1)]).is_err());
        assert!(add_sent(b"{\"sent\":5}", Codec::Json, &[("q".into(), 1)]).is_err());
        // No more than MAX_SENT names.
        let many: Vec<(String, i64)> = (0..40).map(|i| (format!("m{i}"), i)).collect();
        let out = add_sent(br#"{"v":1,"data":null}"#, Codec::Json, &many).unwrap();
        let info = inspect(&out).unwrap();
        assert_eq!(info.sent.len(), MAX_SENT);
        assert_eq!(info.sent[0], ("m8".to_owned(), 8), "the oldest went first");
    }

    #[test]
    fn the_envelope_head_is_the_schema_version() {
        let head = format!("{{\"v\":{SCHEMA_VERSION},\"data\":");
        assert_eq!(ENVELOPE_HEAD, head.as_bytes());
        let other = RecordRef {
            v: 7,
            ..RecordRef::new(&1, &[])
        };
        assert_eq!(
            other.encode(Codec::Json, 0).unwrap(),
            b"{\"v\":7,\"data\":1}"
        );
    }

    /// A record written before the schema version existed decodes as version 0.
    #[test]
    fn records_without_a_schema_version_decode() {
        let old =
            br#"{"data":{"n":3},"scenes":[{"scene":"s","entered_at":1,"state":{"json":{}}}]}"#;
        let r = RecordOwned::<serde_json::Value>::decode("k", old).unwrap();
        assert_eq!((r.v, r.data["n"].as_i64(), r.scenes.len()), (0, Some(3), 1));
        assert_eq!(inspect(old).unwrap().schema, 0);
        let err = RecordOwned::<u32>::decode("k", b"{\"v\":1,\"data\":\"x\"}")
            .err()
            .expect("a string is not a u32");
        assert!(
            matches!(err, Error::Decode { ref key, .. } if key == "k"),
            "{err:?}"
        );
    }
}

//! Sessions: per-key data loaded from a store, handed to handlers, written back.
//!
//! A session record holds the bot's own data `S` and the [scene stack](crate::scene::Frame).
//! It is stored as `{"data": S, "scenes": [frame, ...]}` through the configured
//! [`Codec`](crate::store::Codec), so an operator can read who is in which scene and step
//! without the bot's Rust types.
//!
//! The session lives for one update: loaded lazily before the first handler runs,
//! written back after the chain when it changed, under a per-key lock so that updates of
//! one key never interleave. See [`Pipeline`](crate::Pipeline) for the whole cycle.

mod cache;
mod key;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub(crate) use cache::{Cached, FastMap, Trust, fast_map};
pub use key::{Key, KeyFn};

use crate::scene::Frame;

/// Bounds on the bot's session data type.
pub trait SessionData: Serialize + DeserializeOwned + Send + Sync + 'static {}

impl<T: Serialize + DeserializeOwned + Send + Sync + 'static> SessionData for T {}

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
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodePolicy {
    /// Report [`Error::Decode`](crate::Error::Decode) for the update and leave the stored
    /// bytes untouched, so nothing is lost and an operator can repair or migrate them.
    #[default]
    Fail,
    /// Log a warning and start the session afresh (the old record is overwritten when
    /// the new session is saved).
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

/// The stored shape of a session, borrowed for encoding.
#[derive(Serialize)]
pub(crate) struct RecordRef<'a, S> {
    pub(crate) data: &'a S,
    #[serde(skip_serializing_if = "<[Frame]>::is_empty")]
    pub(crate) scenes: &'a [Frame],
}

/// The stored shape of a session, owned for decoding.
impl<S: Serialize> RecordRef<'_, S> {
    /// Encodes the record with `codec` into a buffer of `size_hint` bytes to start with.
    ///
    /// JSON is written here field by field, byte for byte what the derived
    /// `Serialize` writes through `serde_json`, without its per-field key escaping: the
    /// record's own field names are constants. The bot's data and each frame's state
    /// still go through `serde_json`.
    pub(crate) fn encode(
        &self,
        codec: crate::store::Codec,
        size_hint: usize,
    ) -> Result<Vec<u8>, crate::BoxError> {
        if codec != crate::store::Codec::Json {
            return codec.encode_sized(self, size_hint);
        }
        let mut buf = Vec::with_capacity(size_hint);
        buf.extend_from_slice(b"{\"data\":");
        serde_json::to_writer(&mut buf, self.data)?;
        if !self.scenes.is_empty() {
            let mut ints = itoa::Buffer::new();
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
                buf.extend_from_slice(b",\"state\":");
                serde_json::to_writer(&mut buf, &f.state)?;
                buf.push(b'}');
            }
            buf.push(b']');
        }
        buf.push(b'}');
        Ok(buf)
    }
}

#[derive(Deserialize)]
pub(crate) struct RecordOwned<S> {
    pub(crate) data: S,
    #[serde(default)]
    pub(crate) scenes: Vec<Frame>,
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
    /// The `typetag` name of its state (e.g. `"signup.v1"`).
    #[serde(skip)]
    pub state_tag: Option<String>,
}

/// What [`inspect`] reads from a stored session.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RecordInfo {
    /// The bot's data, as untyped JSON.
    pub data: serde_json::Value,
    /// The scene stack, bottom first.
    pub scenes: Vec<FrameInfo>,
}

/// Reads a stored session record without the bot's Rust types: who is in which scene
/// and step. This is what operator tools build on.
///
/// ```
/// let bytes = br#"{"data":{"n":1},"scenes":[{"scene":"signup","cursor":2,"entered_at":5,
///     "state":{"signup.v1":{"name":"Ann"}}}]}"#;
/// let info = stagecraft::session::inspect(bytes).unwrap();
/// assert_eq!(info.scenes[0].scene, "signup");
/// assert_eq!(info.scenes[0].cursor, Some(2));
/// assert_eq!(info.scenes[0].state_tag.as_deref(), Some("signup.v1"));
/// assert!(stagecraft::session::inspect(b"\x00garbage").is_err());
/// ```
///
/// # Errors
/// [`Error::Decode`](crate::Error::Decode) when the bytes are not a session record.
pub fn inspect(bytes: &[u8]) -> crate::Result<RecordInfo> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        data: serde_json::Value,
        #[serde(default)]
        scenes: Vec<serde_json::Value>,
    }
    let decode_err = |e| crate::Error::Decode {
        key: String::new(),
        source: e,
    };
    let raw: Raw = crate::store::Codec::decode(bytes).map_err(decode_err)?;
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
        .collect::<crate::Result<_>>()?;
    Ok(RecordInfo {
        data: raw.data,
        scenes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scene::{Frame, JsonState};

    fn frame(scene: &str, cursor: Option<i64>, expires: Option<i64>, state: &str) -> Frame {
        Frame {
            scene: scene.to_owned(),
            cursor,
            entered_at: -17,
            expires,
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
        ];
        for scenes in &stacks {
            let record = RecordRef {
                data: &data,
                scenes,
            };
            let by_serde = serde_json::to_vec(&record).unwrap();
            let by_hand = record.encode(crate::store::Codec::Json, 8).unwrap();
            assert_eq!(
                String::from_utf8(by_hand).unwrap(),
                String::from_utf8(by_serde).unwrap()
            );
        }
    }
}

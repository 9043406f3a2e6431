//! Operating a bot: who is in which scene and step, and resetting or deleting one
//! user's session, on any store and without the bot's Rust types.
//!
//! Everything here reads the plain fields of the stored record (see
//! [`record`](crate::record) and [`crate::record::inspect`]): the scene ids,
//! wizard cursors and times of the frames on the stack. The bot's data and the scenes'
//! typed state are carried as untyped JSON, never decoded into Rust types, so an
//! operator tool built on this module (the `stagecraft` command-line tool, feature
//! `cli`) works on any bot's store.
//!
//! [`reset`] and [`delete`] write with compare-and-set, holding the key's lease where
//! the store has leases ([`SessionStore::leases`]): they never race a live update of
//! the key, which either runs before them (and they act on what it wrote) or after
//! them (and it starts from what they left).
//!
//! ```
//! use stagecraft::admin::{self, Action, ListOptions};
//! use stagecraft::store::{MemoryStore, SessionStore};
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! let record = br#"{"v":1,"data":{"name":"Ann"},"scenes":[{"scene":"signup","cursor":1,"entered_at":1700000000,"state":{"json":{}}}]}"#;
//! store.save("7:7", record, None).await.unwrap();
//!
//! let list = admin::conversations(&store, &ListOptions::new().at(1700000100)).await.unwrap();
//! assert_eq!(list.len(), 1);
//! assert_eq!((list[0].scene.as_deref(), list[0].step, list[0].depth), (Some("signup"), Some(1), 1));
//!
//! assert_eq!(admin::reset(&store, "7:7").await.unwrap(), Action::Done);
//! let after = admin::show(&store, "7:7").await.unwrap().unwrap();
//! assert_eq!(after["data"]["name"], "Ann");
//! assert!(after.get("scenes").is_none());
//!
//! assert_eq!(admin::delete(&store, "7:7").await.unwrap(), Action::Done);
//! assert_eq!(admin::delete(&store, "7:7").await.unwrap(), Action::NotFound);
//! # });
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::record::{RecordInfo, inspect};
use crate::store::{Codec, LeaseAttempt, ListFilter, PROBE_PREFIX, SessionStore};

/// How long [`reset`] and [`delete`] wait for a key's lease held by a running update
/// before they give up with [`Error::LeaseTimeout`].
pub const LEASE_WAIT: Duration = Duration::from_secs(10);

/// How long the lease [`reset`] and [`delete`] take lasts, should the tool die holding it.
const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often a conflicting write is tried again on a fresh read.
const WRITE_ATTEMPTS: usize = 5;

/// One stored session, as [`conversations`] lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Conversation {
    /// The session key (`chat:user` by default).
    pub key: String,
    /// The active scene: the top frame of the stack (`None`: outside any scene).
    pub scene: Option<String>,
    /// The active wizard step (`None`: a plain scene, or no scene).
    pub step: Option<i64>,
    /// How many scenes are on the stack (sub-scenes push onto their parent).
    pub depth: usize,
    /// The scene ids of the stack, bottom first.
    pub stack: Vec<String>,
    /// When the active scene was entered, Unix seconds.
    pub entered_at: Option<i64>,
    /// When the active scene expires, Unix seconds (`None`: it does not).
    pub expires: Option<i64>,
    /// Whether the active scene has expired (its frame is dropped by the next update).
    pub expired: bool,
    /// When the session last changed (an update or event that wrote it), Unix seconds
    /// (`None`: written before records carried it).
    pub last_active: Option<i64>,
    /// Why the record could not be read, when it could not (the other fields are then
    /// empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unreadable: Option<String>,
}

impl Conversation {
    fn new(key: String, info: &RecordInfo, now: i64) -> Self {
        let top = info.scenes.last();
        Self {
            key,
            scene: top.map(|f| f.scene.clone()),
            step: top.and_then(|f| f.cursor),
            depth: info.scenes.len(),
            stack: info.scenes.iter().map(|f| f.scene.clone()).collect(),
            entered_at: top.map(|f| f.entered_at),
            expires: top.and_then(|f| f.expires),
            expired: top.and_then(|f| f.expires).is_some_and(|e| e < now),
            last_active: info.last_active,
            unreadable: None,
        }
    }

    fn from_error(key: String, error: &Error) -> Self {
        Self {
            key,
            scene: None,
            step: None,
            depth: 0,
            stack: Vec::new(),
            entered_at: None,
            expires: None,
            expired: false,
            last_active: None,
            unreadable: Some(crate::error::error_chain(error)),
        }
    }
}

/// What [`conversations`] lists.
///
/// ```
/// use stagecraft::admin::ListOptions;
///
/// let options = ListOptions::new().scene("signup").step(1).all(false);
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListOptions {
    scene: Option<String>,
    step: Option<i64>,
    all: bool,
    now: Option<i64>,
}

impl ListOptions {
    /// Sessions in an active scene (not expired), of any scene and step.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Only sessions whose active scene is `scene`.
    #[must_use]
    pub fn scene(mut self, scene: impl Into<String>) -> Self {
        self.scene = Some(scene.into());
        self
    }

    /// Only sessions whose active wizard step is `step`.
    #[must_use]
    pub fn step(mut self, step: i64) -> Self {
        self.step = Some(step);
        self
    }

    /// Also sessions outside any scene, in an expired scene, and records that cannot be
    /// read (still subject to the scene and step filters).
    #[must_use]
    pub fn all(mut self, on: bool) -> Self {
        self.all = on;
        self
    }

    /// The time to judge expiry by, Unix seconds (default: the system clock).
    #[must_use]
    pub fn at(mut self, now_s: i64) -> Self {
        self.now = Some(now_s);
        self
    }

    fn keeps(&self, c: &Conversation) -> bool {
        if !self.all && (c.scene.is_none() || c.expired) {
            return false;
        }
        if self.scene.is_some() && c.scene != self.scene {
            return false;
        }
        self.step.is_none() || c.step == self.step
    }
}

/// The stored sessions that `options` keeps, oldest active scene first (then by key).
///
/// Records that disappear while the list is read are left out; a record that cannot be
/// read is listed (with [`ListOptions::all`]) with the reason in
/// [`unreadable`](Conversation::unreadable) rather than failing the whole list. The
/// start-up check's probe records are never listed.
///
/// # Errors
/// [`Error::Store`] when the store fails.
pub async fn conversations(
    store: &dyn SessionStore,
    options: &ListOptions,
) -> Result<Vec<Conversation>> {
    let now = options.now.unwrap_or_else(unix_now);
    let mut keys = store.list(&ListFilter::default()).await?;
    keys.retain(|k| !k.starts_with(PROBE_PREFIX));
    keys.sort_unstable();
    let mut out = Vec::new();
    for key in keys {
        let Some(record) = store.load(&key).await? else {
            continue;
        };
        let conversation = match inspect(&record.bytes) {
            Ok(info) => Conversation::new(key, &info, now),
            Err(e) => {
                let e = with_key(e, &key);
                Conversation::from_error(key, &e)
            }
        };
        if options.keeps(&conversation) {
            out.push(conversation);
        }
    }
    out.sort_by(|a, b| {
        (a.entered_at.is_none(), a.entered_at, &a.key).cmp(&(
            b.entered_at.is_none(),
            b.entered_at,
            &b.key,
        ))
    });
    Ok(out)
}

/// How many sessions sit in one scene and step, as [`stats`] counts them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SceneCount {
    /// The active scene.
    pub scene: String,
    /// The active wizard step (`None`: a plain scene).
    pub step: Option<i64>,
    /// How many sessions are there.
    pub users: usize,
    /// When the one that has been there longest entered, Unix seconds.
    pub oldest_entered_at: i64,
}

/// How many sessions sit in each scene and step, the group whose oldest member entered
/// first at the top: where people get stuck. Counts what [`conversations`] lists with
/// `options`.
///
/// # Errors
/// [`Error::Store`] when the store fails.
pub async fn stats(store: &dyn SessionStore, options: &ListOptions) -> Result<Vec<SceneCount>> {
    let mut groups: BTreeMap<(String, Option<i64>), (usize, i64)> = BTreeMap::new();
    for c in conversations(store, options).await? {
        let (Some(scene), Some(entered)) = (c.scene, c.entered_at) else {
            continue;
        };
        let group = groups.entry((scene, c.step)).or_insert((0, entered));
        group.0 += 1;
        group.1 = group.1.min(entered);
    }
    let mut out: Vec<SceneCount> = groups
        .into_iter()
        .map(|((scene, step), (users, oldest))| SceneCount {
            scene,
            step,
            users,
            oldest_entered_at: oldest,
        })
        .collect();
    out.sort_by(|a, b| {
        (a.oldest_entered_at, &a.scene, a.step).cmp(&(b.oldest_entered_at, &b.scene, b.step))
    });
    Ok(out)
}

/// The whole stored record of `key` as untyped JSON (`None`: there is none).
///
/// # Errors
/// [`Error::Store`] when the store fails; [`Error::Decode`] when the stored bytes are
/// not a session record.
pub async fn show(store: &dyn SessionStore, key: &str) -> Result<Option<Value>> {
    let Some(record) = store.load(key).await? else {
        return Ok(None);
    };
    decode_object(key, &record.bytes).map(|(map, _)| Some(Value::Object(map)))
}

/// What [`reset`] or [`delete`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// The record was changed (reset) or removed (delete).
    Done,
    /// There is no record of the key: nothing to do.
    NotFound,
}

/// Clears the scene stack of `key` and keeps the bot's data (and the session's
/// bookkeeping: recent update ids, replies not yet delivered): the user is outside any
/// scene on their next update. Written with compare-and-set under the key's lease (see
/// the [module](self) docs); the record keeps its codec.
///
/// # Errors
/// [`Error::LeaseTimeout`] when a running update kept the key's lease for
/// [`LEASE_WAIT`]; [`Error::Decode`] when the stored bytes are not a session record
/// (nothing is written); [`Error::Conflict`] when other writers kept changing the record;
/// [`Error::Store`] when the store fails.
pub async fn reset(store: &dyn SessionStore, key: &str) -> Result<Action> {
    reset_waiting(store, key, LEASE_WAIT).await
}

/// [`reset`], waiting at most `lease_wait` for the key's lease (`Duration::ZERO`: one
/// try).
///
/// # Errors
/// As [`reset`].
pub async fn reset_waiting(
    store: &dyn SessionStore,
    key: &str,
    lease_wait: Duration,
) -> Result<Action> {
    with_lease(store, key, lease_wait, async {
        for _ in 0..WRITE_ATTEMPTS {
            let Some(record) = store.load(key).await? else {
                return Ok(Action::NotFound);
            };
            let (map, codec) = decode_object(key, &record.bytes)?;
            let bytes = cleared(key, map, codec)?;
            match store.save(key, &bytes, Some(record.version)).await {
                Ok(_) => return Ok(Action::Done),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            key: key.to_owned(),
        })
    })
    .await
}

/// Removes the record of `key`: the user starts afresh, data and all. Deleted with
/// compare-and-set under the key's lease (see the [module](self) docs).
///
/// # Errors
/// [`Error::LeaseTimeout`] when a running update kept the key's lease for
/// [`LEASE_WAIT`]; [`Error::Conflict`] when other writers kept changing the record;
/// [`Error::Store`] when the store fails.
pub async fn delete(store: &dyn SessionStore, key: &str) -> Result<Action> {
    delete_waiting(store, key, LEASE_WAIT).await
}

/// [`delete`], waiting at most `lease_wait` for the key's lease (`Duration::ZERO`: one
/// try).
///
/// # Errors
/// As [`delete`].
pub async fn delete_waiting(
    store: &dyn SessionStore,
    key: &str,
    lease_wait: Duration,
) -> Result<Action> {
    with_lease(store, key, lease_wait, async {
        for _ in 0..WRITE_ATTEMPTS {
            let Some(record) = store.load(key).await? else {
                return Ok(Action::NotFound);
            };
            match store.delete(key, record.version).await {
                Ok(()) => return Ok(Action::Done),
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            key: key.to_owned(),
        })
    })
    .await
}

/// Runs `work` holding the lease of `key` when the store has leases, giving it back
/// whatever `work` answered.
async fn with_lease<T>(
    store: &dyn SessionStore,
    key: &str,
    wait: Duration,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    let Some(leases) = store.leases() else {
        return work.await;
    };
    let started = Instant::now();
    let mut pause = Duration::from_millis(20);
    let lease = loop {
        match leases.acquire_lease(key, LEASE_TTL).await? {
            LeaseAttempt::Acquired(lease) => break lease,
            LeaseAttempt::Busy if started.elapsed() < wait => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(500));
            }
            LeaseAttempt::Busy => {
                return Err(Error::LeaseTimeout {
                    key: key.to_owned(),
                    waited: started.elapsed(),
                });
            }
        }
    };
    let result = work.await;
    let released = leases.release_lease(&lease).await;
    let value = result?;
    released?;
    Ok(value)
}

/// The stored bytes of `key` as a JSON object, and the codec they were written with.
fn decode_object(key: &str, bytes: &[u8]) -> Result<(Map<String, Value>, Codec)> {
    let decode_err = |source| Error::Decode {
        key: key.to_owned(),
        source,
    };
    // `inspect` checks the plain fields' shapes (a stack of frames, update ids, ...).
    inspect(bytes).map_err(|e| with_key(e, key))?;
    match Codec::decode::<Value>(bytes).map_err(decode_err)? {
        Value::Object(map) => Ok((map, codec_of(bytes))),
        _ => Err(decode_err("the record is not an object".into())),
    }
}

/// The codec that wrote `bytes` (as [`Codec::decode`] tells them apart).
fn codec_of(bytes: &[u8]) -> Codec {
    #[cfg(feature = "msgpack")]
    if bytes
        .first()
        .is_some_and(|b| !b.is_ascii_whitespace() && *b != b'{' && *b != b'[')
    {
        return Codec::MsgPack;
    }
    let _ = bytes;
    Codec::Json
}

/// The record `map` without its scene stack, encoded with `codec` in the envelope's
/// field order (`v`, `data`, ..., `seen`, `outbox` last).
fn cleared(key: &str, mut map: Map<String, Value>, codec: Codec) -> Result<Vec<u8>> {
    #[derive(Serialize)]
    struct Envelope {
        #[serde(skip_serializing_if = "Option::is_none")]
        v: Option<Value>,
        data: Value,
        #[serde(flatten)]
        rest: Map<String, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        seen: Option<Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        outbox: Option<Value>,
    }
    map.remove("scenes");
    let envelope = Envelope {
        v: map.remove("v"),
        data: map.remove("data").unwrap_or(Value::Null),
        seen: map.remove("seen"),
        outbox: map.remove("outbox"),
        rest: map,
    };
    codec.encode(&envelope).map_err(|source| Error::Encode {
        key: key.to_owned(),
        source,
    })
}

/// `e` naming `key` when it is a decode error without one.
fn with_key(e: Error, key: &str) -> Error {
    match e {
        Error::Decode { key: k, source } if k.is_empty() => Error::Decode {
            key: key.to_owned(),
            source,
        },
        other => other,
    }
}

/// The system time, Unix seconds.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn frame(scene: &str, cursor: Option<i64>, at: i64, expires: Option<i64>) -> Value {
        let mut f = serde_json::json!({"scene": scene, "entered_at": at, "state": {"json": {}}});
        if let Some(c) = cursor {
            f["cursor"] = c.into();
        }
        if let Some(e) = expires {
            f["expires"] = e.into();
        }
        f
    }

    async fn put(store: &MemoryStore, key: &str, record: Value) {
        let bytes = serde_json::to_vec(&record).unwrap();
        store.save(key, &bytes, None).await.unwrap();
    }

    #[tokio::test]
    async fn lists_filters_and_counts_without_the_bot_types() {
        let store = MemoryStore::new();
        put(
            &store,
            "1:1",
            serde_json::json!({"v":1,"data":{},"scenes":[frame("signup", Some(1), 30, None)]}),
        )
        .await;
        put(
            &store,
            "2:2",
            serde_json::json!({"v":1,"data":{},"scenes":[frame("signup", Some(1), 10, None)]}),
        )
        .await;
        put(&store, "3:3", serde_json::json!({"v":1,"data":{},"scenes":[frame("profile", None, 20, None), frame("signup", Some(0), 25, None)]})).await;
        put(&store, "4:4", serde_json::json!({"v":1,"data":{"n":1}})).await;
        put(
            &store,
            "5:5",
            serde_json::json!({"v":1,"data":{},"scenes":[frame("profile", None, 5, Some(50))]}),
        )
        .await;
        store.save("6:6", b"\x00not a record", None).await.unwrap();
        store
            .save(&format!("{PROBE_PREFIX}x"), b"{}", None)
            .await
            .unwrap();

        let at = ListOptions::new().at(100);
        let list = conversations(&store, &at).await.unwrap();
        let keys: Vec<&str> = list.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["2:2", "3:3", "1:1"], "oldest first, active only");
        assert_eq!(list[1].stack, ["profile", "signup"]);
        assert_eq!((list[1].depth, list[1].step), (2, Some(0)));

        let all = conversations(&store, &at.clone().all(true)).await.unwrap();
        let keys: Vec<&str> = all.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["5:5", "2:2", "3:3", "1:1", "4:4", "6:6"]);
        assert!(all[0].expired);
        assert!(all[5].unreadable.as_deref().unwrap().contains("6:6"));

        let signup1 = conversations(&store, &at.clone().scene("signup").step(1))
            .await
            .unwrap();
        assert_eq!(signup1.len(), 2);
        assert!(
            conversations(&store, &at.clone().scene("nope"))
                .await
                .unwrap()
                .is_empty()
        );

        let counts = stats(&store, &at).await.unwrap();
        let rows: Vec<(&str, Option<i64>, usize, i64)> = counts
            .iter()
            .map(|c| (c.scene.as_str(), c.step, c.users, c.oldest_entered_at))
            .collect();
        assert_eq!(
            rows,
            [("signup", Some(1), 2, 10), ("signup", Some(0), 1, 25)]
        );
    }

    #[tokio::test]
    async fn reset_keeps_data_and_bookkeeping_and_delete_removes() {
        let store = MemoryStore::new();
        put(
            &store,
            "k",
            serde_json::json!({"v":1,"data":{"name":"Ann"},"scenes":[frame("signup", Some(2), 1, None)],
                "seen":[4,5],"extra":true}),
        )
        .await;
        assert_eq!(reset(&store, "k").await.unwrap(), Action::Done);
        let bytes = store.load("k").await.unwrap().unwrap().bytes;
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            r#"{"v":1,"data":{"name":"Ann"},"extra":true,"seen":[4,5]}"#
        );
        assert_eq!(reset(&store, "nobody").await.unwrap(), Action::NotFound);
        assert_eq!(delete(&store, "k").await.unwrap(), Action::Done);
        assert!(store.load("k").await.unwrap().is_none());
        assert!(show(&store, "k").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn bad_records_are_refused_untouched() {
        let store = MemoryStore::new();
        for (i, bytes) in [
            &b"\x00junk"[..],
            b"[1,2]",
            br#"{"v":1,"data":1,"scenes":"nope"}"#,
            br#"{"v":1,"data":1,"scenes":[{"cursor":1}]}"#,
        ]
        .into_iter()
        .enumerate()
        {
            let key = format!("bad{i}");
            let v = store.save(&key, bytes, None).await.unwrap();
            let err = reset(&store, &key).await.unwrap_err();
            assert!(
                matches!(&err, Error::Decode { key: k, .. } if *k == key),
                "{err:?}"
            );
            assert!(show(&store, &key).await.is_err());
            let still = store.load(&key).await.unwrap().unwrap();
            assert_eq!((still.bytes.as_slice(), still.version), (bytes, v));
        }
    }
}

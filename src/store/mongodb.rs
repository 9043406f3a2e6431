//! [`MongoStore`]: a server store on the official `mongodb` driver.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use ::mongodb::bson::spec::BinarySubtype;
use ::mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use ::mongodb::error::{ErrorKind, WriteFailure};
use ::mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use ::mongodb::{Client, Collection, Database, IndexModel};
use async_trait::async_trait;

use super::{
    CacheHint, Lease, LeaseAttempt, LeaseStore, ListFilter, PendingIndex, Preload, PurgeExpired,
    Record, SessionStore, Version, give_back,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Message, Result};

const BACKEND: &str = "mongodb";

/// The collection used when none is configured.
const DEFAULT_COLLECTION: &str = "stagecraft_sessions";

/// The database used when neither the options nor the URL name one.
const DEFAULT_DATABASE: &str = "stagecraft";

/// The name of the TTL index on `expires_at`.
const TTL_INDEX: &str = "stagecraft_expires_at";

/// The name of the sparse index on `p` (the due time of the record's pending work), in
/// the records' collection.
const PENDING_INDEX: &str = "stagecraft_pending";

/// How long `connect` waits for a connection, and every call for a usable server, unless
/// the URL says otherwise (`connectTimeoutMS`, `serverSelectionTimeoutMS`). The driver's
/// own default for the second is 30 s, so an unreachable server would hold each call for
/// that long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// MongoDB's error code for a duplicate key.
const DUPLICATE_KEY: i32 = 11000;

/// MongoDB's error code for a collection that does not exist.
const NAMESPACE_NOT_FOUND: i32 = 26;

/// The error codes of a server that does not know a command (`CommandNotFound`) or does
/// not support it (`CommandNotSupported`): how a server without `findAndModify` answers.
const UNKNOWN_COMMAND: [i32; 2] = [59, 115];

/// Whether the store takes a lease and reads the record with one `findAndModify`: not
/// known yet (it tries), known to work, or not to be used (the server does not have it,
/// or [`MongoStore::with_find_and_modify`] said so).
const FAM_UNKNOWN: u8 = 0;
const FAM_WORKS: u8 = 1;
const FAM_OFF: u8 = 2;

fn db_err(e: ::mongodb::error::Error) -> Error {
    Error::store(BACKEND, e)
}

fn malformed(key: &str, what: &str) -> Error {
    Error::store(
        BACKEND,
        Message(format!("stored record {key:?} is malformed: {what}")),
    )
}

/// The server's error code, when the error is one it answered with.
fn server_code(e: &::mongodb::error::Error) -> Option<i32> {
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(w)) => Some(w.code),
        ErrorKind::Command(c) => Some(c.code),
        _ => None,
    }
}

fn is_duplicate_key(e: &::mongodb::error::Error) -> bool {
    server_code(e) == Some(DUPLICATE_KEY)
}

/// Accepts 1 to 100 ASCII letters, digits, `_`, `-` or `.`, starting with a letter or
/// `_`, and not in MongoDB's reserved `system.` namespace.
fn validate_collection(name: &str) -> Result<()> {
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if first_ok && rest_ok && name.len() <= 100 && !name.starts_with("system.") {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "collection name {name:?} is not valid: use 1 to 100 ASCII letters, digits, `_`, `-` or `.`, \
             starting with a letter or `_` (and not `system.`)"
        )))
    }
}

/// Accepts a database name MongoDB takes on every platform: 1 to 63 ASCII letters,
/// digits, `_` or `-`.
fn validate_database(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::Config(format!(
            "database name {name:?} is not valid: use 1 to 63 ASCII letters, digits, `_` or `-`"
        )))
    }
}

/// The smallest string greater than every string that starts with `prefix`, in code
/// point order (which is UTF-8 byte order, MongoDB's order of strings without a
/// collation), or `None` when there is none (the empty prefix, or one of `U+10FFFF` only).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match u32::from(last) {
            0xD7FF => Some('\u{E000}'),
            n => char::from_u32(n + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A version as stored (`-1`, never stored, for versions no store hands out).
fn version_param(v: Version) -> i64 {
    i64::try_from(v.0).unwrap_or(-1)
}

fn ms_after(now_ms: i64, ttl: Duration) -> DateTime {
    let ttl_ms = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1);
    DateTime::from_millis(now_ms.saturating_add(ttl_ms))
}

/// The filter of documents that have not expired at `now`.
fn live(now: DateTime) -> Document {
    doc! { "$or": [ { "expires_at": { "$exists": false } }, { "expires_at": { "$gt": now } } ] }
}

/// The filter of documents whose lease is free at `now`: none, or an expired one.
fn lease_free(now: DateTime) -> Document {
    doc! { "$or": [
        { "lease_until": { "$exists": false } },
        { "lease_until": { "$lte": now } },
    ] }
}

/// The filter of documents whose lease is free at `now` or held by `token`.
fn lease_free_or_held(token: &str, now: DateTime) -> Document {
    doc! { "$or": [
        { "lease_until": { "$exists": false } },
        { "lease_until": { "$lte": now } },
        { "lease_token": token },
    ] }
}

/// The filter of documents holding a record, or record data of some kind: every one but
/// those holding a lease only (or nothing), [`no_record`].
fn has_record() -> Document {
    doc! { "$or": [ { "v": { "$exists": true } }, { "d": { "$exists": true } } ] }
}

/// The filter of documents holding no record (a lease only, or nothing): neither a
/// version nor record data. (A document with one and not the other was not written by
/// a store: it is never written over as if it held no record.)
fn no_record() -> Document {
    doc! { "v": { "$exists": false }, "d": { "$exists": false } }
}

/// The filter of the documents a new record may be written over at `now`: a document
/// holding a lease only, or an expired record (that the TTL monitor has not deleted yet).
fn no_live_record(now: DateTime) -> Document {
    doc! { "$or": [ no_record(), { "expires_at": { "$lte": now } } ] }
}

/// The lease fields of a document, as an update's `$unset` names them.
fn lease_fields() -> Document {
    doc! { "lease_token": "", "lease_until": "" }
}

/// Whether a document holds a lease only: no record fields, a lease date.
fn is_lease_only(doc: &Document) -> bool {
    !doc.contains_key("v") && !doc.contains_key("d") && doc.contains_key("lease_until")
}

/// What a stored record document holds, checked: `None` when it expired at `now`, or
/// holds a lease only.
fn decode(key: &str, doc: &Document, now_ms: i64) -> Result<Option<Record>> {
    if is_lease_only(doc) {
        return Ok(None);
    }
    match doc.get("expires_at") {
        None | Some(Bson::Null) => {}
        Some(Bson::DateTime(at)) => {
            if at.timestamp_millis() <= now_ms {
                return Ok(None);
            }
        }
        Some(_) => return Err(malformed(key, "`expires_at` is not a date")),
    }
    let bytes = match doc.get("d") {
        Some(Bson::Binary(b)) => b.bytes.clone(),
        Some(_) => return Err(malformed(key, "`d` is not binary data")),
        None => return Err(malformed(key, "it has no `d` field")),
    };
    let version = match doc.get("v") {
        Some(Bson::Int64(v)) => u64::try_from(*v).ok(),
        Some(Bson::Int32(v)) => u64::try_from(*v).ok(),
        Some(_) => return Err(malformed(key, "`v` is not an integer")),
        None => return Err(malformed(key, "it has no `v` field")),
    }
    .ok_or_else(|| malformed(key, "`v` is negative"))?;
    Ok(Some(Record {
        bytes,
        version: Version(version),
    }))
}

/// Options for [`MongoStore::connect_with`]: the database, the collection, whether the
/// store hands out leases and whether it may use `findAndModify`.
///
/// ```no_run
/// use stagecraft::store::{MongoOptions, MongoStore};
/// # async fn f() -> stagecraft::Result<()> {
/// let options = MongoOptions::new().database("bot").collection("bot_sessions");
/// // Creates (or finds) the indexes of `bot_sessions`, and touches no other collection.
/// let store = MongoStore::connect_with("mongodb://127.0.0.1:27017", options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MongoOptions {
    database: Option<String>,
    collection: String,
    leases: bool,
    find_and_modify: bool,
}

impl Default for MongoOptions {
    fn default() -> Self {
        Self {
            database: None,
            collection: DEFAULT_COLLECTION.to_owned(),
            leases: true,
            find_and_modify: true,
        }
    }
}

impl MongoOptions {
    /// The default options: the URL's database (or `stagecraft`), the collection
    /// `stagecraft_sessions`, leases on, `findAndModify` where the server has it.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The database to use, instead of the one the URL names (`mongodb://host/DB`), or
    /// `stagecraft` when it names none.
    #[must_use]
    pub fn database(mut self, database: impl Into<String>) -> Self {
        self.database = Some(database.into());
        self
    }

    /// The collection to keep sessions in (validated before connecting); the leases live
    /// in its documents too.
    #[must_use]
    pub fn collection(mut self, collection: impl Into<String>) -> Self {
        self.collection = collection.into();
        self
    }

    /// Whether the store hands out per-key leases (see [`MongoStore::with_leases`]).
    #[must_use]
    pub fn leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }

    /// Whether the store may take a lease and read the record in one `findAndModify`
    /// (default `true`; see [`MongoStore::with_find_and_modify`]).
    #[must_use]
    pub fn find_and_modify(mut self, on: bool) -> Self {
        self.find_and_modify = on;
        self
    }
}

/// A session store in a MongoDB collection (feature `mongodb`).
///
/// Tested against SecantusDB, a server speaking MongoDB's wire protocol, not against
/// MongoDB itself. It uses plain operations (`update_one`, `replace_one`, `delete_one`,
/// `find`, `createIndexes`) and, where the server has it, `findAndModify` (see
/// [`with_find_and_modify`](Self::with_find_and_modify)); no transactions and no update
/// pipelines.
///
/// One document per session (default collection `stagecraft_sessions`):
/// `{_id: key, d: <binary record>, v: <version, int64>, expires_at: <date>, p: <int64>,
/// lease_token, lease_until}`, where `expires_at` is there only with a TTL, `p` only
/// while the record holds undelivered replies or an armed timer: the Unix second its
/// work falls due ([`PendingIndex::save_pending`]; every other write removes it; a
/// sparse index on `p` lists them, earliest first), and the lease fields only while
/// someone holds (or held) the key's lease. Every save is an `update_one` that sets the
/// record's fields and leaves the lease's alone: of a new record, filtered on the
/// document holding no record (or an expired one) with `upsert`, a duplicate `_id` being
/// a conflict; of an existing record, filtered on `{_id, v: expected}` and the record
/// being live, checked through `matched_count`. [`delete`](SessionStore::delete) is
/// `delete_one` on `{_id, v}` and the lease being free (under a live lease, the record's
/// fields are removed and the lease kept). [`list`](SessionStore::list) is a range on
/// `_id` (`$gte` the prefix, `$lt` the first string after every string with it) of the
/// documents holding a record, so it uses the `_id` index; it assumes the collection has
/// no collation of its own, as one created by this store has not.
///
/// With a TTL ([`with_ttl`](Self::with_ttl)), every save sets `expires_at` to the save's
/// time plus the TTL, by the store's [`Clock`]. A TTL index on `expires_at`
/// (`expireAfterSeconds: 0`, created by [`migrate`](Self::migrate)) lets the server delete
/// expired documents by itself, but its monitor runs only every few seconds (once a
/// minute on MongoDB): until then, an expired record is invisible to every call, and
/// [`purge_expired`](Self::purge_expired) deletes them at once. The server deletes by its
/// own clock, so a custom clock should follow real time.
///
/// Leases (on by default, see [`with_leases`](Self::with_leases)) live in the record's
/// document: `lease_token` and `lease_until`. A key without a record yet gets a document
/// holding the lease only, `{_id, lease_token, lease_until, expires_at}` (with
/// `expires_at` the lease's end, so that the TTL index removes it if its holder dies),
/// which every read takes for "no record". Taking a lease is one `findAndModify` with
/// `upsert`, filtered on the document's lease being free, returning the document: the
/// lease and the record in one round trip
/// ([`acquire_lease_and_load`](LeaseStore::acquire_lease_and_load)). With no document
/// there, it inserts one holding the lease only; with a live lease there, the upsert
/// fails with a duplicate `_id`: the lease is busy. When the document it took holds no
/// live record (a dead holder's lease-only document, or an expired record), whose
/// `expires_at` has passed or will before the lease ends, a second operation replaces it
/// with a lease-only document whose `expires_at` is the lease's end. Saving and giving the lease back is one `update_one` that
/// sets the record and removes the lease, filtered on the lease being the writer's (or
/// free) besides the version ([`save_releasing`](SessionStore::save_releasing)); when
/// the lease is someone else's, a second one saves and leaves it alone. Renewing and
/// releasing are filtered on the token. Their time is the system clock of each process
/// (the server's `$$NOW` is not portable across the servers this was tried on), so the
/// clocks of the processes sharing a store must agree to well within a lease's TTL.
/// Older versions kept leases in the collection `{collection}_lease`, which this store
/// no longer reads (see [`lease_collection`](Self::lease_collection)).
///
/// ```no_run
/// use std::time::Duration;
/// use stagecraft::store::MongoStore;
/// # async fn f() -> stagecraft::Result<()> {
/// let store = MongoStore::connect("mongodb://127.0.0.1:27017/bot")
///     .await?
///     .with_ttl(Duration::from_secs(30 * 24 * 3600));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MongoStore {
    database: Database,
    records: Collection<Document>,
    legacy_leases: String,
    ttl_ms: Option<i64>,
    clock: Arc<dyn Clock>,
    leases: bool,
    /// Whether `findAndModify` is used ([`FAM_UNKNOWN`], [`FAM_WORKS`] or [`FAM_OFF`]),
    /// shared by the clones of a store.
    find_and_modify: Arc<AtomicU8>,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.database.name())
            .field("collection", &self.records.name())
            .field("ttl_ms", &self.ttl_ms)
            .field("leases", &self.leases)
            .field(
                "find_and_modify",
                &(self.find_and_modify.load(Ordering::Relaxed) != FAM_OFF),
            )
            .finish_non_exhaustive()
    }
}

impl MongoStore {
    /// Connects to `url` (`mongodb://[user:password@]host[:port][/database][?options]`)
    /// and creates the indexes of the collection `stagecraft_sessions` if needed: the same as [`connect_with`](Self::connect_with)
    /// with the default [`MongoOptions`].
    ///
    /// Unless the URL sets `connectTimeoutMS` and `serverSelectionTimeoutMS`, both are
    /// 5 s (the driver's default for the second is 30 s): while the server is down, each
    /// call fails after at most that long, with the driver's error naming the cause.
    ///
    /// ```no_run
    /// use stagecraft::store::MongoStore;
    /// # async fn f() -> stagecraft::Result<()> {
    /// // The database `bot`, the collection `stagecraft_sessions`.
    /// let store = MongoStore::connect("mongodb://bot:secret@127.0.0.1:27017/bot").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Store`] when the URL is invalid, the server cannot be reached or the
    /// indexes cannot be created.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_with(url, MongoOptions::default()).await
    }

    /// Connects like [`connect`](Self::connect) and creates the indexes of the
    /// collection of `options` if needed, touching no other collection.
    ///
    /// ```no_run
    /// use stagecraft::store::{MongoOptions, MongoStore};
    /// # async fn f() -> stagecraft::Result<()> {
    /// let options = MongoOptions::new().collection("mybot").leases(false);
    /// let store = MongoStore::connect_with("mongodb://127.0.0.1:27017/bot", options).await?;
    /// assert_eq!(store.collection(), "mybot");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] for an invalid collection or database name (before
    /// connecting); [`Error::Store`] when the URL is invalid, the server cannot be
    /// reached or the indexes cannot be created.
    pub async fn connect_with(url: &str, options: MongoOptions) -> Result<Self> {
        validate_collection(&options.collection)?;
        if let Some(db) = &options.database {
            validate_database(db)?;
        }
        let mut client_options = ClientOptions::parse(url).await.map_err(db_err)?;
        client_options
            .connect_timeout
            .get_or_insert(CONNECT_TIMEOUT);
        client_options
            .server_selection_timeout
            .get_or_insert(CONNECT_TIMEOUT);
        let database = match options.database {
            Some(db) => db,
            None => {
                let db = client_options
                    .default_database
                    .clone()
                    .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
                validate_database(&db)?;
                db
            }
        };
        let client = Client::with_options(client_options).map_err(db_err)?;
        let store = Self::new(client.database(&database))
            .with_collection(&options.collection)?
            .with_leases(options.leases)
            .with_find_and_modify(options.find_and_modify);
        store.migrate().await?;
        Ok(store)
    }

    /// A store on a database handle you made yourself (from a [`Client`] you
    /// configured), using the collection `stagecraft_sessions`. Does no I/O: call
    /// [`migrate`](Self::migrate) to create the indexes.
    ///
    /// ```no_run
    /// use stagecraft::store::MongoStore;
    /// use stagecraft::store::mongodb::{Client, options::ClientOptions};
    /// # async fn f() -> stagecraft::Result<()> {
    /// let err = |e| stagecraft::Error::store("mongodb", e);
    /// let mut options = ClientOptions::parse("mongodb://127.0.0.1:27017").await.map_err(err)?;
    /// options.max_pool_size = Some(50);
    /// let client = Client::with_options(options).map_err(err)?;
    /// let store = MongoStore::new(client.database("bot")).with_collection("bot_sessions")?;
    /// store.migrate().await?;
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn new(database: Database) -> Self {
        let records = database.collection(DEFAULT_COLLECTION);
        Self {
            database,
            records,
            legacy_leases: format!("{DEFAULT_COLLECTION}_lease"),
            ttl_ms: None,
            clock: Arc::new(SystemClock),
            leases: true,
            find_and_modify: Arc::new(AtomicU8::new(FAM_UNKNOWN)),
        }
    }

    /// Uses the collection `collection` (1 to 100 ASCII letters, digits, `_`, `-` or
    /// `.`, starting with a letter or `_`), for the records and their leases. Call
    /// [`migrate`](Self::migrate) afterwards if its indexes may not exist yet.
    ///
    /// ```
    /// use stagecraft::store::{MongoStore, mongodb::Client};
    /// # async fn f() -> stagecraft::Result<()> {
    /// # let client = Client::with_uri_str("mongodb://127.0.0.1:27017").await
    /// #     .map_err(|e| stagecraft::Error::store("mongodb", e))?;
    /// let store = MongoStore::new(client.database("bot")).with_collection("mybot")?;
    /// assert_eq!(store.collection(), "mybot");
    /// assert!(MongoStore::new(client.database("bot")).with_collection("system.users").is_err());
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Config`] when the name is not valid.
    pub fn with_collection(mut self, collection: &str) -> Result<Self> {
        validate_collection(collection)?;
        self.records = self.database.collection(collection);
        self.legacy_leases = format!("{collection}_lease");
        Ok(self)
    }

    /// Whether this store hands out per-key leases (default `true`). With `false`,
    /// [`leases`](SessionStore::leases) is `None`, so a pipeline on it takes no leases
    /// and relies on compare-and-set alone. (The store's [`LeaseStore`] methods, called
    /// on it directly, still take leases.)
    #[must_use]
    pub fn with_leases(mut self, on: bool) -> Self {
        self.leases = on;
        self
    }

    /// Whether the store may take a lease and read the record in one `findAndModify`
    /// (default `true`). With `true`, the first take of a lease tries it, and when the
    /// server answers that it does not know the command (`CommandNotFound` or
    /// `CommandNotSupported`), the store (and its clones) remembers it and takes leases
    /// with `update_one` and reads with `find` from then on: three round trips per
    /// update instead of two. With `false`, it never uses `findAndModify`.
    ///
    /// ```
    /// use stagecraft::store::{MongoStore, mongodb::Client};
    /// # async fn f() -> stagecraft::Result<()> {
    /// # let client = Client::with_uri_str("mongodb://127.0.0.1:27017").await
    /// #     .map_err(|e| stagecraft::Error::store("mongodb", e))?;
    /// // For a server whose `findAndModify` should not be relied on.
    /// let store = MongoStore::new(client.database("bot")).with_find_and_modify(false);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn with_find_and_modify(mut self, on: bool) -> Self {
        let state = if on { FAM_UNKNOWN } else { FAM_OFF };
        self.find_and_modify = Arc::new(AtomicU8::new(state));
        self
    }

    /// Records expire `ttl` after their last save (at least 1 ms).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1));
        self
    }

    /// Reads time from `clock` (for record TTLs) instead of the system clock. The
    /// server's TTL monitor deletes by its own clock, so `clock` should follow real
    /// time; leases always use the system clock.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The database handle.
    #[must_use]
    pub fn database(&self) -> &Database {
        &self.database
    }

    /// The collection name.
    #[must_use]
    pub fn collection(&self) -> &str {
        self.records.name()
    }

    /// The name of the collection older versions kept the leases in
    /// (`{collection}_lease`). This store keeps them in the records' documents and
    /// neither reads nor writes that collection; once no process of an older version
    /// runs, it can be dropped (leases left there have expired by then).
    #[deprecated(
        note = "leases live in the records' documents; this is the collection older versions used"
    )]
    #[must_use]
    pub fn lease_collection(&self) -> &str {
        &self.legacy_leases
    }

    /// Creates the TTL index on `expires_at` and the sparse index on `p` (the due time
    /// of pending work) of the collection, where they are not there (idempotent). When
    /// both exist it only lists them, so a user that may not create indexes can run it.
    /// Many processes may run it at once: when creating fails because another one
    /// created the index (or the collection) meanwhile, it looks again.
    ///
    /// Record documents of older versions (without lease fields) need no change. The
    /// leases' collection of older versions (`{collection}_lease`) is left alone: its
    /// own TTL index removes the leases in it, and it can be dropped once no process of
    /// an older version runs.
    ///
    /// # Errors
    /// [`Error::Store`] when the server fails, or an index of the same name exists with
    /// other keys or options.
    #[tracing::instrument(skip_all, fields(collection = %self.collection()), err)]
    pub async fn migrate(&self) -> Result<()> {
        ensure_index(&self.records, ttl_index()).await?;
        ensure_index(&self.records, pending_index()).await?;
        // Replies an earlier layout marked pending (`p: true`) are due at once.
        self.records
            .update_many(doc! { "p": true }, doc! { "$set": { "p": 0_i64 } })
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Deletes every expired record now and returns how many were deleted (documents
    /// holding only an expired lease, of holders that died, are deleted too, uncounted).
    /// An expired record whose lease is still held stays until its lease is free.
    ///
    /// The server's TTL monitor deletes them too, only later; expired records are
    /// invisible meanwhile. The same as [`PurgeExpired::purge_expired`], without
    /// importing the trait.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use stagecraft::store::MongoStore;
    /// # async fn f() -> stagecraft::Result<()> {
    /// let store = MongoStore::connect("mongodb://127.0.0.1:27017/bot")
    ///     .await?
    ///     .with_ttl(Duration::from_secs(7 * 24 * 3600));
    /// let removed = store.purge_expired().await?;
    /// println!("{removed} expired sessions removed");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Store`] when the server fails.
    #[tracing::instrument(skip_all, fields(collection = %self.collection()), err)]
    pub async fn purge_expired(&self) -> Result<u64> {
        let now = DateTime::from_millis(self.clock.now_ms());
        let lease_now = DateTime::from_millis(SystemClock.now_ms());
        let mut expired = doc! { "v": { "$exists": true }, "expires_at": { "$lte": now } };
        expired.extend(lease_free(lease_now));
        let purged = self
            .records
            .delete_many(expired)
            .await
            .map_err(db_err)?
            .deleted_count;
        let mut dead_lease = no_record();
        dead_lease.insert("lease_until", doc! { "$lte": lease_now });
        self.records.delete_many(dead_lease).await.map_err(db_err)?;
        Ok(purged)
    }

    /// The update that writes a record (all fields but `_id`), with the due time `p` of
    /// its pending work when it has some: `$set` of the record's fields, `$unset` of
    /// those it has not (`p`, and `expires_at` without a TTL) and, with `release`, of
    /// the lease. Without `release` the lease fields are left as they are.
    fn record_update(
        &self,
        bytes: &[u8],
        version: Version,
        now_ms: i64,
        due: Option<i64>,
        release: bool,
    ) -> Document {
        let mut set = doc! {
            "d": Binary { subtype: BinarySubtype::Generic, bytes: bytes.to_vec() },
            "v": version_param(version),
        };
        let mut unset = Document::new();
        if let Some(due) = due {
            set.insert("p", due);
        } else {
            unset.insert("p", "");
        }
        if let Some(ttl) = self.ttl_ms {
            set.insert(
                "expires_at",
                DateTime::from_millis(now_ms.saturating_add(ttl)),
            );
        } else {
            unset.insert("expires_at", "");
        }
        if release {
            unset.extend(lease_fields());
        }
        // Without an empty `$unset`, which older servers refuse.
        let mut update = doc! { "$set": set };
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        update
    }

    /// One `update_one` of `key` on the filters `and`, with `upsert` when `upsert`:
    /// whether it matched (or inserted) the document. A duplicate `_id` (the upsert
    /// found a document the filters do not match) is `false`.
    async fn update_matched(
        &self,
        key: &str,
        and: Vec<Document>,
        update: Document,
        upsert: bool,
    ) -> Result<bool> {
        let filter = doc! { "_id": key, "$and": and };
        match self.records.update_one(filter, update).upsert(upsert).await {
            Ok(r) => Ok(r.matched_count == 1 || r.upserted_id.is_some()),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(db_err(e)),
        }
    }

    /// A compare-and-set write of the record (see [`SessionStore::save`]), due at `due`
    /// or not (every write without `due` unmarks the key). With `lease`, the write
    /// removes the lease too when it is `lease`'s (or free): one round trip; when the
    /// lease is someone else's (or the version is not `expected`), a second write
    /// without the release tells which, leaving the lease alone.
    async fn write(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        lease: Option<&Lease>,
    ) -> Result<Version> {
        let now_ms = self.clock.now_ms();
        let now = DateTime::from_millis(now_ms);
        let version = expected.map_or_else(Version::initial, Version::next);
        // Which documents the record may be written over: none there, one holding a
        // lease only or an expired record (a new record), or the expected version of a
        // live record.
        let record = match expected {
            None => no_live_record(now),
            Some(expected) => {
                let mut filter = doc! { "v": version_param(expected) };
                filter.extend(live(now));
                filter
            }
        };
        let upsert = expected.is_none();
        if let Some(lease) = lease {
            let lease_now = DateTime::from_millis(SystemClock.now_ms());
            let and = vec![record.clone(), lease_free_or_held(lease.token(), lease_now)];
            let update = self.record_update(bytes, version, now_ms, due, true);
            if self.update_matched(key, and, update, upsert).await? {
                return Ok(version);
            }
        }
        let update = self.record_update(bytes, version, now_ms, due, false);
        if self
            .update_matched(key, vec![record], update, upsert)
            .await?
        {
            Ok(version)
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
    }

    /// Removes the record of `key` at version `expected` from a document whose lease is
    /// live (or was a moment ago), keeping the lease: the document then holds the lease
    /// only, until its end. Reads the document first (for its lease) and tries again
    /// when it changed meanwhile.
    async fn delete_keeping_lease(&self, key: &str, expected: Version) -> Result<()> {
        for _ in 0..3 {
            let now_ms = self.clock.now_ms();
            let Some(found) = self
                .records
                .find_one(doc! { "_id": key })
                .await
                .map_err(db_err)?
            else {
                return Ok(());
            };
            let Some(record) = decode(key, &found, now_ms)? else {
                // Gone or expired already: deleting it succeeds.
                return Ok(());
            };
            if record.version != expected {
                return Err(Error::Conflict {
                    key: key.to_owned(),
                });
            }
            let token = found.get("lease_token").cloned().unwrap_or(Bson::Null);
            let until = found.get("lease_until").cloned().unwrap_or(Bson::Null);
            // Exactly this document (its version and lease), so that a lease taken or
            // given back meanwhile is not lost.
            let filter = doc! {
                "_id": key,
                "v": version_param(expected),
                "lease_token": token,
                "lease_until": until.clone(),
            };
            let lease_now = SystemClock.now_ms();
            let done = match until {
                Bson::DateTime(at) if at.timestamp_millis() > lease_now => {
                    self.records
                        .update_one(
                            filter,
                            doc! {
                                "$unset": { "d": "", "v": "", "p": "" },
                                "$set": { "expires_at": at },
                            },
                        )
                        .await
                        .map_err(db_err)?
                        .matched_count
                }
                Bson::DateTime(_) | Bson::Null => {
                    self.records
                        .delete_one(filter)
                        .await
                        .map_err(db_err)?
                        .deleted_count
                }
                _ => return Err(malformed(key, "`lease_until` is not a date")),
            };
            if done == 1 {
                return Ok(());
            }
        }
        Err(Error::Conflict {
            key: key.to_owned(),
        })
    }

    /// Takes the lease of `key` and, with `load`, reads the record: one `findAndModify`
    /// with `upsert` on the lease being free (where the server has it and it is not
    /// switched off), else an `update_one` and a `find` (none for a document the
    /// `update_one` inserted). A duplicate `_id` means a live lease is there: busy. When
    /// the lease went on a document that holds no live record (a dead holder's, or an
    /// expired record), a `replace_one` on the new token makes it a lease-only document
    /// with the lease's end as its `expires_at` (so that the TTL monitor does not delete
    /// it under the lease); when the monitor deleted it first, it takes the lease again.
    async fn take(&self, key: &str, ttl: Duration, load: bool) -> Result<(LeaseAttempt, Preload)> {
        // What the caller gets read: the record when it asked for it.
        let preload = |record| {
            if load {
                Preload::Read(record)
            } else {
                Preload::NotRead
            }
        };
        for _ in 0..3 {
            let lease = Lease::generate(key);
            let lease_ms = SystemClock.now_ms();
            let until = ms_after(lease_ms, ttl);
            let now_ms = self.clock.now_ms();
            // The take's filter and update (built again for the fallback, which is rare).
            let take = || {
                let mut filter = doc! { "_id": key };
                filter.extend(lease_free(DateTime::from_millis(lease_ms)));
                let update = doc! {
                    "$set": { "lease_token": lease.token(), "lease_until": until },
                    "$setOnInsert": { "expires_at": until },
                };
                (filter, update)
            };
            let mut found = None;
            let mut read = false;
            if self.find_and_modify.load(Ordering::Relaxed) != FAM_OFF {
                let (filter, update) = take();
                let taken = self
                    .records
                    .find_one_and_update(filter, update)
                    .upsert(true)
                    .return_document(ReturnDocument::After)
                    .await;
                match taken {
                    Ok(doc) => {
                        self.find_and_modify.store(FAM_WORKS, Ordering::Relaxed);
                        (found, read) = (doc, true);
                    }
                    Err(e) if is_duplicate_key(&e) => {
                        return Ok((LeaseAttempt::Busy, Preload::NotRead));
                    }
                    Err(e)
                        if server_code(&e).is_some_and(|c| UNKNOWN_COMMAND.contains(&c))
                            && self.find_and_modify.load(Ordering::Relaxed) == FAM_UNKNOWN =>
                    {
                        tracing::info!(target: "stagecraft::store", collection = %self.collection(),
                            error = %e, "the server has no findAndModify; taking leases with update_one and find");
                        self.find_and_modify.store(FAM_OFF, Ordering::Relaxed);
                    }
                    Err(e) => return Err(db_err(e)),
                }
            }
            if !read {
                let (filter, update) = take();
                match self.records.update_one(filter, update).upsert(true).await {
                    // Inserted: a document holding the lease only, as the take wrote it.
                    Ok(r) if r.upserted_id.is_some() => {
                        return Ok((LeaseAttempt::Acquired(lease), preload(None)));
                    }
                    Ok(_) => {}
                    Err(e) if is_duplicate_key(&e) => {
                        return Ok((LeaseAttempt::Busy, Preload::NotRead));
                    }
                    Err(e) => return Err(db_err(e)),
                }
                found = self
                    .records
                    .find_one(doc! { "_id": key })
                    .await
                    .map_err(db_err)?;
            }
            let Some(doc) = found else {
                if read {
                    // No document after an upsert: nothing to read the record from.
                    return Ok((LeaseAttempt::Acquired(lease), Preload::NotRead));
                }
                // Deleted between the take and the read (by the TTL monitor, the
                // document having held no live record): take it again.
                continue;
            };
            match decode(key, &doc, now_ms) {
                Ok(Some(record)) => {
                    return Ok((LeaseAttempt::Acquired(lease), preload(Some(record))));
                }
                // A document the store cannot read is left for `load` to report.
                Err(_) => return Ok((LeaseAttempt::Acquired(lease), Preload::NotRead)),
                Ok(None) => {}
            }
            let fresh = is_lease_only(&doc)
                && matches!(doc.get("expires_at"), Some(Bson::DateTime(at)) if *at == until);
            if !fresh {
                let replaced = self
                    .records
                    .replace_one(
                        doc! { "_id": key, "lease_token": lease.token() },
                        doc! { "lease_token": lease.token(), "lease_until": until, "expires_at": until },
                    )
                    .await
                    .map_err(db_err)?;
                if replaced.matched_count == 0 {
                    continue;
                }
            }
            return Ok((LeaseAttempt::Acquired(lease), preload(None)));
        }
        Err(Error::store(
            BACKEND,
            Message(format!(
                "the document of {key:?} was deleted under every lease taken on it"
            )),
        ))
    }
}

/// The TTL index on `expires_at`: the server deletes a document once that date passed.
fn ttl_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { "expires_at": 1 })
        .options(
            IndexOptions::builder()
                .name(TTL_INDEX.to_owned())
                .expire_after(Duration::ZERO)
                .build(),
        )
        .build()
}

/// The sparse index on `p`: it holds the marked records only.
fn pending_index() -> IndexModel {
    IndexModel::builder()
        .keys(doc! { "p": 1 })
        .options(
            IndexOptions::builder()
                .name(PENDING_INDEX.to_owned())
                .sparse(true)
                .build(),
        )
        .build()
}

/// Creates the index `model` in `coll` unless one of its name is there; see
/// [`MongoStore::migrate`].
async fn ensure_index(coll: &Collection<Document>, model: IndexModel) -> Result<()> {
    let name = model
        .options
        .as_ref()
        .and_then(|o| o.name.clone())
        .unwrap_or_default();
    let mut tries = 0;
    loop {
        tries += 1;
        match coll.list_index_names().await {
            Ok(names) if names.contains(&name) => return Ok(()),
            Ok(_) => {}
            // No collection yet: creating the index creates it.
            Err(e) if server_code(&e) == Some(NAMESPACE_NOT_FOUND) => {}
            Err(e) => return Err(db_err(e)),
        }
        match coll.create_index(model.clone()).await {
            Ok(_) => return Ok(()),
            // Another process creating the collection or the index at the same time
            // (the server answered, refusing): look again.
            Err(e) if matches!(e.kind.as_ref(), ErrorKind::Command(_)) && tries < 3 => {
                tracing::debug!(target: "stagecraft::store", collection = %coll.name(),
                    index = %name, error = %e, "creating an index failed; looking again");
            }
            Err(e) => return Err(db_err(e)),
        }
    }
}

#[async_trait]
impl SessionStore for MongoStore {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn cache_hint(&self) -> Option<CacheHint> {
        CacheHint::from_ttl_ms(self.ttl_ms, &self.clock, false)
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn load(&self, key: &str) -> Result<Option<Record>> {
        let now = self.clock.now_ms();
        let found = self
            .records
            .find_one(doc! { "_id": key })
            .await
            .map_err(db_err)?;
        match found {
            Some(doc) => decode(key, &doc, now),
            None => Ok(None),
        }
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        self.write(key, bytes, expected, None, None).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        let lease_now = DateTime::from_millis(SystemClock.now_ms());
        let mut filter = doc! { "_id": key, "v": version_param(expected) };
        filter.extend(lease_free(lease_now));
        let deleted = self.records.delete_one(filter).await.map_err(db_err)?;
        if deleted.deleted_count == 1 {
            return Ok(());
        }
        // Not deleted: gone (or expired), another version (a conflict), or under a live
        // lease, which is kept.
        self.delete_keeping_lease(key, expected).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save_releasing(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        lease: &Lease,
    ) -> Result<Version> {
        self.write(key, bytes, expected, due, Some(lease)).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete_releasing(&self, key: &str, expected: Version, lease: &Lease) -> Result<()> {
        let lease_now = DateTime::from_millis(SystemClock.now_ms());
        // The record at `expected` (or none: a lease only), under `lease` or none.
        let deleted = self
            .records
            .delete_one(doc! {
                "_id": key,
                "$and": [
                    { "$or": [ { "v": version_param(expected) }, no_record() ] },
                    lease_free_or_held(lease.token(), lease_now),
                ],
            })
            .await
            .map_err(db_err)?;
        if deleted.deleted_count == 1 {
            return Ok(());
        }
        // Another version (a conflict, the lease kept), someone else's lease (kept), or
        // an expired record: as `delete`, then the lease given back.
        self.delete(key, expected).await?;
        give_back(self, lease).await;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(prefix = %filter.prefix), err(level = "debug"))]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        if limit == 0 {
            return Ok(keys);
        }
        let now = DateTime::from_millis(self.clock.now_ms());
        let mut range = doc! { "$gte": filter.prefix.as_str() };
        if let Some(end) = prefix_end(&filter.prefix) {
            range.insert("$lt", end);
        }
        let mut query = doc! { "_id": range, "v": { "$exists": true } };
        query.extend(live(now));
        let mut cursor = self
            .records
            .find(query)
            .projection(doc! { "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(db_err)?;
        while cursor.advance().await.map_err(db_err)? {
            // A document whose `_id` is not a string was not written by a store.
            let Ok(key) = cursor.current().get_str("_id") else {
                continue;
            };
            if key.starts_with(&filter.prefix) {
                keys.push(key.to_owned());
                if keys.len() >= limit {
                    break;
                }
            }
        }
        Ok(keys)
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        self.leases.then_some(self as &dyn LeaseStore)
    }

    fn purge(&self) -> Option<&dyn PurgeExpired> {
        Some(self)
    }

    fn pending(&self) -> Option<&dyn PendingIndex> {
        Some(self)
    }
}

#[async_trait]
impl PendingIndex for MongoStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save_pending(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: i64,
    ) -> Result<Version> {
        self.write(key, bytes, expected, Some(due), None).await
    }

    #[tracing::instrument(skip_all, err(level = "debug"))]
    async fn pending_keys(&self, due_by: i64, limit: usize) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        if limit == 0 {
            return Ok(keys);
        }
        let now = DateTime::from_millis(self.clock.now_ms());
        let mut query = doc! { "p": { "$lte": due_by } };
        query.extend(live(now));
        let mut cursor = self
            .records
            .find(query)
            .sort(doc! { "p": 1 })
            .projection(doc! { "_id": 1 })
            .limit(i64::try_from(limit).unwrap_or(i64::MAX))
            .await
            .map_err(db_err)?;
        while cursor.advance().await.map_err(db_err)? {
            if let Ok(key) = cursor.current().get_str("_id") {
                keys.push(key.to_owned());
                if keys.len() >= limit {
                    break;
                }
            }
        }
        Ok(keys)
    }
}

#[async_trait]
impl PurgeExpired for MongoStore {
    async fn purge_expired(&self) -> Result<u64> {
        MongoStore::purge_expired(self).await
    }
}

#[async_trait]
impl LeaseStore for MongoStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt> {
        Ok(self.take(key, ttl, false).await?.0)
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<(LeaseAttempt, Preload)> {
        self.take(key, ttl, true).await
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let now_ms = SystemClock.now_ms();
        let now = DateTime::from_millis(now_ms);
        let until = ms_after(now_ms, ttl);
        let held = |record: Document| {
            let mut filter = doc! {
                "_id": lease.key(),
                "lease_token": lease.token(),
                "lease_until": { "$gt": now },
            };
            filter.extend(record);
            filter
        };
        // On a record (its `expires_at` is the record's), else on a document holding
        // the lease only (its `expires_at` follows the lease).
        let renewed = self
            .records
            .update_one(
                held(has_record()),
                doc! { "$set": { "lease_until": until } },
            )
            .await
            .map_err(db_err)?;
        if renewed.matched_count == 1 {
            return Ok(true);
        }
        let renewed = self
            .records
            .update_one(
                held(no_record()),
                doc! { "$set": { "lease_until": until, "expires_at": until } },
            )
            .await
            .map_err(db_err)?;
        Ok(renewed.matched_count == 1)
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        // From a record's document, else the document holding the lease only.
        let mut filter = doc! { "_id": lease.key(), "lease_token": lease.token() };
        filter.extend(has_record());
        let released = self
            .records
            .update_one(filter, doc! { "$unset": lease_fields() })
            .await
            .map_err(db_err)?;
        if released.matched_count == 1 {
            return Ok(true);
        }
        let mut filter = doc! { "_id": lease.key(), "lease_token": lease.token() };
        filter.extend(no_record());
        let released = self.records.delete_one(filter).await.map_err(db_err)?;
        Ok(released.deleted_count == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends() {
        assert_eq!(prefix_end(""), None);
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end("ab").as_deref(), Some("ac"));
        assert_eq!(prefix_end("a\u{D7FF}").as_deref(), Some("a\u{E000}"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{10FFFF}\u{10FFFF}"), None);
        for p in ["", "a", "x:y", "ключ", "🦀", "a\u{10FFFF}"] {
            if let Some(end) = prefix_end(p) {
                for k in [p.to_owned(), format!("{p}\0"), format!("{p}\u{10FFFF}z")] {
                    assert!(
                        k.as_str() >= p && k.as_str() < end.as_str(),
                        "{k:?} in {p:?}"
                    );
                }
                assert!(!end.starts_with(p), "{end:?}");
            }
        }
    }

    #[test]
    fn names() {
        for ok in ["s", "_s", "bot_sessions", "a.b-c", &"c".repeat(100)] {
            assert!(validate_collection(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1a", "a b", "a$b", "system.x", "a\0", &"c".repeat(101)] {
            assert!(
                matches!(validate_collection(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
        assert!(validate_database("bot-1").is_ok());
        for bad in ["", "a.b", "a/b", "a b", &"d".repeat(64)] {
            assert!(
                matches!(validate_database(bad), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn malformed_documents_are_errors() {
        let now = 1_000;
        let bin = |b: &[u8]| Binary {
            subtype: BinarySubtype::Generic,
            bytes: b.to_vec(),
        };
        for bad in [
            doc! {},
            doc! { "d": "text", "v": 1_i64 },
            doc! { "d": bin(b"x") },
            doc! { "d": bin(b"x"), "v": "1" },
            doc! { "d": bin(b"x"), "v": -1_i64 },
            doc! { "d": bin(b"x"), "v": 1_i64, "expires_at": 5 },
        ] {
            let err = decode("k", &bad, now).expect_err("malformed");
            assert!(err.is_store(), "{err:?}");
        }
        let ok = doc! { "d": bin(b"x"), "v": 7_i32 };
        assert_eq!(
            decode("k", &ok, now).unwrap(),
            Some(Record {
                bytes: b"x".to_vec(),
                version: Version(7)
            })
        );
        let expired = doc! { "d": bin(b"x"), "v": 7_i64, "expires_at": DateTime::from_millis(now) };
        assert_eq!(decode("k", &expired, now).unwrap(), None);
    }

    #[test]
    fn lease_only_documents_hold_no_record() {
        let now = 1_000;
        let until = DateTime::from_millis(now + 10_000);
        // A lease only: no record, whatever its `expires_at`.
        for at in [now - 1, now + 10_000] {
            let lease_only = doc! {
                "lease_token": "t", "lease_until": until, "expires_at": DateTime::from_millis(at),
            };
            assert!(is_lease_only(&lease_only));
            assert_eq!(decode("k", &lease_only, now).unwrap(), None);
        }
        // A record under a lease reads as the record.
        let leased = doc! {
            "d": Binary { subtype: BinarySubtype::Generic, bytes: b"x".to_vec() },
            "v": 3_i64, "lease_token": "t", "lease_until": until,
        };
        assert!(!is_lease_only(&leased));
        assert_eq!(
            decode("k", &leased, now).unwrap(),
            Some(Record {
                bytes: b"x".to_vec(),
                version: Version(3)
            })
        );
        // Lease fields beside half a record are not a lease-only document.
        let half = doc! { "d": "x", "lease_until": until };
        assert!(!is_lease_only(&half));
        assert!(decode("k", &half, now).is_err());
    }
}

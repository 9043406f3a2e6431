//! [`MongoStore`]: a server store on the official `mongodb` driver.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ::mongodb::bson::spec::BinarySubtype;
use ::mongodb::bson::{Binary, Bson, DateTime, Document, doc};
use ::mongodb::error::{ErrorKind, WriteFailure};
use ::mongodb::options::{ClientOptions, IndexOptions};
use ::mongodb::{Client, Collection, Database, IndexModel};
use async_trait::async_trait;

use super::{
    CacheHint, Lease, LeaseAttempt, LeaseStore, ListFilter, PendingIndex, PurgeExpired, Record,
    SessionStore, Version,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Message, Result};

const BACKEND: &str = "mongodb";

/// The collection used when none is configured.
const DEFAULT_COLLECTION: &str = "stagecraft_sessions";

/// The database used when neither the options nor the URL name one.
const DEFAULT_DATABASE: &str = "stagecraft";

/// The name of the TTL index on `expires_at`, in both collections.
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

/// What a stored record document holds, checked: `None` when it expired at `now`.
fn decode(key: &str, doc: &Document, now_ms: i64) -> Result<Option<Record>> {
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

/// Options for [`MongoStore::connect_with`]: the database, the collection and whether
/// the store hands out leases.
///
/// ```no_run
/// use stagecraft::store::{MongoOptions, MongoStore};
/// # async fn f() -> stagecraft::Result<()> {
/// let options = MongoOptions::new().database("bot").collection("bot_sessions");
/// // Creates (or finds) the TTL indexes of `bot_sessions` and `bot_sessions_lease`, and
/// // touches no other collection.
/// let store = MongoStore::connect_with("mongodb://127.0.0.1:27017", options).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MongoOptions {
    database: Option<String>,
    collection: String,
    leases: bool,
}

impl Default for MongoOptions {
    fn default() -> Self {
        Self {
            database: None,
            collection: DEFAULT_COLLECTION.to_owned(),
            leases: true,
        }
    }
}

impl MongoOptions {
    /// The default options: the URL's database (or `stagecraft`), the collection
    /// `stagecraft_sessions`, leases on.
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

    /// The collection to keep sessions in (validated before connecting); its leases live
    /// in `{collection}_lease`.
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
}

/// A session store in a MongoDB collection (feature `mongodb`).
///
/// Tested against SecantusDB, a server speaking MongoDB's wire protocol, not against
/// MongoDB itself. It uses only plain operations (`insert_one`, `replace_one`,
/// `update_one`, `delete_one`, `find`, `createIndexes`), no transactions and no
/// `findAndModify`.
///
/// One document per session (default collection `stagecraft_sessions`):
/// `{_id: key, d: <binary record>, v: <version, int64>, expires_at: <date>, p: <int64>}`,
/// where `expires_at` is there only with a TTL, and `p` only while the record holds
/// undelivered replies or an armed timer: the Unix second its work falls due
/// ([`PendingIndex::save_pending`]; every other write replaces the document without it;
/// a sparse index on `p` lists them, earliest first). [`save`](SessionStore::save) of a new record is
/// `insert_one`, a duplicate `_id` being a conflict (unless the document there has
/// expired: it is then replaced, on a filter that it is still expired); a save of an
/// existing record is `replace_one` filtered on `{_id, v: expected}` and the record being
/// live, checked through `matched_count`. [`delete`](SessionStore::delete) is `delete_one`
/// on `{_id, v}`. [`list`](SessionStore::list) is a range on `_id` (`$gte` the prefix,
/// `$lt` the first string after every string with it), so it uses the `_id` index; it
/// assumes the collection has no collation of its own, as one created by this store has
/// not.
///
/// With a TTL ([`with_ttl`](Self::with_ttl)), every save sets `expires_at` to the save's
/// time plus the TTL, by the store's [`Clock`]. A TTL index on `expires_at`
/// (`expireAfterSeconds: 0`, created by [`migrate`](Self::migrate)) lets the server delete
/// expired documents by itself, but its monitor runs only every few seconds (once a
/// minute on MongoDB): until then, an expired record is invisible to every call, and
/// [`purge_expired`](Self::purge_expired) deletes them at once. The server deletes by its
/// own clock, so a custom clock should follow real time.
///
/// Leases (on by default, see [`with_leases`](Self::with_leases)) live in the collection
/// `{collection}_lease`: `{_id: key, token, expires_at}`. Taking one is a single
/// `update_one` with `upsert`, filtered on `{_id, expires_at <= now}`: it replaces an
/// expired lease, inserts a missing one, and fails with a duplicate `_id` (the lease is
/// busy) when a live one is there. Renewing and releasing are filtered on the token.
/// Their time is the system clock of each process (the server's `$$NOW` is not portable
/// across the servers this was tried on), so the clocks of the processes sharing a
/// store must agree to well within a lease's TTL. The TTL index removes the leases of
/// holders that died.
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
    lease_docs: Collection<Document>,
    ttl_ms: Option<i64>,
    clock: Arc<dyn Clock>,
    leases: bool,
}

impl fmt::Debug for MongoStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MongoStore")
            .field("database", &self.database.name())
            .field("collection", &self.records.name())
            .field("ttl_ms", &self.ttl_ms)
            .field("leases", &self.leases)
            .finish_non_exhaustive()
    }
}

impl MongoStore {
    /// Connects to `url` (`mongodb://[user:password@]host[:port][/database][?options]`)
    /// and creates the TTL indexes of the collection `stagecraft_sessions` and of its
    /// leases' collection if needed: the same as [`connect_with`](Self::connect_with)
    /// with the default [`MongoOptions`].
    ///
    /// Unless the URL sets `connectTimeoutMS` and `serverSelectionTimeoutMS`, both are
    /// 5 s (the driver's default for the second is 30 s): while the server is down, each
    /// call fails after at most that long, with the driver's error naming the cause.
    ///
    /// ```no_run
    /// use stagecraft::store::MongoStore;
    /// # async fn f() -> stagecraft::Result<()> {
    /// // The database `bot`; the collections `stagecraft_sessions` and its `_lease`.
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

    /// Connects like [`connect`](Self::connect) and creates the TTL indexes of the
    /// collection of `options` and of its leases' collection if needed, touching no
    /// other collection.
    ///
    /// ```no_run
    /// use stagecraft::store::{MongoOptions, MongoStore};
    /// # async fn f() -> stagecraft::Result<()> {
    /// let options = MongoOptions::new().collection("mybot").leases(false);
    /// let store = MongoStore::connect_with("mongodb://127.0.0.1:27017/bot", options).await?;
    /// assert_eq!(store.lease_collection(), "mybot_lease");
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
            .with_leases(options.leases);
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
        let lease_docs = database.collection(&format!("{DEFAULT_COLLECTION}_lease"));
        Self {
            database,
            records,
            lease_docs,
            ttl_ms: None,
            clock: Arc::new(SystemClock),
            leases: true,
        }
    }

    /// Uses the collection `collection` (1 to 100 ASCII letters, digits, `_`, `-` or
    /// `.`, starting with a letter or `_`) and `{collection}_lease` for its leases. Call
    /// [`migrate`](Self::migrate) afterwards if their indexes may not exist yet.
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
        self.lease_docs = self.database.collection(&format!("{collection}_lease"));
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

    /// The name of the leases' collection (`{collection}_lease`).
    #[must_use]
    pub fn lease_collection(&self) -> &str {
        self.lease_docs.name()
    }

    /// Creates the TTL index on `expires_at` of the collection and of the leases'
    /// collection, and the sparse index on `p` (the due time of pending work) of the
    /// collection, where they are not there (idempotent). When all three exist it only
    /// lists them, so a user that may not create indexes can run it. Many processes
    /// may run it at once: when creating fails because another one created the index
    /// (or the collection) meanwhile, it looks again.
    ///
    /// # Errors
    /// [`Error::Store`] when the server fails, or an index of the same name exists with
    /// other keys or options.
    #[tracing::instrument(skip_all, fields(collection = %self.collection()), err)]
    pub async fn migrate(&self) -> Result<()> {
        ensure_index(&self.records, ttl_index()).await?;
        ensure_index(&self.records, pending_index()).await?;
        ensure_index(&self.lease_docs, ttl_index()).await?;
        // Replies an earlier layout marked pending (`p: true`) are due at once.
        self.records
            .update_many(doc! { "p": true }, doc! { "$set": { "p": 0_i64 } })
            .await
            .map_err(db_err)?;
        Ok(())
    }

    /// Deletes every expired record now and returns how many were deleted (expired
    /// leases, of holders that died, are deleted too, uncounted).
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
        let purged = self
            .records
            .delete_many(doc! { "expires_at": { "$lte": now } })
            .await
            .map_err(db_err)?
            .deleted_count;
        let lease_now = DateTime::from_millis(SystemClock.now_ms());
        self.lease_docs
            .delete_many(doc! { "expires_at": { "$lte": lease_now } })
            .await
            .map_err(db_err)?;
        Ok(purged)
    }

    /// The fields of a saved record (all but `_id`), with the due time `p` of its
    /// pending work when it has some.
    fn body(&self, bytes: &[u8], version: Version, now_ms: i64, due: Option<i64>) -> Document {
        let mut body = doc! {
            "d": Binary { subtype: BinarySubtype::Generic, bytes: bytes.to_vec() },
            "v": version_param(version),
        };
        if let Some(due) = due {
            body.insert("p", due);
        }
        if let Some(ttl) = self.ttl_ms {
            body.insert(
                "expires_at",
                DateTime::from_millis(now_ms.saturating_add(ttl)),
            );
        }
        body
    }

    /// A compare-and-set write of the record (see [`SessionStore::save`]), due at `due`
    /// or not: the replacement document carries `p` only when `due` is set, so every
    /// other write unmarks the key.
    async fn write(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
    ) -> Result<Version> {
        let now_ms = self.clock.now_ms();
        let now = DateTime::from_millis(now_ms);
        let version = expected.map_or_else(Version::initial, Version::next);
        let body = self.body(bytes, version, now_ms, due);

        let filter = match expected {
            None => {
                let mut full = doc! { "_id": key };
                full.extend(body.clone());
                match self.records.insert_one(full).await {
                    Ok(_) => return Ok(version),
                    Err(e) if is_duplicate_key(&e) => {}
                    Err(e) => return Err(db_err(e)),
                }
                // A document is there: a new record only replaces one that expired (and
                // that the TTL monitor has not deleted yet).
                doc! { "_id": key, "expires_at": { "$lte": now } }
            }
            Some(expected) => {
                let mut filter = doc! { "_id": key, "v": version_param(expected) };
                filter.extend(live(now));
                filter
            }
        };
        let replaced = self
            .records
            .replace_one(filter, body)
            .await
            .map_err(db_err)?;
        if replaced.matched_count == 1 {
            Ok(version)
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
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
        self.write(key, bytes, expected, None).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        let deleted = self
            .records
            .delete_one(doc! { "_id": key, "v": version_param(expected) })
            .await
            .map_err(db_err)?;
        if deleted.deleted_count == 1 {
            return Ok(());
        }
        // Not deleted: fine when the record is gone (or expired), a conflict otherwise.
        if self.load(key).await?.is_none() {
            Ok(())
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
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
        let mut query = doc! { "_id": range };
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
        self.write(key, bytes, expected, Some(due)).await
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
        let lease = Lease::generate(key);
        let now_ms = SystemClock.now_ms();
        let now = DateTime::from_millis(now_ms);
        let taken = self
            .lease_docs
            .update_one(
                doc! { "_id": key, "expires_at": { "$lte": now } },
                doc! { "$set": { "token": lease.token(), "expires_at": ms_after(now_ms, ttl) } },
            )
            .upsert(true)
            .await;
        match taken {
            Ok(r) => Ok(LeaseAttempt::taken(
                r.matched_count == 1 || r.upserted_id.is_some(),
                lease,
            )),
            // A live lease is there: the upsert tried to insert a second `_id`.
            Err(e) if is_duplicate_key(&e) => Ok(LeaseAttempt::Busy),
            Err(e) => Err(db_err(e)),
        }
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let now_ms = SystemClock.now_ms();
        let now = DateTime::from_millis(now_ms);
        let renewed = self
            .lease_docs
            .update_one(
                doc! { "_id": lease.key(), "token": lease.token(), "expires_at": { "$gt": now } },
                doc! { "$set": { "expires_at": ms_after(now_ms, ttl) } },
            )
            .await
            .map_err(db_err)?;
        Ok(renewed.matched_count == 1)
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let released = self
            .lease_docs
            .delete_one(doc! { "_id": lease.key(), "token": lease.token() })
            .await
            .map_err(db_err)?;
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
}

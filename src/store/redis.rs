//! [`RedisStore`]: a server store on redis-rs, over a connection manager (one server)
//! or a cluster connection (Redis Cluster).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClientBuilder;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{Client, Cmd, Pipeline, RedisFuture, Script, Value};
use async_trait::async_trait;

use super::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, PendingIndex, Preload, Record, SessionStore,
    Version,
};
use crate::error::{Error, Message, Result};

const BACKEND: &str = "redis";

/// The default key prefix.
const DEFAULT_PREFIX: &str = "stagecraft:";

static SAVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/save.lua")));
static DELETE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/delete.lua")));
static LEASE_RENEW: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/lease_renew.lua")));
static LEASE_RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/lease_release.lua")));
static PENDING_KEYS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("queries/redis/pending_keys.lua")));

/// How many buckets a store on Redis Cluster spreads its sessions over. Each bucket is a
/// hash tag (`{b0}` … `{b63}`), so one slot: a session's record, lease and entry in the
/// index of due work share its bucket's slot (each script stays on one node, atomic),
/// and each bucket has its own index of due work, which
/// [`pending_keys`](PendingIndex::pending_keys) reads all of (64 scripts, sent
/// concurrently). 64 slots spread over the masters of a small or middle-sized cluster
/// (3 to about 16 masters) well enough, and keep that poll cheap. The count is part of
/// the key layout: changing it would strand every session stored under the old one.
const CLUSTER_BUCKETS: u32 = 64;

/// What follows the store prefix in the key of the index of due work (a sorted set of
/// session keys, scored by due time): `{prefix}\0due`. The NUL keeps it out of
/// [`SessionStore::list`].
const PENDING_MARK: &str = "\0due";

/// What follows the store prefix in a lease's key: `{prefix}\0lease:{key}`. The NUL keeps
/// leases apart from session keys (and out of [`SessionStore::list`]).
const LEASE_MARK: &str = "\0lease:";

/// The key of the index of due work of the store prefix `prefix`.
fn pending_key_of(prefix: &str) -> Arc<str> {
    Arc::from(format!("{prefix}{PENDING_MARK}"))
}

/// The bucket of a session key on Redis Cluster: FNV-1a (32 bits) of its bytes, modulo
/// [`CLUSTER_BUCKETS`]. Part of the key layout, so it never changes.
fn bucket_of(key: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in key.as_bytes() {
        hash ^= u32::from(*byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash % CLUSTER_BUCKETS
}

/// What follows the prefix in every key of bucket `bucket`: its hash tag, `{b<N>}`.
fn bucket_tag(bucket: u32) -> String {
    format!("{{b{bucket}}}")
}

/// The node URLs of a cluster URL (`redis-cluster://[user:password@]host:port,host:port`,
/// `rediss-cluster://` for TLS), or `None` for another URL.
fn cluster_nodes(url: &str) -> Result<Option<Vec<String>>> {
    let (scheme, rest) = if let Some(rest) = url.strip_prefix("redis-cluster://") {
        ("redis", rest)
    } else if let Some(rest) = url.strip_prefix("rediss-cluster://") {
        ("rediss", rest)
    } else {
        return Ok(None);
    };
    let bad = |why: &str| {
        Error::store(
            BACKEND,
            Message(format!(
                "invalid Redis Cluster URL {:?}: {why}",
                super::redact_url(url)
            )),
        )
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, rest),
    };
    let hosts = hosts.strip_suffix('/').unwrap_or(hosts);
    if hosts.contains(['/', '?', '#']) {
        return Err(bad(
            "a cluster has no database number and this URL takes no parameters",
        ));
    }
    let mut nodes = Vec::new();
    for host in hosts.split(',').map(str::trim) {
        if host.is_empty() {
            return Err(bad("an empty node address"));
        }
        nodes.push(match userinfo {
            Some(userinfo) => format!("{scheme}://{userinfo}@{host}"),
            None => format!("{scheme}://{host}"),
        });
    }
    Ok(Some(nodes))
}

/// A record from its `d` and `v` fields.
fn record(key: &str, bytes: Option<Vec<u8>>, version: Option<Vec<u8>>) -> Result<Option<Record>> {
    match (bytes, version) {
        (None, None) => Ok(None),
        (Some(bytes), Some(version)) => {
            let version = std::str::from_utf8(&version)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    Error::store(
                        BACKEND,
                        Message(format!(
                            "stored version {:?} is not a number",
                            String::from_utf8_lossy(&version)
                        )),
                    )
                })?;
            Ok(Some(Record {
                bytes,
                version: Version(version),
            }))
        }
        _ => Err(Error::store(
            BACKEND,
            Message(format!("record {key:?} lacks its data or version field")),
        )),
    }
}

fn ttl_param(ttl: Duration) -> u64 {
    super::capped_ttl_ms(ttl).max(1)
}

fn redis_err(e: ::redis::RedisError) -> Error {
    Error::store(BACKEND, e)
}

fn validate_prefix(prefix: &str, cluster: bool) -> Result<()> {
    if cluster && prefix.contains(['{', '}']) {
        return Err(Error::Config(format!(
            "Redis key prefix {prefix:?} contains a brace: on Redis Cluster the store's hash tag follows the prefix, which must have none"
        )));
    }
    let bad = prefix
        .chars()
        .find(|c| c.is_whitespace() || matches!(c, '*' | '?' | '[' | ']' | '\\'));
    if let Some(c) = bad {
        return Err(Error::Config(format!(
            "Redis key prefix {prefix:?} contains {c:?}: whitespace and glob characters are not allowed"
        )));
    }
    if prefix.len() > 64 {
        return Err(Error::Config(format!(
            "Redis key prefix {prefix:?} is longer than 64 bytes"
        )));
    }
    Ok(())
}

/// `s` with the characters `SCAN MATCH` treats specially escaped.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^' | '-') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The connection a [`RedisStore`] talks through: a [`ConnectionManager`] to one server,
/// or a [`ClusterConnection`] to a Redis Cluster (which routes each command to the
/// master of its key's slot, follows `MOVED` and `ASK` redirections and refreshes its
/// map of slots when the cluster changes). Clones share their connections. It is a
/// [`ConnectionLike`], so commands of your own run on it:
///
/// ```no_run
/// use stagecraft::store::RedisStore;
/// # async fn f() -> stagecraft::Result<()> {
/// let store = RedisStore::connect("redis-cluster://10.0.0.1:7000,10.0.0.2:7000").await?;
/// let mut conn = store.connection().clone();
/// let keys: i64 = stagecraft::store::redis::cmd("DBSIZE")
///     .query_async(&mut conn) // summed over the masters on a cluster
///     .await
///     .expect("dbsize");
/// # let _ = keys;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub enum RedisConnection {
    /// One server (or a server behind a proxy), through a connection manager.
    Standalone(ConnectionManager),
    /// A Redis Cluster.
    Cluster(ClusterConnection),
}

impl fmt::Debug for RedisConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standalone(_) => f.write_str("RedisConnection::Standalone"),
            Self::Cluster(_) => f.write_str("RedisConnection::Cluster"),
        }
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Standalone(conn) => conn.req_packed_command(cmd),
            Self::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Standalone(conn) => conn.req_packed_commands(cmd, offset, count),
            Self::Cluster(conn) => conn.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Standalone(conn) => conn.get_db(),
            Self::Cluster(conn) => conn.get_db(),
        }
    }
}

/// A session store in Redis (feature `redis`), on one server or on a Redis Cluster.
///
/// Each session is a hash with the fields `d` (the record) and `v` (its version).
/// [`save`](SessionStore::save) and [`delete`](SessionStore::delete) are Lua scripts
/// (run with `EVALSHA`, loaded on first use, on each node of a cluster), so the version
/// check and the write are one atomic step on the server.
/// [`list`](SessionStore::list) walks `SCAN MATCH` (on every master of a cluster) and
/// strips the store's prefix; it is O(keys in the database), meant for maintenance, not
/// per update.
///
/// With a TTL ([`with_ttl`](Self::with_ttl)), every save sets `PEXPIRE`, so Redis itself
/// drops a record `ttl` after its last save, by the server's clock (no `purge` needed).
///
/// Leases (on by default, see [`with_leases`](Self::with_leases)): the lease of a key is
/// a string holding the holder's random token, taken with `SET … NX PX ttl`, renewed
/// (`PEXPIRE`) and released (`DEL`) by Lua scripts that first check the token. Redis
/// expires it by itself when its holder dies.
///
/// # Key layout
///
/// On one server (`redis://`, `rediss://`), with the prefix `P` (`stagecraft:` by
/// default):
///
/// | key | what |
/// |---|---|
/// | `P<key>` | the session's record (a hash) |
/// | `P\0lease:<key>` | its lease |
/// | `P\0due` | the index of due work of the whole prefix (a sorted set of session keys, scored by due time) |
///
/// On Redis Cluster (`redis-cluster://`, [`new_cluster`](Self::new_cluster)) a script
/// may only touch keys of one slot, so every key of a session carries the hash tag of
/// its *bucket*, `{b<N>}` right after the prefix (before any text of the session key,
/// whose own braces then do not count), with `N` = FNV-1a of the session key modulo
/// 64:
///
/// | key | what |
/// |---|---|
/// | `P{b<N>}<key>` | the session's record |
/// | `P{b<N>}\0lease:<key>` | its lease |
/// | `P{b<N>}\0due` | the index of due work of bucket `N` |
///
/// So a session's record, lease and index entry share one slot, and the 64 buckets
/// spread sessions over 64 slots (so over the masters that hold them).
/// [`pending_keys`](PendingIndex::pending_keys) reads the 64 indexes concurrently and
/// merges them in due order. A prefix on Redis Cluster may not contain `{` or `}`.
/// The two layouts differ: a store moved from one server to a cluster does not find
/// the sessions of the server (copy them with [`list`](SessionStore::list),
/// [`load`](SessionStore::load) and [`save`](SessionStore::save)).
/// [`record_key`](Self::record_key), [`lease_key`](Self::lease_key) and
/// [`due_index_key`](Self::due_index_key) name the keys of a session.
///
/// # Failover on Redis Cluster
///
/// When a master dies, the commands for its slots fail with an [`Error::Store`] (the
/// cluster client retries 4 times, within about a second, then returns the error) until
/// the cluster promotes one of its replicas (after `cluster-node-timeout` and an
/// election); the cluster client then finds the new master by itself (`MOVED`, a
/// refresh of its map of slots) and service comes back without a restart. Redis
/// replicates asynchronously: a save acknowledged by the old master in the last moment
/// before it died may not have reached the replica, and is then lost with it (so the
/// session is back at its previous version: the next update of that chat runs on the
/// older state). [`with_replica_acks`](Self::with_replica_acks) closes that window, at
/// a cost in throughput.
///
/// ```no_run
/// use stagecraft::store::RedisStore;
/// # async fn f() -> stagecraft::Result<()> {
/// let store = RedisStore::connect("redis://127.0.0.1:6379").await?.with_prefix("mybot:")?;
/// let cluster = RedisStore::connect("redis-cluster://10.0.0.1:7000,10.0.0.2:7000,10.0.0.3:7000")
///     .await?
///     .with_prefix("mybot:")?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    prefix: Arc<str>,
    /// The key of the index of due work on one server, `{prefix}\0due`.
    pending_key: Arc<str>,
    ttl_ms: Option<u64>,
    leases: bool,
    /// `WAIT` after each write: this many replicas, at most this many milliseconds.
    replica_acks: Option<(u32, u64)>,
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("cluster", &self.is_cluster())
            .field("prefix", &self.prefix)
            .field("ttl_ms", &self.ttl_ms)
            .field("leases", &self.leases)
            .field("replica_acks", &self.replica_acks)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects to `url`: one server with `redis://[:password@]host[:port][/db]`
    /// (`rediss://` with TLS features of `redis` enabled), through a
    /// [`ConnectionManager`] that reconnects on its own; a Redis Cluster with
    /// `redis-cluster://[user:password@]host:port[,host:port...]` (`rediss-cluster://`
    /// with TLS), through a [`ClusterConnection`] that learns the cluster's other nodes
    /// from the ones named.
    ///
    /// On one server, a connection attempt times out after 5 s and is not retried by
    /// the manager: while the server is down each call fails with the connection's
    /// error (refused, timed out), and the first call after the server answers again
    /// reconnects. (With the manager's own retries, every call waited for the retry
    /// schedule, 1 s then 2 s, and service came back only when the schedule did, seconds
    /// after the server.) Build the [`ConnectionManager`] yourself and use
    /// [`new`](Self::new) for another policy.
    ///
    /// On a cluster, a connection attempt times out after 5 s, a reply after 5 s, and a
    /// command that fails on a connection error or a redirection is retried 4 times
    /// within about a second (refreshing the map of slots) before its error is
    /// returned: a call for the slots of a dead master fails fast instead of waiting
    /// for the failover. Use [`new_cluster`](Self::new_cluster) for another policy.
    ///
    /// # Errors
    /// [`Error::Store`] when the URL is invalid or the server (no node of the cluster)
    /// does not answer.
    pub async fn connect(url: &str) -> Result<Self> {
        if let Some(nodes) = cluster_nodes(url)? {
            let client = ClusterClientBuilder::new(nodes)
                .connection_timeout(Duration::from_secs(5))
                .response_timeout(Duration::from_secs(5))
                .retries(4)
                .min_retry_wait(20)
                .max_retry_wait(200)
                .build()
                .map_err(redis_err)?;
            let conn = client.get_async_connection().await.map_err(redis_err)?;
            return Ok(Self::new_cluster(conn));
        }
        let client = Client::open(url).map_err(redis_err)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Duration::from_secs(5))
            .set_number_of_retries(0);
        let conn = ConnectionManager::new_with_config(client, config)
            .await
            .map_err(redis_err)?;
        Ok(Self::new(conn))
    }

    /// A store on a connection manager you built yourself, with the prefix `stagecraft:`.
    #[must_use]
    pub fn new(conn: ConnectionManager) -> Self {
        Self::on(RedisConnection::Standalone(conn))
    }

    /// A store on a Redis Cluster connection you built yourself (with
    /// [`ClusterClientBuilder`](::redis::cluster::ClusterClientBuilder)), with the
    /// prefix `stagecraft:` and the cluster's key layout (see the type's documentation).
    #[must_use]
    pub fn new_cluster(conn: ClusterConnection) -> Self {
        Self::on(RedisConnection::Cluster(conn))
    }

    fn on(conn: RedisConnection) -> Self {
        Self {
            conn,
            prefix: Arc::from(DEFAULT_PREFIX),
            pending_key: pending_key_of(DEFAULT_PREFIX),
            ttl_ms: None,
            leases: true,
            replica_acks: None,
        }
    }

    /// Whether this store is on a Redis Cluster (and uses its key layout).
    #[must_use]
    pub fn is_cluster(&self) -> bool {
        matches!(self.conn, RedisConnection::Cluster(_))
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

    /// Keeps records under `prefix` instead of `stagecraft:` (at most 64 bytes, no
    /// whitespace, no `*?[]\`; on Redis Cluster no `{}` either).
    ///
    /// # Errors
    /// [`Error::Config`] when the prefix is not valid.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        validate_prefix(prefix, self.is_cluster())?;
        self.prefix = Arc::from(prefix);
        self.pending_key = pending_key_of(prefix);
        Ok(self)
    }

    /// Waits after each write of a record ([`save`](SessionStore::save),
    /// [`save_pending`](PendingIndex::save_pending), [`delete`](SessionStore::delete))
    /// until `replicas` replicas of its master have it, for at most `timeout`: Redis
    /// `WAIT`, sent with the script in one round trip (a pipeline on the connection of
    /// the key's master). A write that fewer replicas confirmed in time is applied on the
    /// master but returned as an [`Error::Store`] saying so, since a failover could
    /// still lose it. Without it (the default) a write is acknowledged once the master
    /// has it, and replication is asynchronous: a failover can lose the writes of the
    /// last moment before the master died (see the type's documentation).
    ///
    /// `WAIT` holds the connection to that master until the replicas answer (or the
    /// timeout), so the other commands multiplexed on it wait too: each write costs a
    /// replication round trip, and writes to one master are confirmed a batch at a
    /// time. Keep `timeout` under the connection's reply timeout (5 s with
    /// [`connect`](Self::connect) on a cluster). Leases are not waited for (a lease lost in a failover lets a second holder
    /// in early, and compare-and-set still stops its write from overwriting a newer one).
    #[must_use]
    pub fn with_replica_acks(mut self, replicas: u32, timeout: Duration) -> Self {
        let timeout_ms = u64::try_from(timeout.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.replica_acks = (replicas > 0).then_some((replicas, timeout_ms));
        self
    }

    /// Runs the write script `script` on `keys` and `args`, followed by `WAIT` when
    /// replica acknowledgements are on; the script's reply.
    async fn run_write(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Vec<u8>>,
    ) -> Result<i64> {
        let mut conn = self.conn.clone();
        let Some((replicas, timeout_ms)) = self.replica_acks else {
            let mut invocation = script.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            for arg in args {
                invocation.arg(arg);
            }
            return invocation.invoke_async(&mut conn).await.map_err(redis_err);
        };
        let mut evalsha = ::redis::cmd("EVALSHA");
        evalsha
            .arg(script.get_hash())
            .arg(keys.len())
            .arg(&keys[..])
            .arg(&args[..]);
        let mut pipe = ::redis::pipe();
        pipe.add_command(evalsha)
            .cmd("WAIT")
            .arg(replicas)
            .arg(timeout_ms);
        let mut loaded = false;
        let (written, acked): (i64, i64) = loop {
            match pipe.query_async(&mut conn).await {
                Ok(reply) => break reply,
                Err(e) if e.kind() == ::redis::ErrorKind::NoScriptError && !loaded => {
                    script
                        .prepare_invoke()
                        .load_async(&mut conn)
                        .await
                        .map_err(redis_err)?;
                    loaded = true;
                }
                Err(e) => return Err(redis_err(e)),
            }
        };
        if written == 1 && acked < i64::from(replicas) {
            return Err(Error::store(
                BACKEND,
                Message(format!(
                    "the write is on the master, but {acked} of the {replicas} replicas asked for confirmed it within {timeout_ms} ms (a failover could lose it)"
                )),
            ));
        }
        Ok(written)
    }

    /// Records expire `ttl` after their last save (Redis `PEXPIRE`, server time;
    /// at least 1 ms).
    #[must_use]
    pub fn with_ttl(mut self, ttl: Duration) -> Self {
        self.ttl_ms = Some(ttl_param(ttl));
        self
    }

    /// The key prefix.
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The connection (clones share it): run commands of your own on it.
    #[must_use]
    pub fn connection(&self) -> &RedisConnection {
        &self.conn
    }

    /// What comes before the session key in its record's key: the prefix, and on a
    /// cluster the hash tag of the key's bucket.
    fn base(&self, key: &str, extra: usize) -> String {
        let mut full = String::with_capacity(self.prefix.len() + 6 + extra);
        full.push_str(&self.prefix);
        if self.is_cluster() {
            full.push_str(&bucket_tag(bucket_of(key)));
        }
        full
    }

    /// The Redis key of the record of the session `key`: `{prefix}{key}` on one
    /// server, `{prefix}{b<N>}{key}` on a cluster.
    #[must_use]
    pub fn record_key(&self, key: &str) -> String {
        let mut full = self.base(key, key.len());
        full.push_str(key);
        full
    }

    /// The Redis key of the lease of the session `key`: `{prefix}\0lease:{key}` on one
    /// server, `{prefix}{b<N>}\0lease:{key}` on a cluster.
    #[must_use]
    pub fn lease_key(&self, key: &str) -> String {
        let mut full = self.base(key, LEASE_MARK.len() + key.len());
        full.push_str(LEASE_MARK);
        full.push_str(key);
        full
    }

    /// The Redis key of the index of due work that holds the session `key`:
    /// `{prefix}\0due` on one server (one index for the prefix), `{prefix}{b<N>}\0due`
    /// on a cluster (one per bucket).
    #[must_use]
    pub fn due_index_key(&self, key: &str) -> String {
        if !self.is_cluster() {
            return self.pending_key.to_string();
        }
        let mut full = self.base(key, PENDING_MARK.len());
        full.push_str(PENDING_MARK);
        full
    }

    /// A compare-and-set save, putting the key in the index of due work at `due` or
    /// taking it out (`None`), and giving `release` back once written (same script).
    async fn write(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: Option<i64>,
        release: Option<&Lease>,
    ) -> Result<Version> {
        let version = expected.map_or_else(Version::initial, Version::next);
        let expected = expected.map(|v| v.0.to_string()).unwrap_or_default();
        let mut keys = vec![self.record_key(key), self.due_index_key(key)];
        let mut args = vec![
            bytes.to_vec(),
            expected.into_bytes(),
            version.0.to_string().into_bytes(),
            self.ttl_ms.unwrap_or(0).to_string().into_bytes(),
            key.as_bytes().to_vec(),
            due.map(|d| d.to_string()).unwrap_or_default().into_bytes(),
        ];
        if let Some(lease) = release {
            keys.push(self.lease_key(lease.key()));
            args.push(lease.token().as_bytes().to_vec());
        }
        let written = self.run_write(&SAVE, keys, args).await?;
        if written == 1 {
            Ok(version)
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
    }

    /// A compare-and-set delete, giving `release` back once the record is gone (same
    /// script).
    async fn remove(&self, key: &str, expected: Version, release: Option<&Lease>) -> Result<()> {
        let mut keys = vec![self.record_key(key), self.due_index_key(key)];
        let mut args = vec![expected.0.to_string().into_bytes(), key.as_bytes().to_vec()];
        if let Some(lease) = release {
            keys.push(self.lease_key(lease.key()));
            args.push(lease.token().as_bytes().to_vec());
        }
        let gone = self.run_write(&DELETE, keys, args).await?;
        if gone == 1 {
            Ok(())
        } else {
            Err(Error::Conflict {
                key: key.to_owned(),
            })
        }
    }

    /// The session key in the full Redis key `full`, when it is a record of this store
    /// whose key starts with `filter` (not a lease, not an index, not a foreign key).
    fn listed_key<'k>(&self, full: &'k str, filter: &str) -> Option<&'k str> {
        let rest = full.strip_prefix(&*self.prefix)?;
        let key = if self.is_cluster() {
            let (digits, key) = rest.strip_prefix("{b")?.split_once('}')?;
            let bucket: u32 = digits.parse().ok()?;
            // Only the store's own spelling of the tag, and the key's own bucket.
            if digits != bucket.to_string() || bucket_of(key) != bucket {
                return None;
            }
            key
        } else {
            rest
        };
        if key.starts_with(LEASE_MARK) || key == PENDING_MARK || !key.starts_with(filter) {
            return None;
        }
        Some(key)
    }

    /// The `SCAN MATCH` pattern of the records whose key starts with `filter`.
    fn scan_pattern(&self, filter: &str) -> String {
        if self.is_cluster() {
            format!(
                "{}{{b*}}{}*",
                glob_escape(&self.prefix),
                glob_escape(filter)
            )
        } else {
            format!("{}{}*", glob_escape(&self.prefix), glob_escape(filter))
        }
    }

    /// The addresses (`host`, `port`) of the cluster's masters.
    async fn masters(conn: &mut ClusterConnection) -> Result<Vec<(String, u16)>> {
        let replies = conn
            .route_command(
                &::redis::cmd("PING"),
                RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None)),
            )
            .await
            .map_err(redis_err)?;
        let unexpected = || {
            Error::store(
                BACKEND,
                Message(format!(
                    "the cluster's masters answered PING with {replies:?}"
                )),
            )
        };
        let Value::Map(pairs) = &replies else {
            return Err(unexpected());
        };
        let mut out = Vec::with_capacity(pairs.len());
        for (address, _) in pairs {
            let Value::BulkString(address) = address else {
                return Err(unexpected());
            };
            let address = String::from_utf8_lossy(address);
            let (host, port) = address
                .rsplit_once(':')
                .and_then(|(host, port)| Some((host.to_owned(), port.parse::<u16>().ok()?)))
                .ok_or_else(unexpected)?;
            out.push((host, port));
        }
        Ok(out)
    }

    /// One `SCAN` step on `conn` (on one server), or on the node at `node` of a cluster.
    async fn scan_step(
        conn: &mut RedisConnection,
        node: Option<&(String, u16)>,
        cursor: u64,
        pattern: &str,
    ) -> Result<(u64, Vec<Vec<u8>>)> {
        let mut scan = ::redis::cmd("SCAN");
        scan.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000);
        match (conn, node) {
            (RedisConnection::Cluster(conn), Some((host, port))) => {
                let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                    host: host.clone(),
                    port: *port,
                });
                let reply = conn
                    .route_command(&scan, routing)
                    .await
                    .map_err(redis_err)?;
                ::redis::from_owned_redis_value(reply).map_err(redis_err)
            }
            (conn, _) => scan.query_async(conn).await.map_err(redis_err),
        }
    }

    /// The due keys (with their due times) of bucket `bucket` of a cluster.
    async fn pending_in_bucket(
        &self,
        bucket: u32,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(f64, String)>> {
        let base = format!("{}{}", self.prefix, bucket_tag(bucket));
        self.pending_in(&format!("{base}{PENDING_MARK}"), &base, now, limit)
            .await
    }

    /// The due keys (with their due times, earliest first) of the index of due work
    /// `index`, whose records' keys start with `base`.
    async fn pending_in(
        &self,
        index: &str,
        base: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<(f64, String)>> {
        let mut conn = self.conn.clone();
        let flat: Vec<Vec<u8>> = PENDING_KEYS
            .key(index)
            .arg(base)
            .arg(limit)
            .arg(now)
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        let mut out = Vec::with_capacity(flat.len() / 2);
        let mut items = flat.into_iter();
        while let (Some(key), Some(due)) = (items.next(), items.next()) {
            let key = utf8_key(key)?;
            let due = std::str::from_utf8(&due)
                .ok()
                .and_then(|d| d.parse::<f64>().ok())
                .ok_or_else(|| {
                    Error::store(
                        BACKEND,
                        Message(format!(
                            "the due time {:?} of {key:?} is not a number",
                            String::from_utf8_lossy(&due)
                        )),
                    )
                })?;
            out.push((due, key));
        }
        Ok(out)
    }
}

/// A stored session key, which must be UTF-8.
fn utf8_key(raw: Vec<u8>) -> Result<String> {
    String::from_utf8(raw)
        .map_err(|e| Error::store(BACKEND, Message(format!("stored key is not UTF-8: {e}"))))
}

#[async_trait]
impl SessionStore for RedisStore {
    fn cache_hint(&self) -> Option<super::CacheHint> {
        // Redis counts the TTL down on the server from the save; the system clock
        // measures the same span from just before it.
        let ttl = self.ttl_ms.map(std::time::Duration::from_millis);
        Some(super::CacheHint::new(
            ttl,
            Arc::new(crate::clock::SystemClock),
            false,
        ))
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn load(&self, key: &str) -> Result<Option<Record>> {
        let mut conn = self.conn.clone();
        let (bytes, version): (Option<Vec<u8>>, Option<Vec<u8>>) = ::redis::cmd("HMGET")
            .arg(self.record_key(key))
            .arg("d")
            .arg("v")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        record(key, bytes, version)
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn save(&self, key: &str, bytes: &[u8], expected: Option<Version>) -> Result<Version> {
        self.write(key, bytes, expected, None, None).await
    }

    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete(&self, key: &str, expected: Version) -> Result<()> {
        self.remove(key, expected, None).await
    }

    /// One script: the compare-and-set save and the release of the lease.
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

    /// One script: the compare-and-set delete and the release of the lease.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn delete_releasing(&self, key: &str, expected: Version, lease: &Lease) -> Result<()> {
        self.remove(key, expected, Some(lease)).await
    }

    #[tracing::instrument(skip_all, fields(prefix = %filter.prefix), err(level = "debug"))]
    async fn list(&self, filter: &ListFilter) -> Result<Vec<String>> {
        let limit = filter.limit.unwrap_or(usize::MAX);
        let mut keys = Vec::new();
        if limit == 0 {
            return Ok(keys);
        }
        let mut conn = self.conn.clone();
        let pattern = self.scan_pattern(&filter.prefix);
        // One server: one SCAN. A cluster: a SCAN on each master.
        let nodes: Vec<Option<(String, u16)>> = match &mut conn {
            RedisConnection::Cluster(cluster) => Self::masters(cluster)
                .await?
                .into_iter()
                .map(Some)
                .collect(),
            RedisConnection::Standalone(_) => vec![None],
        };
        let mut seen = HashSet::new();
        for node in &nodes {
            let mut cursor: u64 = 0;
            loop {
                let (next, batch) =
                    Self::scan_step(&mut conn, node.as_ref(), cursor, &pattern).await?;
                for raw in batch {
                    // SCAN may return a key twice; keys that are not UTF-8 are not ours.
                    let Ok(full) = String::from_utf8(raw) else {
                        continue;
                    };
                    let Some(key) = self.listed_key(&full, &filter.prefix) else {
                        continue;
                    };
                    if seen.insert(key.to_owned()) {
                        keys.push(key.to_owned());
                        if keys.len() >= limit {
                            return Ok(keys);
                        }
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }

    fn pending(&self) -> Option<&dyn PendingIndex> {
        Some(self)
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        self.leases.then_some(self as &dyn LeaseStore)
    }
}

#[async_trait]
impl LeaseStore for RedisStore {
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> Result<LeaseAttempt> {
        let mut conn = self.conn.clone();
        let lease = Lease::generate(key);
        let set: Option<String> = ::redis::cmd("SET")
            .arg(self.lease_key(key))
            .arg(lease.token())
            .arg("NX")
            .arg("PX")
            .arg(ttl_param(ttl))
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(LeaseAttempt::taken(set.is_some(), lease))
    }

    /// `SET NX PX` and `HMGET`, pipelined: one round trip, and cheaper for the server
    /// than a script. The read comes after the take, so once the lease is ours it sees
    /// the last holder's save (given back in the same script as its save); a writer
    /// that takes no lease is caught by compare-and-set. When the lease is busy, what
    /// was read is dropped.
    #[tracing::instrument(skip_all, fields(key = %key), err(level = "debug"))]
    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> Result<(LeaseAttempt, Preload)> {
        let mut conn = self.conn.clone();
        let lease = Lease::generate(key);
        type Taken = (Option<String>, (Option<Vec<u8>>, Option<Vec<u8>>));
        let (taken, (bytes, version)): Taken = ::redis::pipe()
            .cmd("SET")
            .arg(self.lease_key(key))
            .arg(lease.token())
            .arg("NX")
            .arg("PX")
            .arg(ttl_param(ttl))
            .cmd("HMGET")
            .arg(self.record_key(key))
            .arg("d")
            .arg("v")
            .query_async(&mut conn)
            .await
            .map_err(redis_err)?;
        if taken.is_none() {
            return Ok((LeaseAttempt::Busy, Preload::NotRead));
        }
        match record(key, bytes, version) {
            Ok(record) => Ok((LeaseAttempt::Acquired(lease), Preload::Read(record))),
            Err(e) => {
                // Not handed out, so given back here (else it would block the key until
                // it expires).
                let _ = self.release_lease(&lease).await;
                Err(e)
            }
        }
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> Result<bool> {
        let mut conn = self.conn.clone();
        let renewed: i64 = LEASE_RENEW
            .key(self.lease_key(lease.key()))
            .arg(lease.token())
            .arg(ttl_param(ttl))
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(renewed == 1)
    }

    #[tracing::instrument(skip_all, fields(key = %lease.key()), err(level = "debug"))]
    async fn release_lease(&self, lease: &Lease) -> Result<bool> {
        let mut conn = self.conn.clone();
        let released: i64 = LEASE_RELEASE
            .key(self.lease_key(lease.key()))
            .arg(lease.token())
            .invoke_async(&mut conn)
            .await
            .map_err(redis_err)?;
        Ok(released == 1)
    }
}

#[async_trait]
impl PendingIndex for RedisStore {
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

    async fn pending_keys(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        if self.is_cluster() {
            if limit == 0 {
                return Ok(Vec::new());
            }
            let buckets = futures_util::future::try_join_all(
                (0..CLUSTER_BUCKETS).map(|bucket| self.pending_in_bucket(bucket, now, limit)),
            )
            .await?;
            let mut due: Vec<(f64, String)> = buckets.into_iter().flatten().collect();
            due.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            due.truncate(limit);
            return Ok(due.into_iter().map(|(_, key)| key).collect());
        }
        let due = self
            .pending_in(&self.pending_key, &self.prefix, now, limit)
            .await?;
        Ok(due.into_iter().map(|(_, key)| key).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        for ok in ["", "stagecraft:", "bot:1:", &"p".repeat(64)] {
            assert!(validate_prefix(ok, false).is_ok(), "{ok}");
            assert!(validate_prefix(ok, true).is_ok(), "{ok}");
        }
        for bad in ["a b", "a*", "a?", "a[", "a]", "a\\", "x\n", &"p".repeat(65)] {
            assert!(
                matches!(validate_prefix(bad, false), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn cluster_prefixes_have_no_braces() {
        for bad in ["{", "}", "a{b}:", "x{}"] {
            assert!(validate_prefix(bad, false).is_ok(), "{bad}");
            assert!(
                matches!(validate_prefix(bad, true), Err(Error::Config(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn buckets_are_fixed() {
        // Part of the key layout: a change would strand stored sessions.
        assert_eq!(bucket_of(""), 0x811c_9dc5 % CLUSTER_BUCKETS);
        assert_eq!(bucket_of("a"), 0xe40c_292c % CLUSTER_BUCKETS);
        assert_eq!(bucket_of("foobar"), 0xbf9c_f968 % CLUSTER_BUCKETS);
        assert_eq!(bucket_tag(7), "{b7}");
        let mut used = HashSet::new();
        for i in 0..10_000 {
            let b = bucket_of(&format!("chat:{i}"));
            assert!(b < CLUSTER_BUCKETS);
            used.insert(b);
        }
        assert_eq!(used.len(), CLUSTER_BUCKETS as usize);
    }

    #[test]
    fn cluster_urls() {
        assert_eq!(cluster_nodes("redis://h:1").unwrap(), None);
        assert_eq!(
            cluster_nodes("redis-cluster://a:7000,b:7001/").unwrap(),
            Some(vec![
                "redis://a:7000".to_owned(),
                "redis://b:7001".to_owned()
            ])
        );
        assert_eq!(
            cluster_nodes("rediss-cluster://u:p@w@a:7000, b:7001").unwrap(),
            Some(vec![
                "rediss://u:p@w@a:7000".to_owned(),
                "rediss://u:p@w@b:7001".to_owned()
            ])
        );
        for bad in [
            "redis-cluster://",
            "redis-cluster://a:1,,b:2",
            "redis-cluster://:hunter2@a:1/0",
            "redis-cluster://a:1?protocol=3",
        ] {
            let err = cluster_nodes(bad).expect_err(bad);
            assert!(err.is_store(), "{err:?}");
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn escaping() {
        assert_eq!(glob_escape("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}

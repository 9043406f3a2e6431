//! Helpers shared by the integration tests: server URLs, unique names, the example
//! binaries, and a store that counts its calls.
#![allow(dead_code)] // each test crate uses a part

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use stagecraft::store::{
    Lease, LeaseAttempt, LeaseStore, ListFilter, MemoryStore, Preload, Record, SessionStore,
    Version,
};

/// The URL in `var`, or `None` after one `skipped:` line when it is unset. The line is
/// written past the test harness's output capture, so it shows in every run.
pub(crate) fn server_url(var: &str) -> Option<String> {
    match std::env::var(var) {
        Ok(url) if !url.trim().is_empty() => Some(url),
        _ => {
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {var} is not set (tests of this server do not run)"
            );
            None
        }
    }
}

/// A name no other run uses: `{prefix}_{pid}_{nanos}` (a valid SQL table name when
/// `prefix` is one).
pub(crate) fn unique_name(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{prefix}_{}_{nanos}", std::process::id())
}

/// The path of an example binary (`cargo test` builds the examples beside the tests).
pub(crate) fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("examples").join(name))
        .unwrap();
    assert!(
        path.exists(),
        "the `{name}` example is built by `cargo test`: {}",
        path.display()
    );
    path
}

/// A store that counts the calls it gets and passes them on: by default to a
/// [`MemoryStore`] whose cache hint it hides, or to any store ([`over`](Self::over)).
#[derive(Debug)]
pub(crate) struct CountingStore {
    inner: Arc<dyn SessionStore>,
    /// Pass the inner store's cache hint on.
    hinted: bool,
    loads: AtomicUsize,
    saves: AtomicUsize,
    deletes: AtomicUsize,
    acquires: AtomicUsize,
    releases: AtomicUsize,
}

impl CountingStore {
    fn wrap(inner: Arc<dyn SessionStore>, hinted: bool) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hinted,
            loads: AtomicUsize::new(0),
            saves: AtomicUsize::new(0),
            deletes: AtomicUsize::new(0),
            acquires: AtomicUsize::new(0),
            releases: AtomicUsize::new(0),
        })
    }

    /// A new memory store, every update reading its record.
    pub(crate) fn new() -> Arc<Self> {
        Self::wrap(Arc::new(MemoryStore::new()), false)
    }

    /// Counts the calls to `inner` and, like it, lets pipelines skip reading back their
    /// own writes (write-through).
    pub(crate) fn write_through(inner: MemoryStore) -> Arc<Self> {
        Self::wrap(Arc::new(inner), true)
    }

    /// Counts the calls to `inner`, which it stands for in every respect (cache hint,
    /// leases).
    pub(crate) fn over(inner: Arc<dyn SessionStore>) -> Arc<Self> {
        Self::wrap(inner, true)
    }

    /// `(loads, saves, deletes)` so far.
    pub(crate) fn calls(&self) -> (usize, usize, usize) {
        (
            self.loads.load(Ordering::SeqCst),
            self.saves.load(Ordering::SeqCst),
            self.deletes.load(Ordering::SeqCst),
        )
    }

    /// `(lease acquisitions, releases)` so far.
    pub(crate) fn lease_calls(&self) -> (usize, usize) {
        (
            self.acquires.load(Ordering::SeqCst),
            self.releases.load(Ordering::SeqCst),
        )
    }

    /// The store underneath, for writes that should not be counted (another process's).
    pub(crate) fn inner(&self) -> &Arc<dyn SessionStore> {
        &self.inner
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }

    async fn load(&self, key: &str) -> stagecraft::Result<Option<Record>> {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.inner.load(key).await
    }

    async fn save(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
    ) -> stagecraft::Result<Version> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        self.inner.save(key, bytes, expected).await
    }

    async fn delete(&self, key: &str, expected: Version) -> stagecraft::Result<()> {
        self.deletes.fetch_add(1, Ordering::SeqCst);
        self.inner.delete(key, expected).await
    }

    async fn list(&self, filter: &ListFilter) -> stagecraft::Result<Vec<String>> {
        self.inner.list(filter).await
    }

    fn cache_hint(&self) -> Option<stagecraft::store::CacheHint> {
        if self.hinted {
            self.inner.cache_hint()
        } else {
            None
        }
    }

    fn leases(&self) -> Option<&dyn LeaseStore> {
        self.inner.leases().map(|_| self as &dyn LeaseStore)
    }

    fn pending(&self) -> Option<&dyn stagecraft::store::PendingIndex> {
        self.inner
            .pending()
            .map(|_| self as &dyn stagecraft::store::PendingIndex)
    }
}

/// Counts a marking save as a save.
#[async_trait]
impl stagecraft::store::PendingIndex for CountingStore {
    async fn save_pending(
        &self,
        key: &str,
        bytes: &[u8],
        expected: Option<Version>,
        due: i64,
    ) -> stagecraft::Result<Version> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        let index = self.inner.pending().expect("the inner store has the index");
        index.save_pending(key, bytes, expected, due).await
    }

    async fn pending_keys(&self, now: i64, limit: usize) -> stagecraft::Result<Vec<String>> {
        let index = self.inner.pending().expect("the inner store has the index");
        index.pending_keys(now, limit).await
    }
}

impl CountingStore {
    /// The inner store's leases (only called when it has some: see `leases`).
    fn inner_leases(&self) -> &dyn LeaseStore {
        self.inner.leases().expect("the inner store has leases")
    }
}

#[async_trait]
impl LeaseStore for CountingStore {
    async fn acquire_lease(&self, key: &str, ttl: Duration) -> stagecraft::Result<LeaseAttempt> {
        self.acquires.fetch_add(1, Ordering::SeqCst);
        self.inner_leases().acquire_lease(key, ttl).await
    }

    async fn acquire_lease_and_load(
        &self,
        key: &str,
        ttl: Duration,
    ) -> stagecraft::Result<(LeaseAttempt, Preload)> {
        self.acquires.fetch_add(1, Ordering::SeqCst);
        self.inner_leases().acquire_lease_and_load(key, ttl).await
    }

    async fn renew_lease(&self, lease: &Lease, ttl: Duration) -> stagecraft::Result<bool> {
        self.inner_leases().renew_lease(lease, ttl).await
    }

    async fn release_lease(&self, lease: &Lease) -> stagecraft::Result<bool> {
        self.releases.fetch_add(1, Ordering::SeqCst);
        self.inner_leases().release_lease(lease).await
    }
}

/// `connect` to a server that refuses the connection fails within seconds (not after a
/// pool's 30 s acquire timeout), with a store error naming the cause once.
pub(crate) async fn assert_refused_fast<T>(
    connect: impl std::future::Future<Output = stagecraft::Result<T>>,
) {
    let started = std::time::Instant::now();
    let Err(err) = connect.await else {
        panic!("nothing listens on port 1, yet it connected");
    };
    let chain = stagecraft::error::error_chain(&err);
    assert!(err.is_store(), "{chain}");
    assert!(
        chain.to_lowercase().contains("refused"),
        "the cause is named: {chain}"
    );
    assert_eq!(chain.matches("refused").count(), 1, "said once: {chain}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "failed after {:?}",
        started.elapsed()
    );
}

/// `url` with its user information replaced by `user:password` (for connecting as a
/// user a test created).
pub(crate) fn with_user(url: &str, user: &str, password: &str) -> String {
    let (scheme, rest) = url.split_once("://").expect("a URL with a scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{user}:{password}@{host}")
}

/// The server store at `url` (Redis, PostgreSQL, MySQL or MongoDB) under a test's own
/// namespace `ns` (its key prefix, its table or its collection), touching nothing
/// outside it.
pub(crate) async fn open_namespaced(url: &str, ns: &str) -> Box<dyn SessionStore> {
    #[cfg(feature = "redis")]
    if url.starts_with("redis") {
        let store = stagecraft::store::RedisStore::connect(url).await.unwrap();
        return Box::new(store.with_prefix(&format!("{ns}:")).unwrap());
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres") {
        let options = stagecraft::store::ServerOptions::new().table(ns);
        return Box::new(
            stagecraft::store::PostgresStore::connect_with(url, options)
                .await
                .unwrap(),
        );
    }
    #[cfg(feature = "mysql")]
    if url.starts_with("mysql") {
        let options = stagecraft::store::ServerOptions::new().table(ns);
        return Box::new(
            stagecraft::store::MySqlStore::connect_with(url, options)
                .await
                .unwrap(),
        );
    }
    #[cfg(feature = "mongodb")]
    if url.starts_with("mongodb") {
        let options = stagecraft::store::MongoOptions::new().collection(ns);
        return Box::new(
            stagecraft::store::MongoStore::connect_with(url, options)
                .await
                .unwrap(),
        );
    }
    let _ = ns;
    panic!(
        "no store of this build serves {}",
        stagecraft::store::redact_url(url)
    );
}

/// Removes what a test left under `ns` on the server at `url`: its Redis keys (leases
/// included), its table and its leases' table, or its two collections.
pub(crate) async fn drop_namespace(url: &str, ns: &str) {
    #[cfg(feature = "redis")]
    if url.starts_with("redis") {
        let store = stagecraft::store::RedisStore::connect(url).await.unwrap();
        let mut conn = store.connection().clone();
        let keys: Vec<Vec<u8>> = stagecraft::store::redis::cmd("KEYS")
            .arg(format!("{ns}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        if !keys.is_empty() {
            let _: () = stagecraft::store::redis::cmd("DEL")
                .arg(keys)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        return;
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres") {
        let options = stagecraft::store::ServerOptions::new().table(ns);
        let store = stagecraft::store::PostgresStore::connect_with(url, options)
            .await
            .unwrap();
        let sql = format!(
            "DROP TABLE IF EXISTS \"{ns}\", \"{ns}_lease\"; \
         DROP FUNCTION IF EXISTS \"{ns}_take_v1\"(text, text, bigint)"
        );
        stagecraft::store::sqlx::raw_sql(&sql)
            .execute(store.pool())
            .await
            .unwrap();
        return;
    }
    #[cfg(feature = "mysql")]
    if url.starts_with("mysql") {
        let options = stagecraft::store::ServerOptions::new().table(ns);
        let store = stagecraft::store::MySqlStore::connect_with(url, options)
            .await
            .unwrap();
        let sql = format!(
            "DROP TABLE IF EXISTS `{ns}`, `{ns}_lease`; \
             DROP PROCEDURE IF EXISTS `{ns}_take_v1`; DROP PROCEDURE IF EXISTS `{ns}_save_v1`"
        );
        stagecraft::store::sqlx::raw_sql(&sql)
            .execute(store.pool())
            .await
            .unwrap();
        return;
    }
    #[cfg(feature = "mongodb")]
    if url.starts_with("mongodb") {
        let options = stagecraft::store::MongoOptions::new().collection(ns);
        let store = stagecraft::store::MongoStore::connect_with(url, options)
            .await
            .unwrap();
        store
            .database()
            .collection::<stagecraft::store::mongodb::bson::Document>(store.collection())
            .drop()
            .await
            .unwrap();
        return;
    }
    let _ = ns;
    panic!(
        "no store of this build serves {}",
        stagecraft::store::redact_url(url)
    );
}

/// A store a test runs on: its name, the store, and (for a server) its URL and the
/// test's namespace there, for [`drop_namespace`].
pub(crate) type NamedStore = (String, Arc<dyn SessionStore>, Option<(String, String)>);

/// Memory, a fresh SQLite file, and Redis (one server, a cluster), PostgreSQL and MySQL
/// when their URL is set, each under a namespace of its own for `test`.
pub(crate) async fn every_store(test: &str) -> Vec<NamedStore> {
    let mut out: Vec<NamedStore> = vec![("memory".into(), Arc::new(MemoryStore::new()), None)];
    let path = std::env::temp_dir().join(format!("{}.db", unique_name(test)));
    #[cfg(feature = "sqlite")]
    out.push((
        "sqlite".into(),
        Arc::new(stagecraft::store::SqliteStore::open(&path).await.unwrap()),
        None,
    ));
    let _ = path;
    for var in [
        "STAGECRAFT_REDIS_URL",
        "STAGECRAFT_REDIS_CLUSTER_URL",
        "STAGECRAFT_POSTGRES_URL",
        "STAGECRAFT_MYSQL_URL",
    ] {
        if let Some(url) = server_url(var) {
            let ns = unique_name(test);
            let store: Arc<dyn SessionStore> = open_namespaced(&url, &ns).await.into();
            out.push((var.to_owned(), store, Some((url, ns))));
        }
    }
    out
}

/// The counting bot of the outage and failover tests: every message adds one to the
/// session of its chat, under leases of `lease_ttl`, waited for at most `wait`.
pub(crate) fn counting_bot(
    store: Arc<dyn SessionStore>,
    lease_ttl: Duration,
    wait: Duration,
) -> stagecraft::Pipeline<u64> {
    use stagecraft::prelude::*;
    Pipeline::<u64>::builder()
        .store_arc(store)
        .leases(
            stagecraft::pipeline::LeaseConfig::new()
                .ttl(lease_ttl)
                .wait(wait),
        )
        .on_message(|cx: Cx<u64>| async move {
            cx.session_mut(|n| *n += 1)?;
            Ok(Outcome::Handled)
        })
        .build()
}

/// Message `id` of user `chat` in their private chat, for [`counting_bot`].
pub(crate) fn counting_message(chat: i64, id: i64) -> stagecraft::update::TelegramUpdate {
    stagecraft::update::TelegramUpdate::from_value(serde_json::json!({"update_id": id, "message": {
        "message_id": id, "date": 0, "chat": {"id": chat, "type": "private"},
        "from": {"id": chat, "is_bot": false}, "text": "x"}}))
    .unwrap()
}

/// Checks that no key of `keys` is stuck: the next update of each (a
/// [`counting_message`]) succeeds within `bound`. `what` names them in a failure.
pub(crate) async fn each_key_served(
    pipeline: &stagecraft::Pipeline<u64>,
    keys: std::ops::RangeInclusive<i64>,
    bound: Duration,
    what: &str,
) {
    for key in keys {
        let started = std::time::Instant::now();
        pipeline
            .handle(counting_message(key, 9_000_000 + key))
            .await
            .unwrap_or_else(|e| panic!("{what} {key}: {}", stagecraft::error::error_chain(&e)));
        assert!(
            started.elapsed() < bound,
            "{what} {key} waited {:?}",
            started.elapsed()
        );
    }
}

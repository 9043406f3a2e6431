//! Opening a store from a URL: what a bot's configuration, the examples and the
//! `stagecraft` command-line tool share.

use std::sync::Arc;

use super::{MemoryStore, SessionStore};
use crate::error::{Error, Result};

/// How [`open_with`] opens a store.
///
/// ```
/// use stagecraft::store::OpenOptions;
///
/// let options = OpenOptions::new().namespace("bot_sessions").existing(true);
/// assert_eq!(options.get_namespace(), Some("bot_sessions"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenOptions {
    namespace: Option<String>,
    existing: bool,
}

impl OpenOptions {
    /// The default options: the store's default table or key prefix, and an SQLite file
    /// is created when it does not exist.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The namespace to use: the table of the SQL stores (its leases live in
    /// `{namespace}_lease`), the key prefix `{namespace}:` of Redis. The memory store
    /// has none.
    #[must_use]
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// The namespace set with [`namespace`](Self::namespace).
    #[must_use]
    pub fn get_namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// Only open a store that already exists: an SQLite file that is not there, or an
    /// SQL table (the namespace) that is not there, is an error instead of a new empty
    /// database or table (what an operator tool wants, so that a mistyped path or
    /// namespace is not taken for a bot without users, and leaves nothing behind).
    /// Redis has no such check: a key prefix nobody uses holds no sessions.
    #[must_use]
    pub fn existing(mut self, on: bool) -> Self {
        self.existing = on;
        self
    }
}

/// The URL forms [`open`] understands in this build (the store features decide):
/// `memory`, `sqlite:PATH`, `redis://...`, `redis-cluster://...`, `postgres://...`,
/// `mysql://...`, `mongodb://...`.
///
/// ```
/// assert!(stagecraft::store::url_forms().contains(&"memory"));
/// ```
#[must_use]
pub fn url_forms() -> Vec<&'static str> {
    let mut known = vec!["memory"];
    if cfg!(feature = "sqlite") {
        known.push("sqlite:PATH");
    }
    if cfg!(feature = "redis") {
        known.push("redis://...");
        known.push("redis-cluster://HOST:PORT,...");
    }
    if cfg!(feature = "postgres") {
        known.push("postgres://...");
    }
    if cfg!(feature = "mysql") {
        known.push("mysql://...");
    }
    if cfg!(feature = "mongodb") {
        known.push("mongodb://...");
    }
    known
}

/// Opens the store at `url` with the default [`OpenOptions`]: `memory` (a new, empty
/// [`MemoryStore`]), `sqlite:PATH` (feature `sqlite`), `redis://` or `rediss://` (one
/// server) and `redis-cluster://HOST:PORT[,HOST:PORT...]` or `rediss-cluster://` (a
/// Redis Cluster; see [`RedisStore`](super::RedisStore)) (feature `redis`), `postgres://` or `postgresql://` (feature `postgres`), `mysql://`
/// or `mariadb://` (feature `mysql`), `mongodb://` (feature `mongodb`; the namespace
/// is the collection). The SQL stores create their table when it is missing.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let store = stagecraft::store::open("memory").await.unwrap();
/// assert_eq!(store.backend(), "memory");
///
/// let err = stagecraft::store::open("ftp://bot:s3cret@example.org").await.unwrap_err();
/// assert!(matches!(err, stagecraft::Error::UnknownStore { .. }));
/// assert!(!err.to_string().contains("s3cret"), "{err}");
/// # });
/// ```
///
/// # Errors
/// [`Error::UnknownStore`] when no store of this build opens `url` (an unknown scheme,
/// or a store whose feature is off); [`Error::Store`] when the store cannot be reached
/// or opened; [`Error::Config`] for an invalid namespace.
pub async fn open(url: &str) -> Result<Arc<dyn SessionStore>> {
    open_with(url, &OpenOptions::new()).await
}

/// Like [`open`], with options (a namespace; an SQLite file that must exist).
///
/// # Errors
/// As [`open`]; with [`OpenOptions::existing`], [`Error::Store`] when the SQLite file
/// does not exist.
pub async fn open_with(url: &str, options: &OpenOptions) -> Result<Arc<dyn SessionStore>> {
    let url = url.trim();
    let namespace = options.namespace.as_deref();
    if url == "memory" || url == "memory:" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    #[cfg(feature = "sqlite")]
    if let Some(path) = url.strip_prefix("sqlite:") {
        return open_sqlite(url, path, options).await;
    }
    #[cfg(feature = "redis")]
    if [
        "redis://",
        "rediss://",
        "redis-cluster://",
        "rediss-cluster://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme))
    {
        let mut store = super::RedisStore::connect(url).await?;
        if let Some(ns) = namespace {
            store = store.with_prefix(&format!("{ns}:"))?;
        }
        return Ok(Arc::new(store));
    }
    #[cfg(feature = "postgres")]
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        if !options.existing {
            let store = super::PostgresStore::connect_with(url, server_options(namespace)).await?;
            return Ok(Arc::new(store));
        }
        let table = table_of(namespace)?;
        let pool = super::sql::connect::<sqlx::Postgres>(url, "postgres").await?;
        let found: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("\"{table}\""))
            .fetch_one(&pool)
            .await
            .map_err(|e| Error::store("postgres", e))?;
        if !found {
            return Err(missing_table("postgres", table));
        }
        let store = super::PostgresStore::new(pool).with_table(table)?;
        store.migrate().await?;
        return Ok(Arc::new(store));
    }
    #[cfg(feature = "mysql")]
    if url.starts_with("mysql://") || url.starts_with("mariadb://") {
        // sqlx knows the `mysql` scheme only; MariaDB speaks the same protocol.
        let url = match url.strip_prefix("mariadb://") {
            Some(rest) => std::borrow::Cow::Owned(format!("mysql://{rest}")),
            None => std::borrow::Cow::Borrowed(url),
        };
        if !options.existing {
            let store = super::MySqlStore::connect_with(&url, server_options(namespace)).await?;
            return Ok(Arc::new(store));
        }
        let table = table_of(namespace)?;
        let pool = super::sql::connect::<sqlx::MySql>(&url, "mysql").await?;
        let found: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM information_schema.tables \
             WHERE table_schema = DATABASE() AND table_name = ?",
        )
        .bind(table)
        .fetch_one(&pool)
        .await
        .map_err(|e| Error::store("mysql", e))?;
        if found == 0 {
            return Err(missing_table("mysql", table));
        }
        let store = super::MySqlStore::new(pool).with_table(table)?;
        store.migrate().await?;
        return Ok(Arc::new(store));
    }
    #[cfg(feature = "mongodb")]
    if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") {
        let mut mongo = super::MongoOptions::new();
        if let Some(ns) = namespace {
            mongo = mongo.collection(ns);
        }
        return Ok(Arc::new(super::MongoStore::connect_with(url, mongo).await?));
    }
    let _ = namespace;
    Err(Error::UnknownStore {
        url: super::redact_url(url),
        known: url_forms().join(", "),
    })
}

/// The table of `namespace` (the default table when there is none), validated.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
fn table_of(namespace: Option<&str>) -> Result<&str> {
    let table = namespace.unwrap_or(super::sql::DEFAULT_TABLE);
    super::sql::validate_table(table)?;
    Ok(table)
}

/// The error of a store whose sessions table is not there.
#[cfg(any(feature = "sqlite", feature = "postgres", feature = "mysql"))]
fn missing_table(backend: &'static str, table: &str) -> Error {
    Error::store(
        backend,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("no sessions table `{table}` in this database (is the namespace right?)"),
        ),
    )
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn server_options(namespace: Option<&str>) -> super::ServerOptions {
    let options = super::ServerOptions::new();
    match namespace {
        Some(ns) => options.table(ns),
        None => options,
    }
}

#[cfg(feature = "sqlite")]
async fn open_sqlite(
    url: &str,
    path: &str,
    options: &OpenOptions,
) -> Result<Arc<dyn SessionStore>> {
    let mut sqlite = super::SqliteOptions::new();
    if let Some(ns) = options.namespace.as_deref() {
        sqlite = sqlite.table(ns);
    }
    // `sqlite:PATH`, `sqlite://PATH` and `sqlite::memory:` all name a file (or memory);
    // query parameters (`?mode=ro`) go to sqlx as a URL.
    let file = path.strip_prefix("//").unwrap_or(path);
    let in_memory = file == ":memory:" || url.contains("mode=memory");
    if options.existing && !in_memory {
        let name = file.split('?').next().unwrap_or(file);
        if !std::path::Path::new(name).exists() {
            return Err(Error::store(
                "sqlite",
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("no database file at `{name}`"),
                ),
            ));
        }
    }
    if options.existing && !in_memory {
        sqlite_table_exists(file, table_of(options.namespace.as_deref())?).await?;
    }
    let target = if file.contains('?') || in_memory {
        url
    } else {
        file
    };
    Ok(Arc::new(
        super::SqliteStore::open_with(target, sqlite).await?,
    ))
}

/// Fails unless the SQLite file `file` has the table `table`, reading it without
/// writing anything.
#[cfg(feature = "sqlite")]
async fn sqlite_table_exists(file: &str, table: &str) -> Result<()> {
    use sqlx::Connection as _;
    let name = file.split('?').next().unwrap_or(file);
    let connect = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(name)
        .read_only(true);
    let mut conn = sqlx::SqliteConnection::connect_with(&connect)
        .await
        .map_err(|e| Error::store("sqlite", e))?;
    let found: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1")
            .bind(table)
            .fetch_one(&mut conn)
            .await
            .map_err(|e| Error::store("sqlite", e))?;
    let _ = conn.close().await;
    if found == 0 {
        return Err(missing_table("sqlite", table));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unknown_schemes_name_what_this_build_opens() {
        for url in [
            "",
            "ftp://x",
            "sqlit:x.db",
            "memcached://u:hunter2@h",
            "MEMORY",
        ] {
            let err = open(url).await.expect_err("not a store URL");
            let text = err.to_string();
            assert!(matches!(err, Error::UnknownStore { .. }), "{url}: {err:?}");
            assert!(text.contains("memory"), "{text}");
            assert!(!text.contains("hunter2"), "{text}");
        }
    }

    #[cfg(feature = "sqlite")]
    #[tokio::test]
    async fn a_missing_sqlite_file_is_an_error_when_it_must_exist() {
        let dir = std::env::temp_dir().join(format!(
            "stagecraft-open-{}-{}",
            std::process::id(),
            super::super::random_u64()
        ));
        let path = dir.join("missing.db");
        let url = format!("sqlite:{}", path.display());
        let err = open_with(&url, &OpenOptions::new().existing(true))
            .await
            .expect_err("the file is not there");
        assert!(err.is_store(), "{err:?}");
        assert!(
            crate::error::error_chain(&err).contains("no database file"),
            "{err}"
        );
        assert!(!path.exists());
        std::fs::create_dir_all(&dir).unwrap();
        let store = open_with(&url, &OpenOptions::new().namespace("ops_t"))
            .await
            .unwrap();
        assert_eq!(store.backend(), "sqlite");
        store
            .save("k", b"{\"v\":1,\"data\":1}", None)
            .await
            .unwrap();
        drop(store);
        let again = open_with(&url, &OpenOptions::new().namespace("ops_t").existing(true))
            .await
            .unwrap();
        assert!(again.load("k").await.unwrap().is_some());
        drop(again);
        // A namespace that is not there is an error, and is not created.
        for _ in 0..2 {
            let err = open_with(
                &url,
                &OpenOptions::new().namespace("ops_typo").existing(true),
            )
            .await
            .expect_err("no such table");
            assert!(
                crate::error::error_chain(&err).contains("no sessions table `ops_typo`"),
                "{err}"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#![allow(unreachable_pub, dead_code)]
//! Opening a store from a command-line spec, shared by the examples.

use std::sync::Arc;

use stagecraft::BoxError;
use stagecraft::store::{MemoryStore, SessionStore};

/// The store used when none is given: the embedded SQLite file when the feature is on.
pub const DEFAULT_STORE: &str = if cfg!(feature = "sqlite") {
    "sqlite:demo.db"
} else {
    "memory"
};

/// Opens `memory`, `sqlite:PATH`, `redis://...`, `postgres://...`, `mysql://...` or
/// `mongodb://...`. `namespace` picks the table (SQL), the key prefix (Redis) or the
/// collection (MongoDB).
pub async fn open(spec: &str, namespace: Option<&str>) -> Result<Arc<dyn SessionStore>, BoxError> {
    if spec == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    #[cfg(feature = "sqlite")]
    if let Some(path) = spec.strip_prefix("sqlite:") {
        let mut options = stagecraft::store::SqliteOptions::new();
        if let Some(ns) = namespace {
            options = options.table(ns);
        }
        return Ok(Arc::new(
            stagecraft::store::SqliteStore::open_with(path, options).await?,
        ));
    }
    #[cfg(feature = "redis")]
    if spec.starts_with("redis://") || spec.starts_with("rediss://") {
        let mut store = stagecraft::store::RedisStore::connect(spec).await?;
        if let Some(ns) = namespace {
            store = store.with_prefix(&format!("{ns}:"))?;
        }
        return Ok(Arc::new(store));
    }
    #[cfg(feature = "postgres")]
    if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
        let mut options = stagecraft::store::PostgresOptions::new();
        if let Some(ns) = namespace {
            options = options.table(ns);
        }
        let store = stagecraft::store::PostgresStore::connect_with(spec, options).await?;
        return Ok(Arc::new(store));
    }
    #[cfg(feature = "mysql")]
    if spec.starts_with("mysql://") || spec.starts_with("mariadb://") {
        let mut options = stagecraft::store::MySqlOptions::new();
        if let Some(ns) = namespace {
            options = options.table(ns);
        }
        let store = stagecraft::store::MySqlStore::connect_with(spec, options).await?;
        return Ok(Arc::new(store));
    }
    #[cfg(feature = "mongodb")]
    if spec.starts_with("mongodb://") || spec.starts_with("mongodb+srv://") {
        let mut options = stagecraft::store::MongoOptions::new();
        if let Some(ns) = namespace {
            options = options.collection(ns);
        }
        let store = stagecraft::store::MongoStore::connect_with(spec, options).await?;
        return Ok(Arc::new(store));
    }
    let _ = namespace;
    let mut known = vec!["memory"];
    if cfg!(feature = "sqlite") {
        known.push("sqlite:PATH");
    }
    if cfg!(feature = "redis") {
        known.push("redis://...");
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
    Err(format!(
        "unsupported store `{}`: this build knows {} (enable more with --features)",
        stagecraft::store::redact_url(spec),
        known.join(", ")
    )
    .into())
}

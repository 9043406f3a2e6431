#![allow(unreachable_pub, dead_code)]
//! The store of the examples' `--store` and `--namespace` flags, opened by the library's
//! `stagecraft::store::open_with`.

use std::sync::Arc;

use stagecraft::store::{OpenOptions, SessionStore};

/// The store used when none is given: the embedded SQLite file when the feature is on.
pub const DEFAULT_STORE: &str = if cfg!(feature = "sqlite") {
    "sqlite:demo.db"
} else {
    "memory"
};

/// Opens `memory`, `sqlite:PATH`, `redis://...`, `redis-cluster://...`, `postgres://...`, `mysql://...` or
/// `mongodb://...`. `namespace` picks the table (SQL), the key prefix (Redis) or the
/// collection (MongoDB).
pub async fn open(
    spec: &str,
    namespace: Option<&str>,
) -> stagecraft::Result<Arc<dyn SessionStore>> {
    let mut options = OpenOptions::new();
    if let Some(ns) = namespace {
        options = options.namespace(ns);
    }
    stagecraft::store::open_with(spec, &options).await
}

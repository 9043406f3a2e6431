//! Helpers shared by the integration tests: server URLs, unique names, the example
//! binaries, and a store that counts its calls.
#![allow(dead_code)] // each test crate uses a part

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;
use stagecraft::store::{ListFilter, Loaded, MemoryStore, SessionStore, Version};

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

/// A [`MemoryStore`] that counts the calls it gets.
#[derive(Debug, Default)]
pub(crate) struct CountingStore {
    inner: MemoryStore,
    /// Pass the memory store's cache hint on (write-through by default).
    hinted: bool,
    loads: AtomicUsize,
    saves: AtomicUsize,
    deletes: AtomicUsize,
}

impl CountingStore {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Counts the calls to `inner` and, like it, lets pipelines skip reading back their
    /// own writes (write-through).
    pub(crate) fn write_through(inner: MemoryStore) -> Arc<Self> {
        Arc::new(Self {
            inner,
            hinted: true,
            ..Self::default()
        })
    }

    /// `(loads, saves, deletes)` so far.
    pub(crate) fn calls(&self) -> (usize, usize, usize) {
        (
            self.loads.load(Ordering::SeqCst),
            self.saves.load(Ordering::SeqCst),
            self.deletes.load(Ordering::SeqCst),
        )
    }

    /// The store underneath, for writes that should not be counted (another process's).
    pub(crate) fn inner(&self) -> &MemoryStore {
        &self.inner
    }
}

#[async_trait]
impl SessionStore for CountingStore {
    fn backend(&self) -> &'static str {
        "counting"
    }

    async fn load(&self, key: &str) -> stagecraft::Result<Option<Loaded>> {
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
}

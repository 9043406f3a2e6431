#![allow(unreachable_pub, dead_code)]
//! Opening a store from a command-line spec, shared by the examples.

use std::sync::Arc;

use stagecraft::BoxError;
use stagecraft::store::{MemoryStore, SessionStore};

/// The store used when none is given.
pub const DEFAULT_STORE: &str = "memory";

/// Opens `memory`, `sqlite:PATH`, `redis://...`, `postgres://...` or `mysql://...`.
pub async fn open(spec: &str) -> Result<Arc<dyn SessionStore>, BoxError> {
    if spec == "memory" {
        return Ok(Arc::new(MemoryStore::new()));
    }
    Err(format!("unsupported store `{spec}` (this build knows: memory)").into())
}

//! What a [`Cx`](super::Cx) needs from the layers above it, as a narrow environment:
//! the default session, the transport, the clock, the extensions, the interpreter of
//! transitions and the session cycle's load. The pipeline builds one [`Env`] per bot;
//! the context depends on the two traits here, never on the pipeline or the stage.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::Cx;
use super::session::SessionState;
use crate::clock::Clock;
use crate::error::Result;
use crate::outcome::Outcome;
use crate::store::Record;
use crate::transport::Transport;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The interpreter of transitions (the stage): applies an [`Outcome`] to a context.
pub(crate) trait Interpret<S, U>: Send + Sync + 'static {
    /// Applies `outcome` (hooks and steps it runs included).
    fn apply(&self, cx: Cx<S, U>, outcome: Outcome) -> BoxFuture<'static, Result<()>>;

    /// Which interpreter this is (two handles of one stage answer the same).
    fn id(&self) -> usize;
}

/// The session cycle's load, as the context asks for it.
pub(crate) trait Source<S>: Send + Sync + 'static {
    /// Starts loading the session of `key` into `st`. Done at once (`None`) when no
    /// read is needed (a trusted cached copy, a record read with the lease); otherwise
    /// the read to await and hand to [`finish_load`](Self::finish_load).
    ///
    /// # Errors
    /// As [`finish_load`](Self::finish_load), for a record read with the lease.
    #[allow(clippy::type_complexity)]
    fn start_load<'a>(
        &'a self,
        key: &'a str,
        st: &mut SessionState<S>,
    ) -> Result<Option<BoxFuture<'a, Result<Option<Record>>>>>;

    /// Finishes a load with the record read.
    ///
    /// # Errors
    /// [`Error::Decode`](crate::Error::Decode) under [`DecodePolicy::Fail`](crate::session::DecodePolicy::Fail).
    fn finish_load(
        &self,
        key: &str,
        st: &mut SessionState<S>,
        record: Option<Record>,
    ) -> Result<()>;
}

/// The environment every context of one bot shares.
pub(crate) struct Env<S, U> {
    /// Creates new sessions.
    pub(crate) default_session: Box<dyn Fn() -> S + Send + Sync>,
    /// Where replies go.
    pub(crate) transport: Arc<dyn Transport>,
    /// The clock of scene TTLs.
    pub(crate) clock: Arc<dyn Clock>,
    /// Values for [`Cx::extension`].
    pub(crate) extensions: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
    /// Commands addressed to another bot don't match.
    pub(crate) bot_username: Option<String>,
    /// The stage that applies transitions outside any stage (`None`: no stage).
    pub(crate) interpret: Option<Arc<dyn Interpret<S, U>>>,
    /// The session cycle's load.
    pub(crate) source: Arc<dyn Source<S>>,
}

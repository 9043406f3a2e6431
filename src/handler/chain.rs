//! The middleware chain: links run in the order they were added, each deciding whether
//! the rest runs ([`Next`]).

use std::fmt;
use std::sync::Arc;

use super::{HandlerResult, Middleware, Routes};
use crate::context::Cx;
use crate::outcome::Outcome;
use crate::record::SessionData;
use crate::update::Update;

/// One link of the chain.
pub(crate) enum Link<S, U> {
    /// A middleware (the stage is one).
    Middleware(Arc<dyn Middleware<S, U>>),
    /// Consecutive bot-level routes.
    Routes(Routes<S, U>),
}

/// The links of a pipeline, in order.
pub(crate) struct Chain<S, U> {
    links: Vec<Link<S, U>>,
}

impl<S, U> Default for Chain<S, U> {
    fn default() -> Self {
        Self { links: Vec::new() }
    }
}

impl<S, U> Chain<S, U> {
    /// Adds a link at the end.
    pub(crate) fn push(&mut self, link: Link<S, U>) {
        self.links.push(link);
    }

    /// The last link, to extend its routes.
    pub(crate) fn last_mut(&mut self) -> Option<&mut Link<S, U>> {
        self.links.last_mut()
    }
}

/// The rest of the chain after a middleware.
pub struct Next<S, U = crate::update::TelegramUpdate> {
    chain: Arc<Chain<S, U>>,
    index: usize,
}

impl<S, U> fmt::Debug for Next<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Next").field("index", &self.index).finish()
    }
}

impl<S: SessionData, U: Update> Next<S, U> {
    /// The whole chain.
    pub(crate) fn start(chain: &Arc<Chain<S, U>>) -> Self {
        Self {
            chain: Arc::clone(chain),
            index: 0,
        }
    }

    /// [`run`](Self::run), boxed: for the stage passing an update on, which would
    /// otherwise make the chain's future contain itself.
    pub(crate) fn run_boxed(self, cx: Cx<S, U>) -> super::BoxFuture<'static, HandlerResult> {
        Box::pin(self.run(cx))
    }

    /// Runs the rest of the chain. Its result is [`Outcome::Pass`] when nothing after
    /// took the update.
    ///
    /// The session is loaded before the first link that runs a handler: a middleware,
    /// or a route that matches (an update no route takes costs no store read).
    ///
    /// The future is not boxed: awaited inside a middleware (whose own future is boxed),
    /// it costs no allocation of its own.
    pub async fn run(self, cx: Cx<S, U>) -> HandlerResult {
        let chain = self.chain;
        for (i, link) in chain.links.iter().enumerate().skip(self.index) {
            match link {
                Link::Middleware(m) => {
                    cx.ensure_loaded().await?;
                    let next = Self {
                        chain: Arc::clone(&chain),
                        index: i + 1,
                    };
                    let o = m.call(cx.clone(), next).await?;
                    if o.is_transition() {
                        // The middleware's own transition (what the chain after it
                        // answered was already applied there).
                        cx.apply(o).await?;
                        return Ok(Outcome::Handled);
                    }
                    return Ok(o);
                }
                Link::Routes(routes) => {
                    // Match first: an update no route takes costs no store read.
                    let Some(first) = routes.next_match(cx.update(), cx.bot_username(), 0) else {
                        continue;
                    };
                    cx.ensure_loaded().await?;
                    if let Some(o) = routes.run_from(&cx, first).await? {
                        cx.apply(o).await?;
                        return Ok(Outcome::Handled);
                    }
                }
            }
        }
        Ok(Outcome::Pass)
    }
}

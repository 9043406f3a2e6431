//! Handlers, middleware, the chain they form, and the matchers that pick them.

mod chain;

use std::fmt;
use std::future::Future;
use std::sync::Arc;

use regex::Regex;

pub use crate::context::BoxFuture;
pub use chain::Next;
pub(crate) use chain::{Chain, Link};

use crate::context::Cx;
use crate::error::{BoxError, Error, Result};
use crate::outcome::Outcome;
use crate::record::SessionData;
use crate::update::{Command, Update, UpdateKind};

/// What a handler returns: an [`Outcome`] (a transition, as data) or an error.
///
/// Errors are boxed so that `?` works on any error type inside a handler.
pub type HandlerResult = Result<Outcome, BoxError>;

/// A handler: an async function of the context.
///
/// Implemented for every `Fn(Cx<S, U>) -> impl Future<Output = HandlerResult>`, so a
/// closure `|cx| async move { ...; Ok(Outcome::Handled) }` is a handler. The future is
/// awaited by the stage: a handler cannot forget to await.
#[diagnostic::on_unimplemented(
    message = "this is not a stagecraft handler",
    note = "a handler is `|cx: Cx<S, U>| async move {{ ...; Ok(Outcome::Handled) }}` returning `HandlerResult`"
)]
pub trait Handler<S, U>: Send + Sync + 'static {
    /// Runs the handler.
    fn call(&self, cx: Cx<S, U>) -> BoxFuture<'static, HandlerResult>;
}

impl<S, U, F, Fut> Handler<S, U> for F
where
    F: Fn(Cx<S, U>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, cx: Cx<S, U>) -> BoxFuture<'static, HandlerResult> {
        Box::pin(self(cx))
    }
}

/// A leave hook: runs when a scene is left; cannot change scenes.
pub trait LeaveHook<S, U>: Send + Sync + 'static {
    /// Runs the hook.
    fn call(&self, cx: Cx<S, U>) -> BoxFuture<'static, Result<(), BoxError>>;
}

impl<S, U, F, Fut> LeaveHook<S, U> for F
where
    F: Fn(Cx<S, U>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), BoxError>> + Send + 'static,
{
    fn call(&self, cx: Cx<S, U>) -> BoxFuture<'static, Result<(), BoxError>> {
        Box::pin(self(cx))
    }
}

/// Middleware: sees the update before the rest of the chain and decides whether
/// (and when) to run it through [`Next::run`]. The [`Stage`](crate::Stage) is one.
pub trait Middleware<S, U>: Send + Sync + 'static {
    /// Runs the middleware.
    fn call(&self, cx: Cx<S, U>, next: Next<S, U>) -> BoxFuture<'static, HandlerResult>;
}

impl<S, U, F, Fut> Middleware<S, U> for F
where
    F: Fn(Cx<S, U>, Next<S, U>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = HandlerResult> + Send + 'static,
{
    fn call(&self, cx: Cx<S, U>, next: Next<S, U>) -> BoxFuture<'static, HandlerResult> {
        Box::pin(self(cx, next))
    }
}

/// A predicate on updates, for [`Matcher::Custom`].
pub type Predicate<U> = Arc<dyn Fn(&U) -> bool + Send + Sync>;

/// Which updates a route takes.
#[non_exhaustive]
pub enum Matcher<U> {
    /// A command (`/name` or `/name@bot`) in a new message.
    Command(String),
    /// A new message whose text is exactly this.
    Text(String),
    /// A new message whose text matches this regex.
    Pattern(Regex),
    /// Any new message with text.
    AnyText,
    /// A callback query with exactly this data (its payload: without the step tag of
    /// a bound button, see [`Update::callback_payload`]).
    Callback(String),
    /// A callback query whose data (its payload, as for [`Callback`](Self::Callback))
    /// matches this regex.
    CallbackPattern(Regex),
    /// Any new message (text or not).
    Message,
    /// Every update.
    Any,
    /// Your own predicate.
    Custom(Predicate<U>),
}

impl<U> fmt::Debug for Matcher<U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command(c) => write!(f, "Command({c:?})"),
            Self::Text(t) => write!(f, "Text({t:?})"),
            Self::Pattern(r) => write!(f, "Pattern({:?})", r.as_str()),
            Self::AnyText => f.write_str("AnyText"),
            Self::Callback(d) => write!(f, "Callback({d:?})"),
            Self::CallbackPattern(r) => write!(f, "CallbackPattern({:?})", r.as_str()),
            Self::Message => f.write_str("Message"),
            Self::Any => f.write_str("Any"),
            Self::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl<U: Update> Matcher<U> {
    /// Does `update` match? `bot` is the bot's username, if known: a command addressed to
    /// another bot (`/start@other_bot`) does not match.
    pub fn matches(&self, update: &U, bot: Option<&str>) -> bool {
        self.matches_with(update, bot, &mut None)
    }

    /// [`matches`](Self::matches), with the update's command parsed at most once
    /// across the matchers of one scan (`command` holds it once parsed).
    fn matches_with<'u>(
        &self,
        update: &'u U,
        bot: Option<&str>,
        command: &mut Option<Option<Command<'u>>>,
    ) -> bool {
        match self {
            Self::Command(name) => {
                command
                    .get_or_insert_with(|| update.command())
                    .is_some_and(|c| {
                        c.name == name
                            && c.bot
                                .is_none_or(|b| bot.is_none_or(|me| b.eq_ignore_ascii_case(me)))
                    })
            }
            Self::Text(t) => update.message_text() == Some(t.as_str()),
            Self::Pattern(r) => update.message_text().is_some_and(|t| r.is_match(t)),
            Self::AnyText => update.message_text().is_some(),
            Self::Callback(d) => update.callback_payload() == Some(d.as_str()),
            Self::CallbackPattern(r) => update.callback_payload().is_some_and(|d| r.is_match(d)),
            Self::Message => matches!(update.kind(), UpdateKind::Message | UpdateKind::ChannelPost),
            Self::Any => true,
            Self::Custom(f) => f(update),
        }
    }
}

/// An ordered list of matchers and handlers: the first match runs; a handler that
/// returns [`Outcome::Pass`] lets the next matching route try.
pub(crate) type Route<S, U> = (Matcher<U>, Arc<dyn Handler<S, U>>);

pub(crate) struct Routes<S, U> {
    pub(crate) list: Vec<Route<S, U>>,
}

impl<S, U> Default for Routes<S, U> {
    fn default() -> Self {
        Self { list: Vec::new() }
    }
}

impl<S, U> fmt::Debug for Routes<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.list.iter().map(|(m, _)| m))
            .finish()
    }
}

impl<S, U: Update> Routes<S, U> {
    /// Indexes of the routes matching `update`, starting at `from`.
    pub(crate) fn next_match(&self, update: &U, bot: Option<&str>, from: usize) -> Option<usize> {
        let mut command = None;
        self.list
            .iter()
            .skip(from)
            .position(|(m, _)| m.matches_with(update, bot, &mut command))
            .map(|i| i + from)
    }
}

impl<S: SessionData, U: Update> Routes<S, U> {
    /// Runs the first matching route; a route answering `Pass` lets the next matching
    /// one try. `None`: no route took the update.
    pub(crate) async fn run(&self, cx: &Cx<S, U>) -> Result<Option<Outcome>> {
        match self.next_match(cx.update(), cx.bot_username(), 0) {
            Some(first) => self.run_from(cx, first).await,
            None => Ok(None),
        }
    }

    /// Like [`run`](Self::run), starting at `first`, a route already known to match (so
    /// its matcher is not evaluated again).
    pub(crate) async fn run_from(&self, cx: &Cx<S, U>, first: usize) -> Result<Option<Outcome>> {
        let mut next = Some(first);
        while let Some(i) = next {
            match self.list[i]
                .1
                .call(cx.clone())
                .await
                .map_err(Error::handler)?
            {
                Outcome::Pass => next = self.next_match(cx.update(), cx.bot_username(), i + 1),
                other => return Ok(Some(other)),
            }
        }
        Ok(None)
    }
}

/// The route-adding methods shared by [`SceneBuilder`](crate::scene::SceneBuilder),
/// [`WizardBuilder`](crate::wizard::WizardBuilder), [`StageBuilder`](crate::stage::StageBuilder)
/// and [`PipelineBuilder`](crate::pipeline::PipelineBuilder). Import it with the prelude.
pub trait RouteBuilder<S, U>: Sized {
    #[doc(hidden)]
    fn push_route(self, matcher: Matcher<U>, handler: Arc<dyn Handler<S, U>>) -> Self;

    /// Handles `/name` (and `/name@bot`).
    #[must_use]
    fn command(self, name: impl Into<String>, h: impl Handler<S, U>) -> Self {
        let name = name.into();
        let name = name.strip_prefix('/').map(str::to_owned).unwrap_or(name);
        self.push_route(Matcher::Command(name), Arc::new(h))
    }

    /// Handles a new message whose text is exactly `text`.
    #[must_use]
    fn text(self, text: impl Into<String>, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Text(text.into()), Arc::new(h))
    }

    /// Handles a new message whose text matches `pattern` (a compiled [`Regex`]).
    #[must_use]
    fn pattern(self, pattern: Regex, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Pattern(pattern), Arc::new(h))
    }

    /// Handles any new message that has text.
    #[must_use]
    fn on_text(self, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::AnyText, Arc::new(h))
    }

    /// Handles a callback query with exactly this data.
    #[must_use]
    fn callback(self, data: impl Into<String>, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Callback(data.into()), Arc::new(h))
    }

    /// Handles a callback query whose data matches `pattern`.
    #[must_use]
    fn callback_pattern(self, pattern: Regex, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::CallbackPattern(pattern), Arc::new(h))
    }

    /// Handles any new message.
    #[must_use]
    fn on_message(self, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Message, Arc::new(h))
    }

    /// Handles every update.
    #[must_use]
    fn on_update(self, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Any, Arc::new(h))
    }

    /// Handles updates for which `pred` is true.
    #[must_use]
    fn on(self, pred: impl Fn(&U) -> bool + Send + Sync + 'static, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Custom(Arc::new(pred)), Arc::new(h))
    }
}

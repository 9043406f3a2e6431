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
///
/// A handler with settings of its own is a type that implements it:
///
/// ```
/// use stagecraft::handler::BoxFuture;
/// use stagecraft::prelude::*;
/// use stagecraft::testing::TestBot;
/// use stagecraft::handler::Handler;
///
/// struct Greet { greeting: String }
///
/// impl Handler<(), TelegramUpdate> for Greet {
///     fn call(&self, cx: Cx<()>) -> BoxFuture<'static, HandlerResult> {
///         let text = format!("{}, {}!", self.greeting, cx.update().text().unwrap_or("you"));
///         Box::pin(async move {
///             cx.reply(text);
///             Ok(Outcome::Handled)
///         })
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bot = TestBot::<()>::new(|b| b.on_text(Greet { greeting: "Hello".into() }).build());
/// assert_eq!(bot.send("Ada").await.unwrap(), ["Hello, Ada!"]);
/// # });
/// ```
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
///
/// Any `Fn(Cx<S, U>) -> impl Future<Output = Result<(), BoxError>>` is one, given to
/// [`SceneBuilder::on_leave`](crate::scene::SceneBuilder::on_leave) (or
/// [`on_expire`](crate::scene::SceneBuilder::on_expire)):
///
/// ```
/// use stagecraft::prelude::*;
/// use stagecraft::testing::TestBot;
///
/// let shop = Scene::builder("shop")
///     .on_enter(|cx: Cx<()>| async move { cx.reply("Welcome in."); Ok(Outcome::Handled) })
///     .on_leave(|cx: Cx<()>| async move { cx.reply("Come again!"); Ok(()) })
///     .command("out", |_cx: Cx<()>| async move { Ok(Outcome::leave()) })
///     .build();
/// let stage = Stage::builder().scene(shop).build().unwrap();
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bot = TestBot::<()>::new(|b| {
///     b.stage(stage)
///         .command("shop", |_cx: Cx<()>| async move { Ok(Outcome::enter("shop")) })
///         .build()
/// });
/// assert_eq!(bot.send("/shop").await.unwrap(), ["Welcome in."]);
/// assert_eq!(bot.send("/out").await.unwrap(), ["Come again!"]);
/// # });
/// ```
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
///
/// Any `Fn(Cx<S, U>, Next<S, U>) -> impl Future<Output = HandlerResult>` is one. This
/// one keeps a blocked user out of everything after it, and counts the updates of the
/// others in their session:
///
/// ```
/// use stagecraft::prelude::*;
/// use stagecraft::testing::TestBot;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bot = TestBot::<u32>::new(|b| {
///     b.middleware(|cx: Cx<u32>, next: Next<u32>| async move {
///         if cx.update().user_id() == Some(666) {
///             return Ok(Outcome::Handled); // taken: nothing after it runs
///         }
///         cx.session_mut(|n| *n += 1)?;
///         next.run(cx).await
///     })
///     .on_text(|cx: Cx<u32>| async move {
///         let n = cx.session(|n| *n)?;
///         cx.reply(format!("update #{n}"));
///         Ok(Outcome::Handled)
///     })
///     .build()
/// });
/// assert_eq!(bot.send("hi").await.unwrap(), ["update #1"]);
/// let blocked = bot.message_from(666, 666, "hi");
/// assert!(bot.texts_of(blocked).await.unwrap().is_empty());
/// # });
/// ```
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
///
/// Routes are tried in the order they were added; the first whose matcher takes the
/// update runs, and one that returns [`Outcome::Pass`] hands it to the next match.
///
/// ```
/// use stagecraft::prelude::*;
/// use stagecraft::testing::TestBot;
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let bot = TestBot::<()>::new(|b| {
///     b.command("help", |cx: Cx<()>| async move { cx.reply("Ask me anything."); Ok(Outcome::Handled) })
///         .text("ping", |cx: Cx<()>| async move { cx.reply("pong"); Ok(Outcome::Handled) })
///         .on_text(|cx: Cx<()>| async move { cx.reply("?"); Ok(Outcome::Handled) })
///         .build()
/// });
/// assert_eq!(bot.send("/help").await.unwrap(), ["Ask me anything."]);
/// assert_eq!(bot.send("ping").await.unwrap(), ["pong"]);
/// assert_eq!(bot.send("pong").await.unwrap(), ["?"]);
/// # });
/// ```
pub trait RouteBuilder<S, U>: Sized {
    #[doc(hidden)]
    fn push_route(self, matcher: Matcher<U>, handler: Arc<dyn Handler<S, U>>) -> Self;

    /// Handles `/name` (and `/name@bot`).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b.command("start", |cx: Cx<()>| async move { cx.reply("Hi!"); Ok(Outcome::Handled) }).build());
    /// assert_eq!(bot.send("/start").await.unwrap(), ["Hi!"]);
    /// assert_eq!(bot.send("/start now").await.unwrap(), ["Hi!"]); // with an argument
    /// assert!(bot.send("start").await.unwrap().is_empty());
    /// # });
    /// ```
    #[must_use]
    fn command(self, name: impl Into<String>, h: impl Handler<S, U>) -> Self {
        let name = name.into();
        let name = name.strip_prefix('/').map(str::to_owned).unwrap_or(name);
        self.push_route(Matcher::Command(name), Arc::new(h))
    }

    /// Handles a new message whose text is exactly `text`.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b.text("Menu", |cx: Cx<()>| async move { cx.reply("Here it is."); Ok(Outcome::Handled) }).build());
    /// assert_eq!(bot.send("Menu").await.unwrap(), ["Here it is."]);
    /// assert!(bot.send("menu").await.unwrap().is_empty());
    /// # });
    /// ```
    #[must_use]
    fn text(self, text: impl Into<String>, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Text(text.into()), Arc::new(h))
    }

    /// Handles a new message whose text matches `pattern` (a compiled [`Regex`]).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let digits = regex::Regex::new(r"^\d+$").unwrap();
    /// let bot = TestBot::<()>::new(|b| b.pattern(digits, |cx: Cx<()>| async move { cx.reply("a number"); Ok(Outcome::Handled) }).build());
    /// assert_eq!(bot.send("42").await.unwrap(), ["a number"]);
    /// assert!(bot.send("forty-two").await.unwrap().is_empty());
    /// # });
    /// ```
    #[must_use]
    fn pattern(self, pattern: Regex, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Pattern(pattern), Arc::new(h))
    }

    /// Handles any new message that has text.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| {
    ///     b.on_text(|cx: Cx<()>| async move {
    ///         let echo = cx.update().text().unwrap_or_default().to_uppercase();
    ///         cx.reply(echo);
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build()
    /// });
    /// assert_eq!(bot.send("hey").await.unwrap(), ["HEY"]);
    /// # });
    /// ```
    #[must_use]
    fn on_text(self, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::AnyText, Arc::new(h))
    }

    /// Handles a callback query with exactly this data.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b.callback("yes", |cx: Cx<()>| async move { cx.reply("Confirmed."); Ok(Outcome::Handled) }).build());
    /// assert_eq!(bot.texts_of(bot.callback("yes")).await.unwrap(), ["Confirmed."]);
    /// assert!(bot.texts_of(bot.callback("no")).await.unwrap().is_empty());
    /// # });
    /// ```
    #[must_use]
    fn callback(self, data: impl Into<String>, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Callback(data.into()), Arc::new(h))
    }

    /// Handles a callback query whose data matches `pattern`.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let page = regex::Regex::new(r"^page:\d+$").unwrap();
    /// let bot = TestBot::<()>::new(|b| {
    ///     b.callback_pattern(page, |cx: Cx<()>| async move {
    ///         let data = cx.update().callback_data().unwrap_or_default().to_owned();
    ///         cx.reply(format!("showing {data}"));
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build()
    /// });
    /// assert_eq!(bot.texts_of(bot.callback("page:2")).await.unwrap(), ["showing page:2"]);
    /// # });
    /// ```
    #[must_use]
    fn callback_pattern(self, pattern: Regex, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::CallbackPattern(pattern), Arc::new(h))
    }

    /// Handles any new message.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b.on_message(|cx: Cx<()>| async move { cx.reply("got it"); Ok(Outcome::Handled) }).build());
    /// assert_eq!(bot.send("anything").await.unwrap(), ["got it"]);
    /// // An edit is not a new message:
    /// assert!(bot.texts_of(bot.edit("changed")).await.unwrap().is_empty());
    /// # });
    /// ```
    #[must_use]
    fn on_message(self, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Message, Arc::new(h))
    }

    /// Handles every update.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| b.on_update(|cx: Cx<()>| async move { cx.reply("seen"); Ok(Outcome::Handled) }).build());
    /// assert_eq!(bot.send("hi").await.unwrap(), ["seen"]);
    /// assert_eq!(bot.texts_of(bot.callback("x")).await.unwrap(), ["seen"]);
    /// # });
    /// ```
    #[must_use]
    fn on_update(self, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Any, Arc::new(h))
    }

    /// Handles updates for which `pred` is true.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let bot = TestBot::<()>::new(|b| {
    ///     b.on(|u: &TelegramUpdate| u.text().is_some_and(|t| t.len() > 10), |cx: Cx<()>| async move { cx.reply("That is long."); Ok(Outcome::Handled) })
    ///         .build()
    /// });
    /// assert_eq!(bot.send("a rather long message").await.unwrap(), ["That is long."]);
    /// assert!(bot.send("short").await.unwrap().is_empty());
    /// # });
    /// ```
    #[must_use]
    fn on(self, pred: impl Fn(&U) -> bool + Send + Sync + 'static, h: impl Handler<S, U>) -> Self {
        self.push_route(Matcher::Custom(Arc::new(pred)), Arc::new(h))
    }
}

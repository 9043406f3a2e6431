//! The stage: the scene registry and router, a middleware of the chain (Telegraf's
//! `stage.middleware()`), and the one interpreter of transitions.

mod mermaid;
mod timers;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

#[doc(no_inline)]
pub use crate::outcome::{Enter, MAX_DEPTH, MAX_TRANSITIONS, Outcome};

use crate::context::{BoxFuture, Cx, Interpret};
use crate::error::{Error, Result};
use crate::handler::{Handler, HandlerResult, Matcher, Middleware, Next, RouteBuilder, Routes};
use crate::record::{Frame, SceneState, SessionData};
use crate::scene::{Recovery, Scene};
use crate::update::Update;

/// The scene registry and router (Telegraf's `Stage`).
///
/// On every update it drops the stack's top frames that expired or name an unknown
/// scene, runs the stage-level handlers (before any scene), then the active scene. A
/// scene that does not take the update passes it on to the handlers after the stage.
///
/// ```
/// use stagecraft::prelude::*;
///
/// let stage: Stage<(), TelegramUpdate> = Stage::builder()
///     .scene(Scene::builder("a").build())
///     .command("where", |cx: Cx<()>| async move {
///         let s = cx.current_scene().unwrap_or_else(|| "none".into());
///         cx.reply(format!("scene={s}"));
///         Ok(Outcome::Handled)
///     })
///     .build()
///     .unwrap();
/// assert!(stage.scene("a").is_some());
/// ```
///
/// A `Stage` is a cheap handle (`Clone` shares it) and a [`Middleware`]: add it with
/// [`PipelineBuilder::stage`](crate::pipeline::PipelineBuilder::stage), which also makes
/// it the interpreter of transitions returned outside any stage.
pub struct Stage<S, U = crate::update::TelegramUpdate> {
    inner: Arc<StageInner<S, U>>,
}

struct StageInner<S, U> {
    scenes: HashMap<String, Arc<Scene<S, U>>, foldhash::fast::RandomState>,
    routes: Routes<S, U>,
    default_scene: Option<String>,
    ttl: Option<u32>,
    /// What the user hears when a stored frame could not be used (`None`: nothing).
    recovery_notice: Option<String>,
    /// Scenes declared as entered from outside any scene ([`StageBuilder::entry`]).
    entries: Vec<String>,
    /// Whether any scene declares a timeout or expiry hooks (set by `build`).
    timers: bool,
    /// The notice a press of a button of a step that is over is answered with.
    stale_button_notice: Option<String>,
}

/// What a press of a button bound to a step the user is no longer at is answered with
/// by default (see [`StageBuilder::stale_button_notice`]).
pub const DEFAULT_STALE_BUTTON_NOTICE: &str = "This button is no longer active.";

/// What the user hears by default when their stored conversation could not be resumed
/// (see [`StageBuilder::recovery_notice`]).
pub const DEFAULT_RECOVERY_NOTICE: &str =
    "Sorry, the bot was updated and could not resume where we were. Let's pick up again.";

impl<S, U> Clone for Stage<S, U> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<S, U> fmt::Debug for Stage<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl<S, U> fmt::Debug for StageInner<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stage")
            .field("scenes", &self.scenes.keys().collect::<Vec<_>>())
            .field("routes", &self.routes)
            .field("default_scene", &self.default_scene)
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// Builds a [`Stage`].
pub struct StageBuilder<S, U = crate::update::TelegramUpdate> {
    stage: StageInner<S, U>,
}

impl<S, U> fmt::Debug for StageBuilder<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.stage.fmt(f)
    }
}

impl<S, U> Stage<S, U> {
    /// Starts building a stage.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .command("cancel", |_cx: Cx<()>| async move { Ok(Outcome::leave()) }) // in every scene
    ///     .scene(Scene::builder("help")
    ///         .on_leave(|cx: Cx<()>| async move { cx.reply("Cancelled."); Ok(()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |_cx: Cx<()>| async move { Ok(Outcome::enter("help")) })
    ///     .build());
    /// bot.send("/help").await.unwrap();
    /// assert_eq!(bot.send("/cancel").await.unwrap(), ["Cancelled."]);
    /// # });
    /// ```
    #[must_use]
    pub fn builder() -> StageBuilder<S, U> {
        StageBuilder {
            stage: StageInner {
                scenes: HashMap::default(),
                routes: Routes::default(),
                default_scene: None,
                ttl: None,
                recovery_notice: Some(DEFAULT_RECOVERY_NOTICE.to_owned()),
                entries: Vec::new(),
                timers: false,
                stale_button_notice: Some(DEFAULT_STALE_BUTTON_NOTICE.to_owned()),
            },
        }
    }

    /// A registered scene.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let stage: Stage<(), TelegramUpdate> = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::Next) })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(stage.scene("signup").map(|s| s.step_count()), Some(2));
    /// assert!(stage.scene("checkout").is_none());
    /// ```
    #[must_use]
    pub fn scene(&self, id: &str) -> Option<&Scene<S, U>> {
        self.inner.scenes.get(id).map(AsRef::as_ref)
    }
}

impl<S, U> StageBuilder<S, U> {
    /// Registers a scene; a scene with the same id is replaced (as in Telegraf).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let stage: Stage<(), TelegramUpdate> = Stage::builder()
    ///     .scene(Scene::builder("help").build())
    ///     .scene(Scene::builder("settings").build())
    ///     .build()
    ///     .unwrap();
    /// assert!(stage.scene("help").is_some() && stage.scene("settings").is_some());
    /// ```
    #[must_use]
    pub fn scene(mut self, scene: Scene<S, U>) -> Self {
        self.stage.scenes.insert(scene.id.clone(), Arc::new(scene));
        self
    }

    /// What the user is told when their stored conversation could not be resumed: the
    /// active frame's state did not decode (after upgrades) or its scene is no longer
    /// registered (default: [`DEFAULT_RECOVERY_NOTICE`]; `None`: say nothing, as
    /// before). The scene's [`Recovery`] applies after it.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .recovery_notice(Some("We had to start over, sorry."))
    ///     .scene(Wizard::builder("signup")
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b.stage(stage).build());
    /// // A session stored by an older build, at a state type this build no longer has.
    /// let old = r#"{"v":1,"data":null,
    ///     "scenes":[{"scene":"signup","cursor":1,"entered_at":0,"state":{"signup.v0":{}}}]}"#;
    /// bot.store().save(&bot.key(), old.as_bytes(), None).await.unwrap();
    /// // The notice, then the wizard again from its start (`Recovery::Restart`).
    /// assert_eq!(bot.send("Ada").await.unwrap(), ["We had to start over, sorry.", "Your name?"]);
    /// # });
    /// ```
    #[must_use]
    pub fn recovery_notice(mut self, notice: Option<impl Into<String>>) -> Self {
        self.stage.recovery_notice = notice.map(Into::into);
        self
    }

    /// The notice a press of a button of a step that is over is answered with
    /// (default: [`DEFAULT_STALE_BUTTON_NOTICE`]; `None`: the press is answered without
    /// one).
    ///
    /// Callback buttons made with [`Button::callback`](crate::transport::Button::callback)
    /// carry a tag of the frame and step that sent them. A press whose tag is not the
    /// one of the step the user is at reaches no handler of the stage or after it: it
    /// is answered, and nothing else happens (the session is left as it was).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::transport::{Button, Reply};
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage: Stage<(), TelegramUpdate> = Stage::builder()
    ///     .stale_button_notice(Some("Too late!"))
    ///     .scene(Wizard::builder("ask")
    ///         .step(|cx: Cx<()>| async move {
    ///             cx.send(Reply::text("Sure?").inline_keyboard([[Button::callback("Yes", "yes")]]))?;
    ///             Ok(Outcome::Next)
    ///         })
    ///         .step(|cx: Cx<()>| async move {
    ///             let answer = cx.update().callback_payload().unwrap_or_default().to_owned();
    ///             cx.answer_callback(None);
    ///             cx.reply(format!("got {answer}"));
    ///             Ok(Outcome::leave())
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("ask", |_cx: Cx<()>| async move { Ok(Outcome::enter("ask")) })
    ///     .build());
    /// bot.send("/ask").await.unwrap();
    /// assert_eq!(bot.press("Yes").await.unwrap(), ["got yes"]);
    /// // The step is over: the same button again is only answered.
    /// assert!(bot.press("Yes").await.unwrap().is_empty());
    /// assert_eq!(bot.last_call().unwrap().text_of(), Some("Too late!"));
    /// # });
    /// ```
    #[must_use]
    pub fn stale_button_notice(mut self, notice: Option<impl Into<String>>) -> Self {
        self.stage.stale_button_notice = notice.map(Into::into);
        self
    }

    /// The scene that is active when the stack is empty. It is active without its enter
    /// hook having run, and leaving it runs its leave hook but it stays the default (T3).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("lobby")
    ///         .on_text(|cx: Cx<()>| async move { cx.reply("You are in the lobby."); Ok(Outcome::Handled) })
    ///         .build())
    ///     .default_scene("lobby")
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b.stage(stage).build());
    /// // No scene was ever entered, yet the lobby answers.
    /// assert_eq!(bot.send("hello").await.unwrap(), ["You are in the lobby."]);
    /// # });
    /// ```
    #[must_use]
    pub fn default_scene(mut self, id: impl Into<String>) -> Self {
        self.stage.default_scene = Some(id.into());
        self
    }

    /// Declares that `scene` is entered from outside any scene (a bot command such as
    /// `/start`), for the picture of the flow ([`Stage::to_mermaid`]). A declaration
    /// only: it changes no routing.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let stage: Stage<(), TelegramUpdate> = Stage::builder()
    ///     .entry("signup") // the bot's /start enters it
    ///     .scene(Wizard::builder("signup")
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// assert!(stage.to_mermaid().contains("outside -->|enter| s0"));
    /// ```
    #[must_use]
    pub fn entry(mut self, scene: impl Into<String>) -> Self {
        self.stage.entries.push(scene.into());
        self
    }

    /// A TTL in seconds for scenes that declare none (Telegraf's stage `ttl`).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .ttl(300) // for every scene without its own
    ///     .scene(Scene::builder("menu")
    ///         .on_text(|cx: Cx<()>| async move { cx.reply("(menu)"); Ok(Outcome::Handled) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("menu", |_cx: Cx<()>| async move { Ok(Outcome::enter("menu")) })
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("Send /menu."); Ok(Outcome::Handled) })
    ///     .build());
    /// bot.send("/menu").await.unwrap();
    /// bot.advance(200);
    /// assert_eq!(bot.send("hi").await.unwrap(), ["(menu)"]);
    /// bot.advance(200);
    /// assert_eq!(bot.send("hi").await.unwrap(), ["Send /menu."]);
    /// # });
    /// ```
    #[must_use]
    pub fn ttl(mut self, secs: u32) -> Self {
        self.stage.ttl = Some(secs);
        self
    }

    /// Finishes the stage.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let ok: Result<Stage<(), TelegramUpdate>> = Stage::builder()
    ///     .scene(Scene::builder("lobby").build())
    ///     .default_scene("lobby")
    ///     .build();
    /// assert!(ok.is_ok());
    /// let missing: Result<Stage<(), TelegramUpdate>> = Stage::builder().default_scene("lobby").build();
    /// assert!(matches!(missing, Err(Error::UnknownScene(id)) if id == "lobby"));
    /// ```
    ///
    /// # Errors
    /// [`Error::UnknownScene`] when the default scene is not registered.
    pub fn build(mut self) -> Result<Stage<S, U>> {
        if let Some(d) = &self.stage.default_scene {
            if !self.stage.scenes.contains_key(d) {
                return Err(Error::UnknownScene(d.clone()));
            }
        }
        self.stage.timers = self
            .stage
            .scenes
            .values()
            .any(|s| s.has_timeouts() || s.hooks_expiry());
        Ok(Stage {
            inner: Arc::new(self.stage),
        })
    }
}

impl<S, U> RouteBuilder<S, U> for StageBuilder<S, U> {
    fn push_route(mut self, matcher: Matcher<U>, handler: Arc<dyn Handler<S, U>>) -> Self {
        self.stage.routes.list.push((matcher, handler));
        self
    }
}

impl<S: SessionData, U: Update> Stage<S, U> {
    fn lookup(&self, id: &str) -> Result<Arc<Scene<S, U>>> {
        self.inner
            .scenes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownScene(id.to_owned()))
    }

    fn is_registered(&self, id: &str) -> bool {
        self.inner.scenes.contains_key(id)
    }

    /// Drops top frames that expired; recovers a top frame that cannot be used (its
    /// state did not decode, or its scene is not registered) by its scene's
    /// [`Recovery`], telling the user; puts the default scene on an empty stack.
    /// Returns the scene to enter afresh when a recovery restarts one.
    fn settle(&self, cx: &Cx<S, U>) -> Result<Option<String>> {
        let now = cx.now_s();
        let mut restart = None;
        let mut st = cx.state();
        loop {
            match st.stack().last() {
                Some(top)
                    if self.is_resumable(top) && top.expires.is_some() && top.is_expired(now) =>
                {
                    tracing::debug!(target: "stagecraft::stage", event = "expire", key = ?cx.key(),
                        scene = %top.scene, "scene expired");
                    crate::observe::expiry(&top.scene);
                    st.stack_mut()?.pop();
                }
                Some(top) if !self.is_resumable(top) => {
                    restart = self.recover_top(cx, &mut st, now)?;
                    if restart.is_some() {
                        break;
                    }
                }
                _ => break,
            }
        }
        if st.stack().is_empty() && restart.is_none() {
            let default = self.inner.default_scene.as_ref();
            if let Some(scene) = default.and_then(|d| self.inner.scenes.get(d)) {
                let frame = self.new_frame(scene, None, now);
                st.stack_mut()?.push(frame);
            }
        }
        Ok(restart)
    }

    /// Whether a stored frame can be resumed: its scene is registered and its state
    /// decoded.
    fn is_resumable(&self, frame: &Frame) -> bool {
        self.is_registered(&frame.scene) && !frame.is_undecodable()
    }

    /// Recovers the top frame, which cannot be resumed, by its scene's [`Recovery`]
    /// (an unregistered scene's is [`Recovery::Leave`]): tells the user, keeps a copy of
    /// the frame in the record's `lost` field, pops it (or clears the stack). Returns the
    /// scene to enter afresh under [`Recovery::Restart`].
    fn recover_top(
        &self,
        cx: &Cx<S, U>,
        st: &mut crate::context::SessionState<S>,
        now: i64,
    ) -> Result<Option<String>> {
        let Some(top) = st.stack().last() else {
            return Ok(None);
        };
        let scene = self.inner.scenes.get(&top.scene);
        let recovery = scene.map_or(Recovery::Leave, |s| s.recovery);
        let id = top.scene.clone();
        let why = match (
            scene,
            (*top.state)
                .as_any()
                .downcast_ref::<crate::record::Undecodable>(),
        ) {
            (None, _) => format!("scene `{id}` is not registered"),
            (Some(_), Some(u)) => u.error.clone(),
            (Some(_), None) => String::new(),
        };
        crate::observe::recovery(&id);
        tracing::warn!(target: "stagecraft::stage", event = "recover", key = ?cx.key(), scene = %id,
            registered = scene.is_some(), ?recovery, error = %why,
            "the stored frame cannot be resumed; recovering");
        let copy = crate::record::lost_frame(top, now, &why);
        crate::record::push_lost(&mut st.ledger.lost, copy);
        if let Some(notice) = &self.inner.recovery_notice {
            cx.reply(notice.clone());
        }
        let stack = st.stack_mut()?;
        match recovery {
            Recovery::Clear => stack.clear(),
            Recovery::Leave => drop(stack.pop()),
            Recovery::Restart => {
                stack.pop();
                return Ok(Some(id));
            }
        }
        Ok(None)
    }

    fn new_frame(
        &self,
        scene: &Scene<S, U>,
        state: Option<Box<dyn SceneState>>,
        now: i64,
    ) -> Frame {
        let ttl = scene.ttl.or(scene.idle_ttl).or(self.inner.ttl);
        let mut frame = Frame::new(
            scene.id.clone(),
            now,
            state.unwrap_or_else(|| (scene.init_state)()),
        );
        frame.cursor = scene.is_wizard().then_some(0);
        frame.expires = ttl.map(|t| now.saturating_add(i64::from(t)));
        frame
    }

    /// The stage as a link of the middleware chain (which loaded the session before
    /// calling it): route the update, apply what the handler that took it answered, or
    /// pass it on down the chain.
    async fn run(self, cx: Cx<S, U>, next: Next<S, U>) -> HandlerResult {
        if !self.inner.timers {
            return match self.route(&cx).await? {
                Some(outcome) => {
                    self.apply_outcome(cx, outcome).await?;
                    Ok(Outcome::Handled)
                }
                None => next.run_boxed(cx).await,
            };
        }
        let result = match self.route(&cx).await? {
            Some(outcome) => {
                self.apply_outcome(cx.clone(), outcome).await?;
                Ok(Outcome::Handled)
            }
            None => next.run_boxed(cx.clone()).await,
        };
        // The user was heard from: the active scene's timeout starts again.
        if result.is_ok() {
            self.arm(&cx)?;
        }
        result
    }

    /// Runs the handler that takes the update: a stage route, a route of the active
    /// scene, or the wizard step at the cursor. `None`: nothing here took it.
    async fn route(&self, cx: &Cx<S, U>) -> Result<Option<Outcome>> {
        if self.inner.timers {
            // Boxed: kept out of the route's future for stages without timers.
            Box::pin(self.expire_with_hooks(cx)).await?;
        }
        let restart = self.settle(cx)?;
        {
            // The update's span says where the update found the user, whichever handler
            // takes it (a stage-level command too).
            let st = cx.state();
            if let Some(top) = st.stack().last() {
                let span = tracing::Span::current();
                span.record("scene", top.scene.as_str());
                if let Some(c) = top.cursor {
                    span.record("step", c);
                }
            }
        }
        if restart.is_none() && cx.is_stale_press() {
            // A button of a step that is over: answered, and nothing else.
            tracing::debug!(target: "stagecraft::stage", event = "stale_button", key = ?cx.key(),
                "a button of a step that is over was pressed; answered");
            cx.answer_callback(self.inner.stale_button_notice.clone());
            return Ok(Some(Outcome::Handled));
        }
        if let Some(o) = self.inner.routes.run(cx).await? {
            return Ok(Some(o));
        }
        if let Some(id) = restart {
            // The update that found it broken is taken by the restart.
            return Ok(Some(restart_outcome(cx, id)));
        }
        let active = {
            let now = cx.now_s();
            let mut st = cx.state();
            let top = st.stack().last();
            let found =
                top.and_then(|t| Some((self.inner.scenes.get(&t.scene).cloned()?, t.cursor)));
            if found.is_some() {
                // Activity: the idle TTL starts again, for the active scene and for the
                // parents waiting beneath it (a user busy in a sub-scene is not idle).
                let idle = |f: &Frame| self.inner.scenes.get(&f.scene).and_then(|s| s.idle_ttl);
                if st.stack().iter().any(|f| idle(f).is_some()) {
                    for frame in st.stack_mut()? {
                        // One that ran out already stays out (dropped when uncovered).
                        if let Some(idle) = idle(frame).filter(|_| !frame.is_expired(now)) {
                            frame.expires = Some(now.saturating_add(i64::from(idle)));
                        }
                    }
                }
            }
            found
        };
        let Some((scene, cursor)) = active else {
            return Ok(None);
        };
        if let Some(o) = scene.routes.run(cx).await? {
            return Ok(Some(o));
        }
        let Some(steps) = &scene.steps else {
            return Ok(None);
        };
        let step = cursor
            .and_then(|c| usize::try_from(c).ok())
            .and_then(|c| steps.get(c))
            .cloned();
        let Some(step) = step else {
            // A cursor out of range leaves the wizard; the update is consumed
            // (checklist item W1 in tests/checklist).
            return Ok(Some(Outcome::leave()));
        };
        match step.call(cx.clone()).await.map_err(Error::handler)? {
            Outcome::Pass => Ok(None),
            o => Ok(Some(o)),
        }
    }

    /// The one interpreter of transitions.
    ///
    /// Cursor moves (the common answer of a wizard step) are applied here, without
    /// boxing (by the context itself); every other transition goes through
    /// [`apply_boxed`](Self::apply_boxed),
    /// whose box breaks the recursion (hooks and steps run by a transition answer with
    /// transitions of their own).
    async fn apply_outcome(&self, cx: Cx<S, U>, outcome: Outcome) -> Result<()> {
        if !outcome.is_transition() {
            return Ok(());
        }
        if outcome.is_cursor_move() {
            return cx.apply(outcome).await;
        }
        self.clone().apply_boxed(cx, outcome).await
    }

    fn apply_boxed(self, cx: Cx<S, U>, outcome: Outcome) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            cx.begin_transition(&outcome)?;
            match outcome {
                Outcome::NextNow | Outcome::GotoNow(_) => {
                    cx.state()
                        .move_cursor(|c| outcome.moved_cursor(c).unwrap_or(c))?;
                    self.run_step(cx).await
                }
                Outcome::Enter(e) => self.enter(cx, e, false).await,
                Outcome::Push(e) => self.enter(cx, e, true).await,
                Outcome::Replace(e) => {
                    self.lookup(&e.id)?;
                    self.clear(&cx).await?;
                    self.enter(cx, e, true).await
                }
                Outcome::Reenter => {
                    let Some(id) = cx.current_scene() else {
                        return Ok(());
                    };
                    let scene = self.lookup(&id)?;
                    self.run_leave_hooks(&scene, &cx).await?;
                    let old = cx.state().stack_mut()?.pop();
                    let e = Enter {
                        id,
                        state: old.map(|f| f.state),
                        silent: false,
                    };
                    self.enter(cx, e, true).await
                }
                Outcome::Leave(result) => self.leave(cx, result).await,
                Outcome::Clear => self.clear(&cx).await,
                // Not transitions, or cursor moves: `apply` took them.
                Outcome::Handled
                | Outcome::Pass
                | Outcome::Next
                | Outcome::Back
                | Outcome::Goto(_) => Ok(()),
            }
        })
    }

    /// Runs the active wizard's current step with this update (used by `...Now`).
    async fn run_step(&self, cx: Cx<S, U>) -> Result<()> {
        let (scene, cursor) = {
            let st = cx.state();
            let top = st.top()?;
            (self.lookup(&top.scene)?, top.cursor)
        };
        let step = scene
            .steps
            .as_ref()
            .zip(cursor.and_then(|c| usize::try_from(c).ok()))
            .and_then(|(steps, c)| steps.get(c).cloned());
        match step {
            Some(step) => {
                let o = step.call(cx.clone()).await.map_err(Error::handler)?;
                self.apply_outcome(cx, o).await
            }
            None => self.apply_outcome(cx, Outcome::leave()).await,
        }
    }

    async fn enter(&self, cx: Cx<S, U>, e: Enter, push: bool) -> Result<()> {
        let scene = self.lookup(&e.id)?;
        if !push {
            if let Some(top) = cx.current_scene() {
                if !e.silent {
                    if let Some(old) = self.inner.scenes.get(&top).cloned() {
                        self.run_leave_hooks(&old, &cx).await?;
                    }
                }
                cx.state().stack_mut()?.pop();
            }
        }
        {
            let frame = self.new_frame(&scene, e.state, cx.now_s());
            let mut st = cx.state();
            let stack = st.stack_mut()?;
            if stack.len() >= MAX_DEPTH {
                return Err(Error::Transition("the scene stack is too deep"));
            }
            stack.push(frame);
        }
        tracing::debug!(target: "stagecraft::stage", event = "enter", key = ?cx.key(),
            scene = %scene.id, silent = e.silent, "entered");
        crate::observe::enter(&scene.id);
        if e.silent {
            return Ok(());
        }
        for hook in &scene.on_enter {
            let o = hook.call(cx.clone()).await.map_err(Error::handler)?;
            if o.is_transition() {
                return self.apply_outcome(cx, o).await;
            }
        }
        if scene.is_wizard() {
            return self.run_step(cx).await;
        }
        Ok(())
    }

    async fn run_leave_hooks(&self, scene: &Scene<S, U>, cx: &Cx<S, U>) -> Result<()> {
        cx.state().set_leaving(true);
        let mut result = Ok(());
        for hook in &scene.on_leave {
            if let Err(e) = hook.call(cx.clone()).await {
                result = Err(Error::handler(e));
                break;
            }
        }
        cx.state().set_leaving(false);
        result
    }

    async fn leave(&self, cx: Cx<S, U>, result: Option<crate::outcome::Handoff>) -> Result<()> {
        let Some(top) = cx.current_scene() else {
            return Ok(());
        };
        if let Some(scene) = self.inner.scenes.get(&top).cloned() {
            self.run_leave_hooks(&scene, &cx).await?;
        }
        let (parent, restart) = {
            let now = cx.now_s();
            let mut st = cx.state();
            st.stack_mut()?.pop();
            // A parent that expired while its child ran goes silently; one that cannot be
            // resumed is recovered by its policy.
            let mut restart = None;
            while let Some(p) = st.stack().last() {
                if !self.is_resumable(p) {
                    restart = self.recover_top(&cx, &mut st, now)?;
                    if restart.is_some() {
                        break;
                    }
                } else if p.is_expired(now) {
                    st.stack_mut()?.pop();
                } else {
                    break;
                }
            }
            // The parent is active again: that is activity for its idle TTL.
            let parent = match restart {
                Some(_) => None,
                None => st.stack_mut()?.last_mut().and_then(|p| {
                    let scene = self.inner.scenes.get(&p.scene).cloned()?;
                    if let Some(idle) = scene.idle_ttl {
                        p.expires = Some(now.saturating_add(i64::from(idle)));
                    }
                    Some(scene)
                }),
            };
            (parent, restart)
        };
        if let Some(id) = restart {
            let o = restart_outcome(&cx, id);
            return self.apply_outcome(cx, o).await;
        }
        tracing::debug!(target: "stagecraft::stage", event = "leave", key = ?cx.key(), scene = %top, "left");
        let Some(parent) = parent else { return Ok(()) };
        let Some(resume) = parent.on_resume.clone() else {
            return Ok(());
        };
        cx.set_result(result);
        let o = resume.call(cx.clone()).await.map_err(Error::handler)?;
        cx.set_result(None);
        self.apply_outcome(cx, o).await
    }

    async fn clear(&self, cx: &Cx<S, U>) -> Result<()> {
        while let Some(top) = cx.current_scene() {
            if let Some(scene) = self.inner.scenes.get(&top).cloned() {
                self.run_leave_hooks(&scene, cx).await?;
            }
            cx.state().stack_mut()?.pop();
        }
        Ok(())
    }

    /// This stage as the interpreter of a context's transitions.
    pub(crate) fn interpreter(&self) -> Arc<dyn Interpret<S, U>> {
        Arc::new(self.clone())
    }
}

impl<S: SessionData, U: Update> Middleware<S, U> for Stage<S, U> {
    fn call(&self, cx: Cx<S, U>, next: Next<S, U>) -> BoxFuture<'static, HandlerResult> {
        let stage = self.clone();
        Box::pin(async move {
            cx.enter_stage(Interpret::id(&stage), || stage.interpreter());
            stage.run(cx, next).await
        })
    }
}

impl<S: SessionData, U: Update> Interpret<S, U> for Stage<S, U> {
    fn apply(&self, cx: Cx<S, U>, outcome: Outcome) -> BoxFuture<'static, Result<()>> {
        // Cursor moves never come here (the context applies them): every outcome that
        // does goes through the one boxed interpreter, with no second box.
        self.clone().apply_boxed(cx, outcome)
    }

    fn id(&self) -> usize {
        Arc::as_ptr(&self.inner).cast::<()>() as usize
    }
}

/// The transition that enters scene `id` again under [`Recovery::Restart`]: on top of
/// what is beneath it, or as the only scene.
fn restart_outcome<S: SessionData, U: Update>(cx: &Cx<S, U>, id: String) -> Outcome {
    if cx.state().stack().is_empty() {
        Outcome::enter(id)
    } else {
        Outcome::push(id)
    }
}

impl<S: Send + Sync + 'static, U: Send + Sync + 'static> crate::record::StateUpgrades
    for Stage<S, U>
{
    fn upgrade(
        &self,
        scene: &str,
        tag: &str,
        inner: serde_json::Value,
    ) -> Option<std::result::Result<(String, serde_json::Value), crate::error::BoxError>> {
        let (next, f) = self.inner.scenes.get(scene)?.upgrades.get(tag)?;
        Some(f(inner).map(|v| (next.clone(), v)))
    }
}

//! The stage: routes each update to the active scene and applies transitions.

mod outcome;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

pub use outcome::{Enter, Outcome};

use crate::context::{Cx, SessionState};
use crate::error::{Error, Result};
use crate::handler::{BoxFuture, Handler, HandlerResult, Matcher, RouteBuilder, Routes};
use crate::pipeline::Next;
use crate::scene::{Frame, Scene};
use crate::session::SessionData;
use crate::update::Update;

/// How many transitions one update may make before it is taken for a loop.
pub const MAX_TRANSITIONS: usize = 64;
/// How deep the scene stack may grow.
pub const MAX_DEPTH: usize = 32;

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
pub struct Stage<S, U> {
    scenes: HashMap<String, Arc<Scene<S, U>>, foldhash::fast::RandomState>,
    routes: Routes<S, U>,
    default_scene: Option<String>,
    ttl: Option<u32>,
}

impl<S, U> fmt::Debug for Stage<S, U> {
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
pub struct StageBuilder<S, U> {
    stage: Stage<S, U>,
}

impl<S, U> fmt::Debug for StageBuilder<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.stage.fmt(f)
    }
}

impl<S, U> Stage<S, U> {
    /// Starts building a stage.
    #[must_use]
    pub fn builder() -> StageBuilder<S, U> {
        StageBuilder {
            stage: Stage {
                scenes: HashMap::default(),
                routes: Routes::default(),
                default_scene: None,
                ttl: None,
            },
        }
    }

    /// A registered scene.
    #[must_use]
    pub fn scene(&self, id: &str) -> Option<&Scene<S, U>> {
        self.scenes.get(id).map(AsRef::as_ref)
    }
}

impl<S, U> StageBuilder<S, U> {
    /// Registers a scene; a scene with the same id is replaced (as in Telegraf).
    #[must_use]
    pub fn scene(mut self, scene: Scene<S, U>) -> Self {
        self.stage.scenes.insert(scene.id.clone(), Arc::new(scene));
        self
    }

    /// The scene that is active when the stack is empty. It is active without its enter
    /// hook having run, and leaving it runs its leave hook but it stays the default (T3).
    #[must_use]
    pub fn default_scene(mut self, id: impl Into<String>) -> Self {
        self.stage.default_scene = Some(id.into());
        self
    }

    /// A TTL in seconds for scenes that declare none (Telegraf's stage `ttl`).
    #[must_use]
    pub fn ttl(mut self, secs: u32) -> Self {
        self.stage.ttl = Some(secs);
        self
    }

    /// Finishes the stage.
    ///
    /// # Errors
    /// [`Error::UnknownScene`] when the default scene is not registered.
    pub fn build(self) -> Result<Stage<S, U>> {
        if let Some(d) = &self.stage.default_scene {
            if !self.stage.scenes.contains_key(d) {
                return Err(Error::UnknownScene(d.clone()));
            }
        }
        Ok(self.stage)
    }
}

impl<S, U> RouteBuilder<S, U> for StageBuilder<S, U> {
    fn push_route(mut self, matcher: Matcher<U>, handler: Arc<dyn Handler<S, U>>) -> Self {
        self.stage.routes.list.push((matcher, handler));
        self
    }
}

/// Moves the active wizard's cursor (no step runs).
/// Counts a transition, refusing it inside a leave hook and past [`MAX_TRANSITIONS`].
fn begin_transition<S: SessionData, U: Update>(cx: &Cx<S, U>, outcome: &Outcome) -> Result<()> {
    {
        let mut st = cx.state();
        if st.leaving > 0 {
            return Err(Error::Transition(
                "scenes cannot change inside a leave hook",
            ));
        }
        st.transitions += 1;
        if st.transitions > MAX_TRANSITIONS {
            return Err(Error::TransitionLoop(MAX_TRANSITIONS));
        }
    }
    tracing::debug!(target: "stagecraft::stage", key = ?cx.key(), ?outcome, "transition");
    Ok(())
}

pub(crate) fn move_cursor<S>(st: &mut SessionState<S>, f: impl FnOnce(i64) -> i64) -> Result<()> {
    let frame = st.stack.last_mut().ok_or(Error::NoActiveScene)?;
    let cursor = frame
        .cursor
        .as_mut()
        .ok_or(Error::Transition("the active scene is not a wizard"))?;
    *cursor = f(*cursor);
    st.dirty = true;
    Ok(())
}

/// Runs the first matching route of `routes`; a route answering `Pass` lets the next
/// matching one try. `None`: no route took the update.
pub(crate) async fn run_routes<S: SessionData, U: Update>(
    routes: &Routes<S, U>,
    cx: &Cx<S, U>,
    bot: Option<&str>,
) -> Result<Option<Outcome>> {
    match routes.next_match(cx.update(), bot, 0) {
        Some(first) => run_routes_at(routes, cx, bot, first).await,
        None => Ok(None),
    }
}

/// Like [`run_routes`], starting at `first`, a route already known to match (so its
/// matcher is not evaluated again).
pub(crate) async fn run_routes_at<S: SessionData, U: Update>(
    routes: &Routes<S, U>,
    cx: &Cx<S, U>,
    bot: Option<&str>,
    first: usize,
) -> Result<Option<Outcome>> {
    let mut next = Some(first);
    while let Some(i) = next {
        match routes.list[i]
            .1
            .call(cx.clone())
            .await
            .map_err(Error::handler)?
        {
            Outcome::Pass => next = routes.next_match(cx.update(), bot, i + 1),
            other => return Ok(Some(other)),
        }
    }
    Ok(None)
}

impl<S: SessionData, U: Update> Stage<S, U> {
    fn lookup(&self, id: &str) -> Result<Arc<Scene<S, U>>> {
        self.scenes
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownScene(id.to_owned()))
    }

    /// Drops top frames that expired or name an unregistered scene; puts the default
    /// scene on an empty stack.
    fn settle(&self, cx: &Cx<S, U>) {
        let mut st = cx.state();
        while let Some(top) = st.stack.last() {
            if !self.scenes.contains_key(&top.scene) {
                tracing::warn!(target: "stagecraft::stage", key = ?cx.key(), scene = %top.scene,
                    "dropping a stored frame of an unregistered scene");
            } else if top.expires.is_some() && top.is_expired(cx.now_s()) {
                tracing::debug!(target: "stagecraft::stage", key = ?cx.key(), scene = %top.scene, "scene expired");
            } else {
                break;
            }
            st.stack.pop();
            st.dirty = true;
        }
        if st.stack.is_empty() {
            if let Some(scene) = self.default_scene.as_ref().and_then(|d| self.scenes.get(d)) {
                let frame = self.new_frame(scene, None, cx.now_s());
                st.stack.push(frame);
                st.dirty = true;
            }
        }
    }

    fn new_frame(
        &self,
        scene: &Scene<S, U>,
        state: Option<Box<dyn crate::scene::SceneState>>,
        now: i64,
    ) -> Frame {
        let ttl = scene.ttl.or(scene.idle_ttl).or(self.ttl);
        Frame {
            scene: scene.id.clone(),
            cursor: scene.is_wizard().then_some(0),
            entered_at: now,
            expires: ttl.map(|t| now + i64::from(t)),
            state: state.unwrap_or_else(|| (scene.init_state)()),
        }
    }

    /// The stage as a link of the middleware chain.
    pub(crate) async fn run(self: Arc<Self>, cx: Cx<S, U>, next: Next<S, U>) -> HandlerResult {
        cx.ensure_loaded().await?;
        self.settle(&cx);
        let bot = cx.inner.shared.bot_username.as_deref();
        if let Some(o) = run_routes(&self.routes, &cx, bot).await? {
            self.apply(cx, o).await?;
            return Ok(Outcome::Handled);
        }
        let active = {
            let mut guard = cx.state();
            let st = &mut *guard;
            let found = st.stack.last_mut().and_then(|top| {
                let scene = self.scenes.get(&top.scene).cloned()?;
                if let Some(idle) = scene.idle_ttl {
                    top.expires = Some(cx.now_s() + i64::from(idle));
                }
                Some((scene, top.cursor))
            });
            if found
                .as_ref()
                .is_some_and(|(scene, _)| scene.idle_ttl.is_some())
            {
                st.dirty = true;
            }
            found
        };
        let Some((scene, cursor)) = active else {
            return next.run_boxed(cx).await;
        };
        let span = tracing::Span::current();
        span.record("scene", scene.id.as_str());
        if let Some(c) = cursor {
            span.record("step", c);
        }
        if let Some(o) = run_routes(&scene.routes, &cx, bot).await? {
            self.apply(cx, o).await?;
            return Ok(Outcome::Handled);
        }
        let Some(steps) = &scene.steps else {
            return next.run_boxed(cx).await;
        };
        let step = cursor
            .and_then(|c| usize::try_from(c).ok())
            .and_then(|c| steps.get(c))
            .cloned();
        let Some(step) = step else {
            // W1: a cursor out of range leaves the wizard; the update is consumed.
            self.apply(cx, Outcome::leave()).await?;
            return Ok(Outcome::Handled);
        };
        match step.call(cx.clone()).await.map_err(Error::handler)? {
            Outcome::Pass => next.run_boxed(cx).await,
            o => {
                self.apply(cx, o).await?;
                Ok(Outcome::Handled)
            }
        }
    }

    /// The one interpreter of transitions.
    ///
    /// Cursor moves (the common answer of a wizard step) are applied here, without
    /// boxing; every other transition goes through [`apply_boxed`](Self::apply_boxed),
    /// whose box breaks the recursion (hooks and steps run by a transition answer with
    /// transitions of their own).
    pub(crate) async fn apply(self: Arc<Self>, cx: Cx<S, U>, outcome: Outcome) -> Result<()> {
        match outcome {
            Outcome::Handled | Outcome::Pass => Ok(()),
            Outcome::Next | Outcome::Back | Outcome::Goto(_) => {
                begin_transition(&cx, &outcome)?;
                let mut st = cx.state();
                match outcome {
                    Outcome::Next => move_cursor(&mut st, |c| c.saturating_add(1)),
                    Outcome::Back => move_cursor(&mut st, |c| c.saturating_sub(1)),
                    Outcome::Goto(n) => move_cursor(&mut st, |_| n),
                    _ => Ok(()),
                }
            }
            _ => self.apply_boxed(cx, outcome).await,
        }
    }

    fn apply_boxed(
        self: Arc<Self>,
        cx: Cx<S, U>,
        outcome: Outcome,
    ) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move {
            begin_transition(&cx, &outcome)?;
            match outcome {
                Outcome::Handled | Outcome::Pass => Ok(()),
                Outcome::Next => move_cursor(&mut cx.state(), |c| c.saturating_add(1)),
                Outcome::Back => move_cursor(&mut cx.state(), |c| c.saturating_sub(1)),
                Outcome::Goto(n) => move_cursor(&mut cx.state(), |_| n),
                Outcome::NextNow => {
                    move_cursor(&mut cx.state(), |c| c.saturating_add(1))?;
                    self.run_step(cx).await
                }
                Outcome::GotoNow(n) => {
                    let n = i64::try_from(n).unwrap_or(i64::MAX);
                    move_cursor(&mut cx.state(), |_| n)?;
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
                    let old = cx.state().stack.pop();
                    let e = Enter {
                        id,
                        state: old.map(|f| f.state),
                        silent: false,
                    };
                    self.enter(cx, e, true).await
                }
                Outcome::Leave(result) => self.leave(cx, result).await,
                Outcome::Clear => self.clear(&cx).await,
            }
        })
    }

    /// Runs the active wizard's current step with this update (used by `...Now`).
    async fn run_step(self: Arc<Self>, cx: Cx<S, U>) -> Result<()> {
        let (scene, cursor) = {
            let st = cx.state();
            let Some(top) = st.stack.last() else {
                return Err(Error::NoActiveScene);
            };
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
                self.apply(cx, o).await
            }
            None => self.apply(cx, Outcome::leave()).await,
        }
    }

    async fn enter(self: Arc<Self>, cx: Cx<S, U>, e: Enter, push: bool) -> Result<()> {
        let scene = self.lookup(&e.id)?;
        if !push {
            let top = cx.current_scene();
            if let Some(top) = top {
                if !e.silent {
                    if let Some(old) = self.scenes.get(&top).cloned() {
                        self.run_leave_hooks(&old, &cx).await?;
                    }
                }
                cx.state().stack.pop();
            }
        }
        {
            let frame = self.new_frame(&scene, e.state, cx.now_s());
            let mut st = cx.state();
            if st.stack.len() >= MAX_DEPTH {
                return Err(Error::Transition("the scene stack is too deep"));
            }
            st.stack.push(frame);
            st.dirty = true;
        }
        tracing::debug!(target: "stagecraft::stage", key = ?cx.key(), scene = %scene.id, silent = e.silent, "entered");
        if e.silent {
            return Ok(());
        }
        for hook in &scene.on_enter {
            let o = hook.call(cx.clone()).await.map_err(Error::handler)?;
            if o.is_transition() {
                return self.apply(cx, o).await;
            }
        }
        if scene.is_wizard() {
            return self.run_step(cx).await;
        }
        Ok(())
    }

    async fn run_leave_hooks(&self, scene: &Scene<S, U>, cx: &Cx<S, U>) -> Result<()> {
        cx.state().leaving += 1;
        let mut result = Ok(());
        for hook in &scene.on_leave {
            if let Err(e) = hook.call(cx.clone()).await {
                result = Err(Error::handler(e));
                break;
            }
        }
        cx.state().leaving -= 1;
        result
    }

    async fn leave(
        self: Arc<Self>,
        cx: Cx<S, U>,
        result: Option<Box<dyn std::any::Any + Send>>,
    ) -> Result<()> {
        let Some(top) = cx.current_scene() else {
            return Ok(());
        };
        if let Some(scene) = self.scenes.get(&top).cloned() {
            self.run_leave_hooks(&scene, &cx).await?;
        }
        let parent = {
            let now = cx.now_s();
            let mut st = cx.state();
            st.stack.pop();
            st.dirty = true;
            // A parent that expired (or was unregistered) while its child ran goes silently.
            while let Some(p) = st.stack.last() {
                if p.is_expired(now) || !self.scenes.contains_key(&p.scene) {
                    st.stack.pop();
                } else {
                    break;
                }
            }
            // The parent is active again: that is activity for its idle TTL.
            st.stack.last_mut().and_then(|p| {
                let scene = self.scenes.get(&p.scene).cloned()?;
                if let Some(idle) = scene.idle_ttl {
                    p.expires = Some(now + i64::from(idle));
                }
                Some(scene)
            })
        };
        tracing::debug!(target: "stagecraft::stage", key = ?cx.key(), scene = %top, "left");
        let Some(parent) = parent else { return Ok(()) };
        let Some(resume) = parent.on_resume.clone() else {
            return Ok(());
        };
        cx.set_result(result);
        let o = resume.call(cx.clone()).await.map_err(Error::handler)?;
        cx.set_result(None);
        self.apply(cx, o).await
    }

    async fn clear(&self, cx: &Cx<S, U>) -> Result<()> {
        while let Some(top) = cx.current_scene() {
            if let Some(scene) = self.scenes.get(&top).cloned() {
                self.run_leave_hooks(&scene, cx).await?;
            }
            let mut st = cx.state();
            st.stack.pop();
            st.dirty = true;
        }
        Ok(())
    }
}

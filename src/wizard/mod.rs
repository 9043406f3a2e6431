//! Wizards (Telegraf's `WizardScene`): scenes with ordered steps and a cursor.

use std::sync::Arc;

use crate::handler::{Handler, LeaveHook, Matcher, RouteBuilder};
use crate::scene::{Scene, SceneBuilder, SceneState};

/// Namespace for [`Wizard::builder`]: a wizard is a [`Scene`] with steps.
#[derive(Debug)]
pub struct Wizard;

impl Wizard {
    /// Starts building a wizard with this id.
    ///
    /// On enter, the enter hooks run and then step 0 with the entering update. Each
    /// update then goes to the scene's own handlers first (e.g. a `/cancel` command),
    /// and if none takes it, to the step at the cursor. A step answers
    /// [`Outcome::Next`](crate::Outcome::Next) to move on (the next step runs on the next
    /// update), [`Outcome::Handled`](crate::Outcome::Handled) to stay, or any other transition.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let w: Scene<(), TelegramUpdate> = Wizard::builder("poll")
    ///     .step(|cx: Cx<()>| async move { cx.reply("Pick a or b."); Ok(Outcome::Next) })
    ///     .step(|cx: Cx<()>| async move {
    ///         let t = cx.update().text().unwrap_or_default().to_owned();
    ///         cx.reply(format!("You picked {t}."));
    ///         Ok(Outcome::Next)
    ///     })
    ///     .build();
    /// assert_eq!(w.step_count(), 2);
    /// ```
    #[must_use]
    pub fn builder<S, U>(id: impl Into<String>) -> WizardBuilder<S, U> {
        let mut inner = Scene::builder(id);
        inner.scene.steps = Some(Vec::new());
        WizardBuilder { inner }
    }
}

/// Builds a wizard [`Scene`]: a [`SceneBuilder`] plus [`step`](Self::step).
#[derive(Debug)]
pub struct WizardBuilder<S, U> {
    inner: SceneBuilder<S, U>,
}

impl<S, U> WizardBuilder<S, U> {
    /// Appends a step.
    #[must_use]
    pub fn step(mut self, h: impl Handler<S, U>) -> Self {
        if let Some(steps) = self.inner.scene.steps.as_mut() {
            steps.push(Arc::new(h));
        }
        self
    }

    /// A timeout for the step added last: if the user sends no update for `secs`
    /// seconds while the wizard is at that step, run `hook` once (see
    /// [`SceneBuilder::timeout`]). It takes the place of the wizard's
    /// [`timeout`](Self::timeout) at that step.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let wizard: Scene<(), TelegramUpdate> = Wizard::builder("signup")
    ///     .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///     .step_timeout(600, |cx: Cx<()>| async move {
    ///         cx.reply("Still there? Send /cancel to stop.");
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///     .build();
    /// # let _ = wizard;
    /// ```
    #[must_use]
    pub fn step_timeout(mut self, secs: u32, hook: impl Handler<S, U>) -> Self {
        let scene = &mut self.inner.scene;
        let Some(last) = scene.steps.as_ref().and_then(|s| s.len().checked_sub(1)) else {
            return self;
        };
        if scene.step_timeouts.len() <= last {
            scene.step_timeouts.resize_with(last + 1, || None);
        }
        scene.step_timeouts[last] = Some(crate::scene::Timeout {
            secs,
            hook: Arc::new(hook),
        });
        self
    }

    /// See [`SceneBuilder::timeout`]: for every step without its own.
    #[must_use]
    pub fn timeout(mut self, secs: u32, hook: impl Handler<S, U>) -> Self {
        self.inner = self.inner.timeout(secs, hook);
        self
    }

    /// See [`SceneBuilder::on_expire`].
    #[must_use]
    pub fn on_expire(mut self, h: impl LeaveHook<S, U>) -> Self {
        self.inner = self.inner.on_expire(h);
        self
    }

    /// See [`SceneBuilder::leave_on_expire`].
    #[must_use]
    pub fn leave_on_expire(mut self, on: bool) -> Self {
        self.inner = self.inner.leave_on_expire(on);
        self
    }

    /// See [`SceneBuilder::on_enter`].
    #[must_use]
    pub fn on_enter(mut self, h: impl Handler<S, U>) -> Self {
        self.inner = self.inner.on_enter(h);
        self
    }

    /// See [`SceneBuilder::on_leave`].
    #[must_use]
    pub fn on_leave(mut self, h: impl LeaveHook<S, U>) -> Self {
        self.inner = self.inner.on_leave(h);
        self
    }

    /// See [`SceneBuilder::on_resume`].
    #[must_use]
    pub fn on_resume(mut self, h: impl Handler<S, U>) -> Self {
        self.inner = self.inner.on_resume(h);
        self
    }

    /// See [`SceneBuilder::ttl`].
    #[must_use]
    pub fn ttl(mut self, secs: u32) -> Self {
        self.inner = self.inner.ttl(secs);
        self
    }

    /// See [`SceneBuilder::idle_ttl`].
    #[must_use]
    pub fn idle_ttl(mut self, secs: u32) -> Self {
        self.inner = self.inner.idle_ttl(secs);
        self
    }

    /// See [`SceneBuilder::goes_to`].
    #[must_use]
    pub fn goes_to(mut self, scene: impl Into<String>) -> Self {
        self.inner = self.inner.goes_to(scene);
        self
    }

    /// See [`SceneBuilder::calls`].
    #[must_use]
    pub fn calls(mut self, scene: impl Into<String>) -> Self {
        self.inner = self.inner.calls(scene);
        self
    }

    /// See [`SceneBuilder::state`].
    #[must_use]
    pub fn state<T: SceneState + Default>(mut self) -> Self {
        self.inner = self.inner.state::<T>();
        self
    }

    /// See [`SceneBuilder::upgrade`].
    #[must_use]
    pub fn upgrade(
        mut self,
        from: impl Into<String>,
        to: impl Into<String>,
        f: impl Fn(serde_json::Value) -> Result<serde_json::Value, crate::error::BoxError>
        + Send
        + Sync
        + 'static,
    ) -> Self {
        self.inner = self.inner.upgrade(from, to, f);
        self
    }

    /// See [`SceneBuilder::recovery`].
    #[must_use]
    pub fn recovery(mut self, recovery: crate::scene::Recovery) -> Self {
        self.inner = self.inner.recovery(recovery);
        self
    }

    /// Finishes the wizard.
    #[must_use]
    pub fn build(self) -> Scene<S, U> {
        self.inner.build()
    }
}

impl<S, U> RouteBuilder<S, U> for WizardBuilder<S, U> {
    fn push_route(mut self, matcher: Matcher<U>, handler: Arc<dyn Handler<S, U>>) -> Self {
        self.inner = self.inner.push_route(matcher, handler);
        self
    }
}

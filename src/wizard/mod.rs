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
pub struct WizardBuilder<S, U = crate::update::TelegramUpdate> {
    inner: SceneBuilder<S, U>,
}

impl<S, U> WizardBuilder<S, U> {
    /// Appends a step.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move {
    ///             cx.reply(format!("Welcome, {}!", cx.update().text().unwrap_or_default()));
    ///             Ok(Outcome::leave())
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// assert_eq!(bot.send("/signup").await.unwrap(), ["Your name?"]);
    /// assert_eq!(bot.send("Ada").await.unwrap(), ["Welcome, Ada!"]);
    /// # });
    /// ```
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
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .timeout(60, |cx: Cx<()>| async move { cx.reply("Still there?"); Ok(Outcome::Handled) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// bot.advance(61);
    /// assert_eq!(bot.pipeline().wake_due().await.unwrap().timers, 1);
    /// assert_eq!(bot.replies().texts(), ["Still there?"]);
    /// # });
    /// ```
    #[must_use]
    pub fn timeout(mut self, secs: u32, hook: impl Handler<S, U>) -> Self {
        self.inner = self.inner.timeout(secs, hook);
        self
    }

    /// See [`SceneBuilder::on_expire`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .ttl(60)
    ///         .on_expire(|cx: Cx<()>| async move { cx.reply("Sign-up timed out."); Ok(()) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// bot.advance(61);
    /// bot.pipeline().wake_due().await.unwrap();
    /// assert_eq!(bot.replies().texts(), ["Sign-up timed out."]);
    /// # });
    /// ```
    #[must_use]
    pub fn on_expire(mut self, h: impl LeaveHook<S, U>) -> Self {
        self.inner = self.inner.on_expire(h);
        self
    }

    /// See [`SceneBuilder::leave_on_expire`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .ttl(60)
    ///         .leave_on_expire(true)
    ///         .on_leave(|cx: Cx<()>| async move { cx.reply("Sign-up closed."); Ok(()) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// bot.advance(61);
    /// bot.pipeline().wake_due().await.unwrap();
    /// assert_eq!(bot.replies().texts(), ["Sign-up closed."]);
    /// # });
    /// ```
    #[must_use]
    pub fn leave_on_expire(mut self, on: bool) -> Self {
        self.inner = self.inner.leave_on_expire(on);
        self
    }

    /// See [`SceneBuilder::on_enter`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .on_enter(|cx: Cx<()>| async move { cx.reply("Two questions."); Ok(Outcome::Handled) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// // The enter hook, then step 0 with the same update.
    /// assert_eq!(bot.send("/signup").await.unwrap(), ["Two questions.", "Your name?"]);
    /// # });
    /// ```
    #[must_use]
    pub fn on_enter(mut self, h: impl Handler<S, U>) -> Self {
        self.inner = self.inner.on_enter(h);
        self
    }

    /// See [`SceneBuilder::on_leave`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .on_leave(|cx: Cx<()>| async move { cx.reply("Bye."); Ok(()) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Thanks!"); Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// assert_eq!(bot.send("Ada").await.unwrap(), ["Thanks!", "Bye."]);
    /// # });
    /// ```
    #[must_use]
    pub fn on_leave(mut self, h: impl LeaveHook<S, U>) -> Self {
        self.inner = self.inner.on_leave(h);
        self
    }

    /// See [`SceneBuilder::on_resume`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("order")
    ///         .on_resume(|cx: Cx<()>| async move {
    ///             let city: Option<String> = cx.take_result()?;
    ///             cx.reply(format!("Delivering to {}.", city.unwrap_or_default()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::push("city")) })
    ///         .build())
    ///     .scene(Scene::builder("city")
    ///         .on_enter(|cx: Cx<()>| async move { cx.reply("Which city?"); Ok(Outcome::Handled) })
    ///         .on_text(|cx: Cx<()>| async move {
    ///             Ok(Outcome::leave_with(cx.update().text().unwrap_or_default().to_owned()))
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("order", |_cx: Cx<()>| async move { Ok(Outcome::enter("order")) })
    ///     .build());
    /// assert_eq!(bot.send("/order").await.unwrap(), ["Which city?"]);
    /// assert_eq!(bot.send("Lyon").await.unwrap(), ["Delivering to Lyon."]);
    /// # });
    /// ```
    #[must_use]
    pub fn on_resume(mut self, h: impl Handler<S, U>) -> Self {
        self.inner = self.inner.on_resume(h);
        self
    }

    /// See [`SceneBuilder::ttl`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .ttl(60)
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Thanks!"); Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("Send /signup to start."); Ok(Outcome::Handled) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// bot.advance(61);
    /// assert_eq!(bot.send("Ada").await.unwrap(), ["Send /signup to start."]);
    /// # });
    /// ```
    #[must_use]
    pub fn ttl(mut self, secs: u32) -> Self {
        self.inner = self.inner.ttl(secs);
        self
    }

    /// See [`SceneBuilder::idle_ttl`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .idle_ttl(60)
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your age?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move { cx.reply("Thanks!"); Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("Send /signup to start."); Ok(Outcome::Handled) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// bot.advance(50);
    /// assert_eq!(bot.send("Ada").await.unwrap(), ["Your age?"]);
    /// bot.advance(50); // 100 s after entering, 50 s after the last answer
    /// assert_eq!(bot.send("36").await.unwrap(), ["Thanks!"]);
    /// # });
    /// ```
    #[must_use]
    pub fn idle_ttl(mut self, secs: u32) -> Self {
        self.inner = self.inner.idle_ttl(secs);
        self
    }

    /// See [`SceneBuilder::goes_to`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let stage: Stage<(), TelegramUpdate> = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .goes_to("menu")
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::enter("menu")) })
    ///         .build())
    ///     .scene(Scene::builder("menu").build())
    ///     .build()
    ///     .unwrap();
    /// let chart = stage.to_mermaid();
    /// assert!(chart.contains("signup") && chart.contains("menu") && chart.contains("-->"));
    /// ```
    #[must_use]
    pub fn goes_to(mut self, scene: impl Into<String>) -> Self {
        self.inner = self.inner.goes_to(scene);
        self
    }

    /// See [`SceneBuilder::calls`].
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let stage: Stage<(), TelegramUpdate> = Stage::builder()
    ///     .scene(Wizard::builder("checkout")
    ///         .calls("address")
    ///         .step(|_cx: Cx<()>| async move { Ok(Outcome::push("address")) })
    ///         .build())
    ///     .scene(Scene::builder("address").build())
    ///     .build()
    ///     .unwrap();
    /// let chart = stage.to_mermaid();
    /// assert!(chart.contains("s1 -->|calls| s0"));
    /// assert!(chart.contains("s0 -.->|returns| s1"));
    /// ```
    #[must_use]
    pub fn calls(mut self, scene: impl Into<String>) -> Self {
        self.inner = self.inner.calls(scene);
        self
    }

    /// See [`SceneBuilder::state`].
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// #[derive(Debug, Default, Serialize, Deserialize)]
    /// struct Signup { name: String }
    ///
    /// #[typetag::serde(name = "signup.v1")]
    /// impl SceneState for Signup {}
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .state::<Signup>()
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .step(|cx: Cx<()>| async move {
    ///             let name = cx.update().text().unwrap_or_default().to_owned();
    ///             cx.scene_state_mut(|s: &mut Signup| s.name = name)?;
    ///             cx.reply("Your age?");
    ///             Ok(Outcome::Next)
    ///         })
    ///         .step(|cx: Cx<()>| async move {
    ///             let name = cx.scene_state(|s: &Signup| s.name.clone())?;
    ///             cx.reply(format!("Thanks, {name}!"));
    ///             Ok(Outcome::leave())
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("signup", |_cx: Cx<()>| async move { Ok(Outcome::enter("signup")) })
    ///     .build());
    /// bot.send("/signup").await.unwrap();
    /// bot.send("Ada").await.unwrap();
    /// assert_eq!(bot.send("36").await.unwrap(), ["Thanks, Ada!"]);
    /// # });
    /// ```
    #[must_use]
    pub fn state<T: SceneState + Default>(mut self) -> Self {
        self.inner = self.inner.state::<T>();
        self
    }

    /// See [`SceneBuilder::upgrade`].
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use stagecraft::prelude::*;
    ///
    /// #[derive(Debug, Default, Serialize, Deserialize)]
    /// struct Signup { first: String, last: String }
    ///
    /// #[typetag::serde(name = "signup.v2")]
    /// impl SceneState for Signup {}
    ///
    /// // v1 stored one `name`; v2 splits it.
    /// let wizard: Scene<(), TelegramUpdate> = Wizard::builder("signup")
    ///     .state::<Signup>()
    ///     .upgrade("signup.v1", "signup.v2", |mut old| {
    ///         let name = old["name"].take();
    ///         let name = name.as_str().unwrap_or_default();
    ///         let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    ///         Ok(serde_json::json!({"first": first, "last": last}))
    ///     })
    ///     .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///     .build();
    /// assert_eq!(wizard.step_count(), 1);
    /// ```
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
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::scene::Recovery;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Wizard::builder("signup")
    ///         .recovery(Recovery::Clear)
    ///         .step(|cx: Cx<()>| async move { cx.reply("Your name?"); Ok(Outcome::Next) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("Main menu."); Ok(Outcome::Handled) })
    ///     .build());
    /// // A session stored by an older build, at a state type this build no longer has.
    /// let old = r#"{"v":1,"data":null,
    ///     "scenes":[{"scene":"signup","cursor":0,"entered_at":0,"state":{"signup.v0":{}}}]}"#;
    /// bot.store().save(&bot.key(), old.as_bytes(), None).await.unwrap();
    /// let texts = bot.send("hi").await.unwrap();
    /// assert_eq!(texts.last().unwrap(), "Main menu."); // after the recovery notice
    /// assert!(bot.scenes().await.is_empty());
    /// # });
    /// ```
    #[must_use]
    pub fn recovery(mut self, recovery: crate::scene::Recovery) -> Self {
        self.inner = self.inner.recovery(recovery);
        self
    }

    /// Finishes the wizard.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let wizard: Scene<(), TelegramUpdate> = Wizard::builder("poll")
    ///     .step(|cx: Cx<()>| async move { cx.reply("Pick a or b."); Ok(Outcome::Next) })
    ///     .step(|_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///     .build();
    /// assert_eq!(wizard.id(), "poll");
    /// assert_eq!(wizard.step_count(), 2);
    /// ```
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

//! [`SceneBuilder`].

use std::sync::Arc;

use super::{Declared, Recovery, Scene, SceneState, StateFactory, Timeout, Upgrade};
use crate::handler::{Handler, LeaveHook, Matcher, RouteBuilder, Routes};
use crate::record::JsonState;

/// Builds a [`Scene`]; also the base of [`WizardBuilder`](crate::wizard::WizardBuilder).
///
/// ```
/// use stagecraft::prelude::*;
///
/// let scene: Scene<(), TelegramUpdate> = Scene::builder("profile")
///     .ttl(300)
///     .on_enter(|cx: Cx<()>| async move { cx.reply("Profile. /back to leave"); Ok(Outcome::Handled) })
///     .on_leave(|cx: Cx<()>| async move { cx.reply("Left profile."); Ok(()) })
///     .command("back", |_cx| async move { Ok(Outcome::leave()) })
///     .on_text(|cx: Cx<()>| async move {
///         let echo = format!("profile echo: {}", cx.update().text().unwrap_or_default());
///         cx.reply(echo);
///         Ok(Outcome::Handled)
///     })
///     .build();
/// assert_eq!(scene.id(), "profile");
/// ```
pub struct SceneBuilder<S, U = crate::update::TelegramUpdate> {
    pub(crate) scene: Scene<S, U>,
}

impl<S, U> std::fmt::Debug for SceneBuilder<S, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SceneBuilder").field(&self.scene).finish()
    }
}

impl<S, U> Scene<S, U> {
    /// Starts building a plain scene with this id.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let scene: Scene<(), TelegramUpdate> = Scene::builder("help")
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("Ask away."); Ok(Outcome::Handled) })
    ///     .build();
    /// assert_eq!(scene.id(), "help");
    /// ```
    #[must_use]
    pub fn builder(id: impl Into<String>) -> SceneBuilder<S, U> {
        SceneBuilder {
            scene: Scene {
                id: id.into(),
                routes: Routes::default(),
                steps: None,
                on_enter: Vec::new(),
                on_leave: Vec::new(),
                on_resume: None,
                ttl: None,
                idle_ttl: None,
                init_state: Arc::new(|| Box::new(JsonState::object())),
                upgrades: std::collections::HashMap::new(),
                recovery: Recovery::default(),
                timeout: None,
                step_timeouts: Vec::new(),
                on_expire: Vec::new(),
                leave_on_expire: false,
                declared: Vec::new(),
            },
        }
    }
}

impl<S, U> SceneBuilder<S, U> {
    /// Runs when the scene is entered (not when it is restored from the store). The
    /// hook may answer a transition (e.g. leave at once); otherwise a wizard goes on to
    /// run its current step with the entering update.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("help")
    ///         .on_enter(|cx: Cx<()>| async move { cx.reply("What do you need help with?"); Ok(Outcome::Handled) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |_cx: Cx<()>| async move { Ok(Outcome::enter("help")) })
    ///     .build());
    /// assert_eq!(bot.send("/help").await.unwrap(), ["What do you need help with?"]);
    /// # });
    /// ```
    #[must_use]
    pub fn on_enter(mut self, h: impl Handler<S, U>) -> Self {
        self.scene.on_enter.push(Arc::new(h));
        self
    }

    /// Runs when the scene is left (not on silent expiry).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("help")
    ///         .on_leave(|cx: Cx<()>| async move { cx.reply("Glad to help."); Ok(()) })
    ///         .command("done", |_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("help", |_cx: Cx<()>| async move { Ok(Outcome::enter("help")) })
    ///     .build());
    /// bot.send("/help").await.unwrap();
    /// assert_eq!(bot.send("/done").await.unwrap(), ["Glad to help."]);
    /// # });
    /// ```
    #[must_use]
    pub fn on_leave(mut self, h: impl LeaveHook<S, U>) -> Self {
        self.scene.on_leave.push(Arc::new(h));
        self
    }

    /// Runs when a scene pushed on top of this one leaves and this one is active again;
    /// read the child's result with [`Cx::take_result`](crate::Cx::take_result).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("checkout")
    ///         .command("address", |_cx: Cx<()>| async move { Ok(Outcome::push("address")) })
    ///         .on_resume(|cx: Cx<()>| async move {
    ///             let address: Option<String> = cx.take_result()?;
    ///             cx.reply(format!("Shipping to {}.", address.unwrap_or_default()));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .scene(Scene::builder("address")
    ///         .on_text(|cx: Cx<()>| async move {
    ///             Ok(Outcome::leave_with(cx.update().text().unwrap_or_default().to_owned()))
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("checkout", |_cx: Cx<()>| async move { Ok(Outcome::enter("checkout")) })
    ///     .build());
    /// bot.send("/checkout").await.unwrap();
    /// bot.send("/address").await.unwrap();
    /// assert_eq!(bot.send("1 Main St").await.unwrap(), ["Shipping to 1 Main St."]);
    /// # });
    /// ```
    #[must_use]
    pub fn on_resume(mut self, h: impl Handler<S, U>) -> Self {
        self.scene.on_resume = Some(Arc::new(h));
        self
    }

    /// Expire the scene `secs` seconds after it was entered (Telegraf's `ttl`): absolute,
    /// not extended by activity. Expiry is silent: no leave hook runs.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("offer")
    ///         .ttl(60)
    ///         .on_text(|cx: Cx<()>| async move { cx.reply("Offer taken."); Ok(Outcome::leave()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("offer", |_cx: Cx<()>| async move { Ok(Outcome::enter("offer")) })
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("No offer running."); Ok(Outcome::Handled) })
    ///     .build());
    /// bot.send("/offer").await.unwrap();
    /// bot.advance(30);
    /// assert_eq!(bot.send("yes").await.unwrap(), ["Offer taken."]);
    /// bot.send("/offer").await.unwrap();
    /// bot.advance(61);
    /// assert_eq!(bot.send("yes").await.unwrap(), ["No offer running."]);
    /// # });
    /// ```
    #[must_use]
    pub fn ttl(mut self, secs: u32) -> Self {
        self.scene.ttl = Some(secs);
        self.scene.idle_ttl = None;
        self
    }

    /// Expire the scene `secs` seconds after its last update (an idle timeout, refreshed
    /// by activity; Telegraf #1829).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("chat")
    ///         .idle_ttl(60)
    ///         .on_text(|cx: Cx<()>| async move { cx.reply("(in the chat)"); Ok(Outcome::Handled) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("chat", |_cx: Cx<()>| async move { Ok(Outcome::enter("chat")) })
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("(outside)"); Ok(Outcome::Handled) })
    ///     .build());
    /// bot.send("/chat").await.unwrap();
    /// bot.advance(40);
    /// assert_eq!(bot.send("hi").await.unwrap(), ["(in the chat)"]);
    /// bot.advance(40); // 80 s after entering, 40 s after the last update
    /// assert_eq!(bot.send("hi").await.unwrap(), ["(in the chat)"]);
    /// bot.advance(61);
    /// assert_eq!(bot.send("hi").await.unwrap(), ["(outside)"]);
    /// # });
    /// ```
    #[must_use]
    pub fn idle_ttl(mut self, secs: u32) -> Self {
        self.scene.idle_ttl = Some(secs);
        self.scene.ttl = None;
        self
    }

    /// If the user sends no update for `secs` seconds while this scene is active, run
    /// `hook` once, without an update: a durable timeout. The hook runs like a step:
    /// under the key's queue place and lease, with a context that can reply (to the
    /// chat of the user's last update), change the session and answer a transition
    /// (e.g. [`Outcome::leave`](crate::Outcome::leave)); [`Cx::is_event`](crate::Cx::is_event)
    /// is true in it. Every update of the user in the scene arms it again from that
    /// moment; leaving the scene cancels it; it fires once per silence.
    ///
    /// The deadline is stored with the session and in the store's index of due work,
    /// so it survives a restart and fires once across replicas. It fires when the bot
    /// calls [`Pipeline::wake_due`](crate::Pipeline::wake_due) (or runs
    /// [`Pipeline::spawn_timers`](crate::Pipeline::spawn_timers)). A wizard step can
    /// declare its own ([`WizardBuilder::step_timeout`](crate::wizard::WizardBuilder::step_timeout)).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let scene: Scene<(), TelegramUpdate> = Scene::builder("checkout")
    ///     .timeout(600, |cx: Cx<()>| async move {
    ///         cx.reply("Still there? Send /cancel to stop.");
    ///         Ok(Outcome::Handled)
    ///     })
    ///     .build();
    /// # let _ = scene;
    /// ```
    #[must_use]
    pub fn timeout(mut self, secs: u32, hook: impl Handler<S, U>) -> Self {
        self.scene.timeout = Some(Timeout {
            secs,
            hook: Arc::new(hook),
        });
        self
    }

    /// Runs when the scene's TTL ([`ttl`](Self::ttl), [`idle_ttl`](Self::idle_ttl) or
    /// the stage's) runs out, before the scene is dropped; it may reply ("Your session
    /// timed out."). A scene with such a hook expires on time, without an update (like
    /// a [`timeout`](Self::timeout)), and also when an update finds it expired.
    /// Without one, expiry stays silent and lazy, as in Telegraf.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("quiz")
    ///         .ttl(60)
    ///         .on_expire(|cx: Cx<()>| async move { cx.reply("Your quiz timed out."); Ok(()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("quiz", |_cx: Cx<()>| async move { Ok(Outcome::enter("quiz")) })
    ///     .build());
    /// bot.send("/quiz").await.unwrap();
    /// bot.advance(61);
    /// bot.pipeline().wake_due().await.unwrap(); // without an update from the user
    /// assert_eq!(bot.replies().texts(), ["Your quiz timed out."]);
    /// assert!(bot.scenes().await.is_empty());
    /// # });
    /// ```
    #[must_use]
    pub fn on_expire(mut self, h: impl LeaveHook<S, U>) -> Self {
        self.scene.on_expire.push(Arc::new(h));
        self
    }

    /// Whether the scene's [`on_leave`](Self::on_leave) hooks run when its TTL runs out
    /// (default `false`: Telegraf's silent expiry). With `true` the scene expires on
    /// time, without an update, as with [`on_expire`](Self::on_expire).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("booking")
    ///         .ttl(60)
    ///         .leave_on_expire(true)
    ///         .on_leave(|cx: Cx<()>| async move { cx.reply("Booking closed."); Ok(()) })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("book", |_cx: Cx<()>| async move { Ok(Outcome::enter("booking")) })
    ///     .build());
    /// bot.send("/book").await.unwrap();
    /// bot.advance(61);
    /// bot.pipeline().wake_due().await.unwrap();
    /// assert_eq!(bot.replies().texts(), ["Booking closed."]);
    /// # });
    /// ```
    #[must_use]
    pub fn leave_on_expire(mut self, on: bool) -> Self {
        self.scene.leave_on_expire = on;
        self
    }

    /// The state type of this scene: entering without a state starts from `T::default()`.
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use stagecraft::prelude::*;
    /// use stagecraft::testing::TestBot;
    ///
    /// #[derive(Debug, Default, Serialize, Deserialize)]
    /// struct Quiz { score: u32 }
    ///
    /// #[typetag::serde(name = "quiz.v1")]
    /// impl SceneState for Quiz {}
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("quiz")
    ///         .state::<Quiz>()
    ///         .text("4", |cx: Cx<()>| async move {
    ///             let score = cx.scene_state_mut(|q: &mut Quiz| { q.score += 1; q.score })?;
    ///             cx.reply(format!("Right! Score: {score}"));
    ///             Ok(Outcome::Handled)
    ///         })
    ///         .build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .command("quiz", |_cx: Cx<()>| async move { Ok(Outcome::enter("quiz")) })
    ///     .build());
    /// bot.send("/quiz").await.unwrap();
    /// assert_eq!(bot.send("4").await.unwrap(), ["Right! Score: 1"]);
    /// assert_eq!(bot.send("4").await.unwrap(), ["Right! Score: 2"]);
    /// # });
    /// ```
    #[must_use]
    pub fn state<T: SceneState + Default>(mut self) -> Self {
        let f: StateFactory = Arc::new(|| Box::new(T::default()));
        self.scene.init_state = f;
        self
    }

    /// Upgrades stored state written under the tag `from` (a type this build no longer
    /// registers, e.g. `"signup.v1"`) to the tag `to` (e.g. `"signup.v2"`): `f` turns
    /// the old JSON into the new. Upgrades run on load, in order, while one applies
    /// (v1 → v2 → v3), before the state is decoded; the record is written in the new
    /// form by the next save.
    ///
    /// ```
    /// use serde::{Deserialize, Serialize};
    /// use stagecraft::prelude::*;
    ///
    /// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
    /// struct Signup { first: String, last: String }
    ///
    /// #[typetag::serde(name = "signup.v2")]
    /// impl SceneState for Signup {}
    ///
    /// // v1 stored one `name`; v2 splits it.
    /// let scene: Scene<(), TelegramUpdate> = Scene::builder("signup")
    ///     .state::<Signup>()
    ///     .upgrade("signup.v1", "signup.v2", |mut old| {
    ///         let name = old["name"].take();
    ///         let name = name.as_str().unwrap_or_default();
    ///         let (first, last) = name.split_once(' ').unwrap_or((name, ""));
    ///         Ok(serde_json::json!({"first": first, "last": last}))
    ///     })
    ///     .build();
    /// # drop(scene);
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
        let f: Upgrade = Arc::new(f);
        self.scene.upgrades.insert(from.into(), (to.into(), f));
        self
    }

    /// What the stage does when this scene's stored state cannot be decoded (default:
    /// [`Recovery::Restart`]).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    /// use stagecraft::scene::Recovery;
    /// use stagecraft::testing::TestBot;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
    /// let stage = Stage::builder()
    ///     .scene(Scene::builder("signup").recovery(Recovery::Leave).build())
    ///     .build()
    ///     .unwrap();
    /// let bot = TestBot::<()>::new(|b| b
    ///     .stage(stage)
    ///     .on_text(|cx: Cx<()>| async move { cx.reply("Main menu."); Ok(Outcome::Handled) })
    ///     .build());
    /// // A session stored by an older build, at a state type this build no longer has.
    /// let old = r#"{"v":1,"data":null,
    ///     "scenes":[{"scene":"signup","entered_at":0,"state":{"signup.v0":{}}}]}"#;
    /// bot.store().save(&bot.key(), old.as_bytes(), None).await.unwrap();
    /// let texts = bot.send("hi").await.unwrap();
    /// assert_eq!(texts.last().unwrap(), "Main menu."); // after the recovery notice
    /// assert!(bot.scenes().await.is_empty());
    /// # });
    /// ```
    #[must_use]
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.scene.recovery = recovery;
        self
    }

    /// Declares that this scene may enter `scene` in its place
    /// ([`Outcome::enter`](crate::Outcome::enter)), for the picture of the flow
    /// ([`Stage::to_mermaid`](crate::Stage::to_mermaid)). A declaration only: it changes
    /// no routing, and the handlers may do other transitions too.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let scene: Scene<(), TelegramUpdate> = Scene::builder("menu")
    ///     .goes_to("settings")
    ///     .command("settings", |_cx: Cx<()>| async move { Ok(Outcome::enter("settings")) })
    ///     .build();
    /// # let _ = scene;
    /// ```
    #[must_use]
    pub fn goes_to(mut self, scene: impl Into<String>) -> Self {
        self.scene.declared.push((Declared::GoesTo, scene.into()));
        self
    }

    /// Declares that this scene may call `scene` as a sub-scene
    /// ([`Outcome::push`](crate::Outcome::push)) and resume when it leaves, for the
    /// picture of the flow ([`Stage::to_mermaid`](crate::Stage::to_mermaid)). A
    /// declaration only, like [`goes_to`](Self::goes_to).
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let stage: Stage<(), TelegramUpdate> = Stage::builder()
    ///     .scene(Scene::builder("checkout")
    ///         .calls("address")
    ///         .command("address", |_cx: Cx<()>| async move { Ok(Outcome::push("address")) })
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
        self.scene.declared.push((Declared::Calls, scene.into()));
        self
    }

    /// Finishes the scene.
    ///
    /// ```
    /// use stagecraft::prelude::*;
    ///
    /// let scene: Scene<(), TelegramUpdate> = Scene::builder("help")
    ///     .command("back", |_cx: Cx<()>| async move { Ok(Outcome::leave()) })
    ///     .build();
    /// assert_eq!(scene.id(), "help");
    /// let stage = Stage::builder().scene(scene).build().unwrap();
    /// assert!(stage.scene("help").is_some());
    /// ```
    #[must_use]
    pub fn build(self) -> Scene<S, U> {
        self.scene
    }
}

impl<S, U> RouteBuilder<S, U> for SceneBuilder<S, U> {
    fn push_route(mut self, matcher: Matcher<U>, handler: Arc<dyn Handler<S, U>>) -> Self {
        self.scene.routes.list.push((matcher, handler));
        self
    }
}

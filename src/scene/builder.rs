//! [`SceneBuilder`].

use std::sync::Arc;

use super::{Recovery, Scene, SceneState, StateFactory, Upgrade};
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
pub struct SceneBuilder<S, U> {
    pub(crate) scene: Scene<S, U>,
}

impl<S, U> std::fmt::Debug for SceneBuilder<S, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("SceneBuilder").field(&self.scene).finish()
    }
}

impl<S, U> Scene<S, U> {
    /// Starts building a plain scene with this id.
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
            },
        }
    }
}

impl<S, U> SceneBuilder<S, U> {
    /// Runs when the scene is entered (not when it is restored from the store). The
    /// hook may answer a transition (e.g. leave at once); otherwise a wizard goes on to
    /// run its current step with the entering update.
    #[must_use]
    pub fn on_enter(mut self, h: impl Handler<S, U>) -> Self {
        self.scene.on_enter.push(Arc::new(h));
        self
    }

    /// Runs when the scene is left (not on silent expiry).
    #[must_use]
    pub fn on_leave(mut self, h: impl LeaveHook<S, U>) -> Self {
        self.scene.on_leave.push(Arc::new(h));
        self
    }

    /// Runs when a scene pushed on top of this one leaves and this one is active again;
    /// read the child's result with [`Cx::take_result`](crate::Cx::take_result).
    #[must_use]
    pub fn on_resume(mut self, h: impl Handler<S, U>) -> Self {
        self.scene.on_resume = Some(Arc::new(h));
        self
    }

    /// Expire the scene `secs` seconds after it was entered (Telegraf's `ttl`): absolute,
    /// not extended by activity. Expiry is silent: no leave hook runs.
    #[must_use]
    pub fn ttl(mut self, secs: u32) -> Self {
        self.scene.ttl = Some(secs);
        self.scene.idle_ttl = None;
        self
    }

    /// Expire the scene `secs` seconds after its last update (an idle timeout, refreshed
    /// by activity; Telegraf #1829).
    #[must_use]
    pub fn idle_ttl(mut self, secs: u32) -> Self {
        self.scene.idle_ttl = Some(secs);
        self.scene.ttl = None;
        self
    }

    /// The state type of this scene: entering without a state starts from `T::default()`.
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
    #[must_use]
    pub fn recovery(mut self, recovery: Recovery) -> Self {
        self.scene.recovery = recovery;
        self
    }

    /// Finishes the scene.
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

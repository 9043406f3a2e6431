//! Scenes (Telegraf's `BaseScene`): routes, hooks, TTLs and, for wizards, steps.
//!
//! What a scene stores (its [`Frame`] on the stack and its [`SceneState`]) is part of the
//! session record and lives in [`record`](crate::record); it is re-exported here.

mod builder;

use std::fmt;
use std::sync::Arc;

pub use builder::SceneBuilder;

#[doc(no_inline)]
pub use crate::record::{AsAny, Frame, JsonState, SceneState};

use crate::handler::{Handler, LeaveHook, Routes};

pub(crate) type StateFactory = Arc<dyn Fn() -> Box<dyn SceneState> + Send + Sync>;

/// An upgrade of stored scene state from one tag to the next (see
/// [`SceneBuilder::upgrade`]).
pub(crate) type Upgrade = Arc<
    dyn Fn(serde_json::Value) -> std::result::Result<serde_json::Value, crate::error::BoxError>
        + Send
        + Sync,
>;

/// What the stage does when the active frame of a stored session cannot be used: its
/// state did not decode (see [`Undecodable`](crate::record::Undecodable)) or its scene
/// is no longer registered. Either way the user first hears the stage's recovery notice
/// ([`StageBuilder::recovery_notice`](crate::stage::StageBuilder::recovery_notice)),
/// the frame's stored JSON stays in the record's `lost` field, and the rest of the
/// session (the user's data, the frames beneath) is kept.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Recovery {
    /// Enter the scene again from its start, with a fresh state (its enter hook runs,
    /// typically asking its first question again). The default. The update that found
    /// it is taken by that (a stage route such as `/cancel` still runs first).
    #[default]
    Restart,
    /// Leave the scene (no leave hook: its state is gone); the scene beneath resumes,
    /// or the update goes on to the bot's handlers.
    Leave,
    /// Clear the whole stack.
    Clear,
}
pub(crate) type ResumeHook<S, U> = Arc<dyn Handler<S, U>>;

/// "If no update within `secs`, run this hook": a scene's or a wizard step's timeout
/// (see [`SceneBuilder::timeout`] and [`WizardBuilder::step_timeout`](crate::wizard::WizardBuilder::step_timeout)).
pub(crate) struct Timeout<S, U> {
    pub(crate) secs: u32,
    pub(crate) hook: Arc<dyn Handler<S, U>>,
}

impl<S, U> Clone for Timeout<S, U> {
    fn clone(&self) -> Self {
        Self {
            secs: self.secs,
            hook: Arc::clone(&self.hook),
        }
    }
}

/// A registered scene: handlers, hooks, TTL and, for wizards, the steps.
///
/// Build one with [`Scene::builder`] (a plain scene, Telegraf's `BaseScene`) or
/// [`Wizard::builder`](crate::wizard::Wizard::builder) (Telegraf's `WizardScene`).
pub struct Scene<S, U = crate::update::TelegramUpdate> {
    pub(crate) id: String,
    pub(crate) routes: Routes<S, U>,
    pub(crate) steps: Option<Vec<Arc<dyn Handler<S, U>>>>,
    pub(crate) on_enter: Vec<Arc<dyn Handler<S, U>>>,
    pub(crate) on_leave: Vec<Arc<dyn LeaveHook<S, U>>>,
    pub(crate) on_resume: Option<ResumeHook<S, U>>,
    pub(crate) ttl: Option<u32>,
    pub(crate) idle_ttl: Option<u32>,
    pub(crate) init_state: StateFactory,
    /// Upgrades of stored state: from a tag to (the next tag, the function).
    pub(crate) upgrades: std::collections::HashMap<String, (String, Upgrade)>,
    pub(crate) recovery: Recovery,
    /// The scene's timeout, for every step that declares none.
    pub(crate) timeout: Option<Timeout<S, U>>,
    /// Wizard steps' own timeouts, by step.
    pub(crate) step_timeouts: Vec<Option<Timeout<S, U>>>,
    /// Hooks that run when the scene's TTL runs out.
    pub(crate) on_expire: Vec<Arc<dyn LeaveHook<S, U>>>,
    /// Whether the leave hooks run when the TTL runs out.
    pub(crate) leave_on_expire: bool,
    /// Transitions declared for the diagram ([`SceneBuilder::goes_to`], [`SceneBuilder::calls`]).
    pub(crate) declared: Vec<(Declared, String)>,
}

/// A transition a scene declares (for [`Stage::to_mermaid`](crate::Stage::to_mermaid)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Declared {
    /// Enters another scene in its place.
    GoesTo,
    /// Pushes another scene as a sub-scene and resumes when it leaves.
    Calls,
}

impl<S, U> Scene<S, U> {
    /// The scene id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Is this scene a wizard (has steps)?
    #[must_use]
    pub fn is_wizard(&self) -> bool {
        self.steps.is_some()
    }

    /// The number of wizard steps (0 for a plain scene).
    #[must_use]
    pub fn step_count(&self) -> usize {
        self.steps.as_ref().map_or(0, Vec::len)
    }

    /// The timeout that applies at wizard step `cursor` (a plain scene: `None`): the
    /// step's own, else the scene's.
    pub(crate) fn timeout_at(&self, cursor: Option<i64>) -> Option<&Timeout<S, U>> {
        let own = cursor
            .and_then(|c| usize::try_from(c).ok())
            .and_then(|c| self.step_timeouts.get(c))
            .and_then(Option::as_ref);
        own.or(self.timeout.as_ref())
    }

    /// Whether any timeout is declared.
    pub(crate) fn has_timeouts(&self) -> bool {
        self.timeout.is_some() || self.step_timeouts.iter().any(Option::is_some)
    }

    /// Whether the scene's expiry runs hooks (and so fires on its own, without an
    /// update): Telegraf's silent expiry otherwise.
    pub(crate) fn hooks_expiry(&self) -> bool {
        !self.on_expire.is_empty() || self.leave_on_expire
    }
}

impl<S, U> fmt::Debug for Scene<S, U> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scene")
            .field("id", &self.id)
            .field("routes", &self.routes)
            .field("steps", &self.step_count())
            .field("ttl", &self.ttl)
            .field("idle_ttl", &self.idle_ttl)
            .finish_non_exhaustive()
    }
}

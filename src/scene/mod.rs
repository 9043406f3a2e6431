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
pub(crate) type ResumeHook<S, U> = Arc<dyn Handler<S, U>>;

/// A registered scene: handlers, hooks, TTL and, for wizards, the steps.
///
/// Build one with [`Scene::builder`] (a plain scene, Telegraf's `BaseScene`) or
/// [`Wizard::builder`](crate::wizard::Wizard::builder) (Telegraf's `WizardScene`).
pub struct Scene<S, U> {
    pub(crate) id: String,
    pub(crate) routes: Routes<S, U>,
    pub(crate) steps: Option<Vec<Arc<dyn Handler<S, U>>>>,
    pub(crate) on_enter: Vec<Arc<dyn Handler<S, U>>>,
    pub(crate) on_leave: Vec<Arc<dyn LeaveHook<S, U>>>,
    pub(crate) on_resume: Option<ResumeHook<S, U>>,
    pub(crate) ttl: Option<u32>,
    pub(crate) idle_ttl: Option<u32>,
    pub(crate) init_state: StateFactory,
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

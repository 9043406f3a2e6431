//! Scenes (Telegraf's `BaseScene`), their serializable state, and the frames of the scene stack.

mod builder;

use std::any::Any;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

pub use builder::SceneBuilder;

use crate::handler::{Handler, LeaveHook, Routes};

/// Type-erasure helpers for [`SceneState`]; implemented for every `'static` type.
pub trait AsAny: Any {
    /// `&self` as `&dyn Any`.
    fn as_any(&self) -> &dyn Any;
    /// `&mut self` as `&mut dyn Any`.
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// The Rust type name, for error messages.
    fn type_name(&self) -> &'static str;
}

impl<T: Any> AsAny for T {
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn type_name(&self) -> &'static str {
        std::any::type_name::<T>()
    }
}

/// A scene's own typed state, stored in its frame.
///
/// Implement it with `typetag` and an explicit, stable name, so that renaming the Rust
/// type does not orphan stored conversations:
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use stagecraft::scene::SceneState;
///
/// #[derive(Debug, Default, Clone, Serialize, Deserialize)]
/// struct Signup { name: String, age: u8 }
///
/// #[typetag::serde(name = "signup.v1")]
/// impl SceneState for Signup {}
/// ```
///
/// Keep implementations non-generic (typetag cannot deserialize generic impls). For
/// quick scripts, [`JsonState`] holds untyped JSON.
#[typetag::serde]
pub trait SceneState: AsAny + fmt::Debug + Send + Sync {}

/// Untyped JSON scene state, for quick scripts (and the default state of scenes that
/// declare none).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JsonState(pub serde_json::Value);

#[typetag::serde(name = "json")]
impl SceneState for JsonState {}

impl JsonState {
    /// An empty JSON object.
    #[must_use]
    pub fn object() -> Self {
        Self(serde_json::Value::Object(serde_json::Map::new()))
    }
}

/// One entry of the scene stack, as stored in the session record.
///
/// `scene`, `cursor`, `entered_at` and `expires` are plain fields, readable from the
/// stored JSON without the bot's types; `state` is the scene's typed state, tagged with
/// its stable `typetag` name.
#[derive(Debug, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Frame {
    /// The scene id.
    pub scene: String,
    /// The wizard step; `None` for a plain scene. May be out of range (Telegraf lets
    /// `next()` run past the last step; the next update then leaves the scene).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<i64>,
    /// When the scene was (re)entered, Unix seconds.
    pub entered_at: i64,
    /// When the scene expires, Unix seconds: still active while `now <= expires`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// The scene's state.
    pub state: Box<dyn SceneState>,
}

impl Frame {
    /// Has this frame expired at `now_s`?
    #[must_use]
    pub fn is_expired(&self, now_s: i64) -> bool {
        self.expires.is_some_and(|e| e < now_s)
    }
}

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

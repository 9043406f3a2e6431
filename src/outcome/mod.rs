//! [`Outcome`]: what a handler answers: a transition, as data, interpreted by the stage.

use std::any::Any;
use std::fmt;

use crate::record::SceneState;

/// How many transitions one update may make before it is taken for a loop.
pub const MAX_TRANSITIONS: usize = 64;
/// How deep the scene stack may grow.
pub const MAX_DEPTH: usize = 32;

/// What a handler, step or hook answers. The stage applies it (transitions as data).
///
/// Moving a wizard's cursor ([`Next`](Self::Next), [`Back`](Self::Back),
/// [`Goto`](Self::Goto)) never runs a step by itself, as in Telegraf: the new step runs
/// on the *next* update. The `...Now` variants move and run the step at once with the
/// same update.
#[non_exhaustive]
pub enum Outcome {
    /// The update is handled; nothing moves (a wizard stays on its step).
    Handled,
    /// Not handled here: the update continues to the next matching handler, and past
    /// the stage to the handlers after it (Telegraf's `next()`).
    Pass,
    /// Wizard: move to the next step (runs on the next update).
    Next,
    /// Wizard: move to the previous step (runs on the next update).
    Back,
    /// Wizard: move to step `n` (runs on the next update). Out of range: the next
    /// update leaves the scene.
    Goto(i64),
    /// Wizard: move to the next step and run it now with this update.
    NextNow,
    /// Wizard: move to step `n` and run it now with this update. Out of range: the
    /// scene is left at once.
    GotoNow(i64),
    /// Leave the current scene and enter another in its place (Telegraf's `enter`).
    Enter(Enter),
    /// Enter a scene on top of the current one, which waits beneath it; when the new
    /// scene leaves, the parent resumes (see [`SceneBuilder::on_resume`](crate::scene::SceneBuilder::on_resume)).
    Push(Enter),
    /// Leave every scene, then enter this one as the only scene.
    Replace(Enter),
    /// Leave the current scene and enter it again with the same state (cursor back to 0).
    Reenter,
    /// Leave the current scene; a parent beneath it resumes and may read the result
    /// with [`Cx::take_result`](crate::Cx::take_result).
    Leave(Option<Handoff>),
    /// Leave every scene, top first.
    Clear,
}

impl Outcome {
    /// Enter scene `id` with its default state.
    #[must_use]
    pub fn enter(id: impl Into<String>) -> Self {
        Self::Enter(Enter::new(id))
    }

    /// Enter scene `id` with this state.
    #[must_use]
    pub fn enter_with(id: impl Into<String>, state: impl SceneState) -> Self {
        Self::Enter(Enter::new(id).state(state))
    }

    /// Push scene `id` (with its default state) on top of the current one.
    #[must_use]
    pub fn push(id: impl Into<String>) -> Self {
        Self::Push(Enter::new(id))
    }

    /// Push scene `id` with this state on top of the current one.
    #[must_use]
    pub fn push_with(id: impl Into<String>, state: impl SceneState) -> Self {
        Self::Push(Enter::new(id).state(state))
    }

    /// Leave the current scene.
    #[must_use]
    pub fn leave() -> Self {
        Self::Leave(None)
    }

    /// Leave the current scene, handing `result` to the parent it returns to.
    #[must_use]
    pub fn leave_with<T: Any + Send>(result: T) -> Self {
        Self::Leave(Some(Handoff::new(result)))
    }

    /// Is this a change of scene or step (anything but `Handled` and `Pass`)?
    #[must_use]
    pub fn is_transition(&self) -> bool {
        !matches!(self, Self::Handled | Self::Pass)
    }

    /// Is this a wizard cursor move that runs no step ([`Next`](Self::Next),
    /// [`Back`](Self::Back), [`Goto`](Self::Goto))?
    pub(crate) fn is_cursor_move(&self) -> bool {
        matches!(self, Self::Next | Self::Back | Self::Goto(_))
    }

    /// Where a cursor move ([`Next`](Self::Next), [`Back`](Self::Back),
    /// [`Goto`](Self::Goto), and the `...Now` variants) takes cursor `c`.
    pub(crate) fn moved_cursor(&self, c: i64) -> Option<i64> {
        match self {
            Self::Next | Self::NextNow => Some(c.saturating_add(1)),
            Self::Back => Some(c.saturating_sub(1)),
            Self::Goto(n) | Self::GotoNow(n) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Debug for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Handled => f.write_str("Handled"),
            Self::Pass => f.write_str("Pass"),
            Self::Next => f.write_str("Next"),
            Self::Back => f.write_str("Back"),
            Self::Goto(n) => write!(f, "Goto({n})"),
            Self::NextNow => f.write_str("NextNow"),
            Self::GotoNow(n) => write!(f, "GotoNow({n})"),
            Self::Enter(e) => write!(f, "Enter({e:?})"),
            Self::Push(e) => write!(f, "Push({e:?})"),
            Self::Replace(e) => write!(f, "Replace({e:?})"),
            Self::Reenter => f.write_str("Reenter"),
            Self::Leave(r) => write!(f, "Leave(result: {})", r.is_some()),
            Self::Clear => f.write_str("Clear"),
        }
    }
}

/// The value a scene leaves with ([`Outcome::leave_with`]), on its way to the parent it
/// returns to, which reads it with [`Cx::take_result`](crate::Cx::take_result). It
/// remembers its type's name, so that reading it as another type is an error naming both.
pub struct Handoff {
    value: Box<dyn Any + Send>,
    type_name: &'static str,
}

impl Handoff {
    /// `value`, to hand to the parent scene.
    #[must_use]
    pub fn new<T: Any + Send>(value: T) -> Self {
        Self {
            value: Box::new(value),
            type_name: std::any::type_name::<T>(),
        }
    }

    /// The Rust type name of the value.
    #[must_use]
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The value as a `T`, or the handoff back when it is another type.
    ///
    /// # Errors
    /// The handoff itself, untouched, when the value is not a `T`.
    pub fn downcast<T: Any>(self) -> std::result::Result<T, Self> {
        let type_name = self.type_name;
        self.value
            .downcast::<T>()
            .map(|v| *v)
            .map_err(|value| Self { value, type_name })
    }
}

impl fmt::Debug for Handoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handoff")
            .field("type", &self.type_name)
            .finish_non_exhaustive()
    }
}

/// Which scene to enter, with what state, and whether to run hooks.
#[derive(Debug)]
#[non_exhaustive]
pub struct Enter {
    /// The scene id.
    pub id: String,
    /// The initial state; `None`: the scene's default state.
    pub state: Option<Box<dyn SceneState>>,
    /// Silent: no leave hooks for the scene left, no enter hooks or first step for the
    /// scene entered (Telegraf's `enter(id, state, true)`).
    pub silent: bool,
}

impl Enter {
    /// Enter `id` with its default state, running hooks.
    #[must_use]
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            state: None,
            silent: false,
        }
    }

    /// With this initial state.
    #[must_use]
    pub fn state(mut self, state: impl SceneState) -> Self {
        self.state = Some(Box::new(state));
        self
    }

    /// With this boxed initial state.
    #[must_use]
    pub fn boxed_state(mut self, state: Box<dyn SceneState>) -> Self {
        self.state = Some(state);
        self
    }

    /// Without hooks.
    #[must_use]
    pub fn silent(mut self) -> Self {
        self.silent = true;
        self
    }
}

//! The names most bots need: `use stagecraft::prelude::*;`.

pub use crate::context::Cx;
pub use crate::error::{BoxError, Error, Result};
pub use crate::handler::{HandlerResult, RouteBuilder};
pub use crate::pipeline::{Dispatch, Next, Pipeline};
pub use crate::scene::{JsonState, Scene, SceneState};
pub use crate::session::{ErrorPolicy, Key};
pub use crate::stage::{Outcome, Stage};
pub use crate::store::{MemoryStore, SessionStore};
pub use crate::transport::RecordingTransport;
pub use crate::update::{TelegramUpdate, Update as _};
pub use crate::wizard::Wizard;

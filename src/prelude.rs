//! The names most bots need: `use stagecraft::prelude::*;`.

pub use crate::context::Cx;
pub use crate::error::{BoxError, Error, Result};
pub use crate::handler::{HandlerResult, Next, RouteBuilder};
pub use crate::outcome::Outcome;
pub use crate::pipeline::{Dispatch, Pipeline};
pub use crate::record::{JsonState, SceneState};
pub use crate::scene::Scene;
pub use crate::session::{ErrorPolicy, KeyStrategy};
pub use crate::stage::Stage;
pub use crate::store::{MemoryStore, SessionStore};
pub use crate::transport::RecordingTransport;
pub use crate::update::{TelegramUpdate, Update as _};
pub use crate::wizard::Wizard;

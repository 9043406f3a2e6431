//! stagecraft: sessions, scenes and wizards for chat bots.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
pub mod context;
pub mod error;
pub mod handler;
pub mod pipeline;
pub mod prelude;
pub mod replay;
pub mod scene;
pub mod session;
pub mod stage;
pub mod store;
pub mod testing;
pub mod transport;
pub mod update;
pub mod wizard;

#[doc(inline)]
pub use context::Cx;
#[doc(inline)]
pub use error::{BoxError, Error, Result};
#[doc(inline)]
pub use pipeline::{Dispatch, Pipeline};
#[doc(inline)]
pub use scene::{Scene, SceneState};
#[doc(inline)]
pub use stage::{Outcome, Stage};
#[doc(inline)]
pub use wizard::Wizard;

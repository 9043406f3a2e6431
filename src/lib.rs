//! stagecraft: sessions, scenes and wizards for chat bots.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
pub mod error;
pub mod store;

#[doc(inline)]
pub use error::{BoxError, Error, Result};

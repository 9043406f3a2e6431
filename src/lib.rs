//! stagecraft: sessions, scenes and wizards for chat bots.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod clock;
pub mod error;
pub mod store;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

#[doc(inline)]
pub use error::{BoxError, Error, Result};

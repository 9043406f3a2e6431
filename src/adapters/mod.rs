//! Adapters that run a [`Pipeline`](crate::Pipeline) inside a bot framework.
//!
//! - [`teloxide`](mod@self::teloxide) (feature `teloxide`): teloxide's `Update` as a
//!   stagecraft update, replies through `Bot`, and a dptree entry point for teloxide's
//!   `Dispatcher`.

#[cfg(feature = "teloxide")]
#[cfg_attr(docsrs, doc(cfg(feature = "teloxide")))]
pub mod teloxide;

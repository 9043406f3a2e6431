//! Adapters that run a [`Pipeline`](crate::Pipeline) inside a bot framework.
//!
//! - [`teloxide`](mod@self::teloxide) (feature `teloxide`): teloxide's `Update` as a
//!   stagecraft update, replies through `Bot`, and a dptree entry point for teloxide's
//!   `Dispatcher`.
//! - [`webhook`](mod@self::webhook) (feature `webhook`): an `axum` route that takes the
//!   updates Telegram posts to a webhook, for one process or many replicas behind a load
//!   balancer.

#[cfg(feature = "teloxide")]
#[cfg_attr(docsrs, doc(cfg(feature = "teloxide")))]
pub mod teloxide;

#[cfg(feature = "webhook")]
#[cfg_attr(docsrs, doc(cfg(feature = "webhook")))]
pub mod webhook;

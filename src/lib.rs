//! Sessions, scenes and wizards for chat bots: Telegraf's `session` + `Stage` +
//! `BaseScene` + `WizardScene`, rebuilt in Rust and made safe.
//!
//! - A **session** holds per-key data (by default per user in each chat) in a
//!   [store]: memory, SQLite (default feature), Redis, PostgreSQL, MySQL.
//! - Inside the session lives a **scene stack**: serializable [frames](scene::Frame) that
//!   say which scene is active, which wizard step it is on, and the scene's typed state.
//! - The [`Stage`] sends each update to the current step of the active scene; a step
//!   answers an [`Outcome`] (stay, next, back, go to step, enter/push/leave a scene) that
//!   the stage applies.
//! - The [`Pipeline`] wraps it all in a session cycle that makes Telegraf's session
//!   hazards impossible: updates of one key never interleave, writes are
//!   compare-and-set, replies are held back until the session is stored.
//!
//! # Example
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use stagecraft::prelude::*;
//! use stagecraft::testing::TestBot;
//!
//! #[derive(Debug, Default, Serialize, Deserialize)]
//! struct Data { name: Option<String> }
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let bot = TestBot::<Data>::new(|builder| {
//!     let stage = Stage::builder()
//!         .scene(Wizard::builder("signup")
//!             .command("cancel", |cx: Cx<Data>| async move {
//!                 cx.reply("Cancelled.");
//!                 Ok(Outcome::leave())
//!             })
//!             .step(|cx: Cx<Data>| async move {
//!                 cx.reply("What is your name?");
//!                 Ok(Outcome::Next)
//!             })
//!             .step(|cx: Cx<Data>| async move {
//!                 let name = cx.update().message_text().unwrap_or_default().to_owned();
//!                 cx.reply(format!("Welcome, {name}!"));
//!                 cx.session_mut(|d| d.name = Some(name))?;
//!                 Ok(Outcome::leave())
//!             })
//!             .build())
//!         .build()
//!         .unwrap();
//!     builder
//!         .stage(stage)
//!         .command("start", |_cx: Cx<Data>| async move { Ok(Outcome::enter("signup")) })
//!         .build()
//! });
//! assert_eq!(bot.send("/start").await.unwrap(), ["What is your name?"]);
//! assert_eq!(bot.send("Ann").await.unwrap(), ["Welcome, Ann!"]);
//! assert_eq!(bot.stored().await.unwrap().data["name"], "Ann");
//! # });
//! ```
//!
//! # Guides
//!
//! The `docs/` folder of the repository, rendered in the [`guide`] module (every example
//! in them is a doctest):
//!
//! - [getting started](guide::getting_started): a two-step wizard in twenty lines, its
//!   dependencies, its test, and how replies leave the pipeline.
//! - [concepts](guide::concepts): sessions, the scene stack, the stage, scenes and
//!   wizards, transitions.
//! - [coming from Telegraf](guide::coming_from_telegraf): every Telegraf call and its
//!   stagecraft counterpart, and where stagecraft deliberately differs.
//! - [concurrency](guide::concurrency): what is guaranteed, in one process and across
//!   replicas.
//! - [testing](guide::testing): unit-testing a conversation, replaying recorded updates.
//! - [teloxide](guide::teloxide): running stagecraft in a teloxide bot, moving from
//!   teloxide dialogues.
//! - [stores](guide::stores): memory, SQLite, Redis, PostgreSQL and MySQL, their
//!   capabilities, and writing your own.
//! - [performance](guide::performance): measured throughput and costs per update, and how
//!   to reproduce them.
//! - [architecture](guide::architecture): the layers, who owns what, one update end to end.
//! - [replies](guide::replies): keyboards, parse modes, media, edits, message ids, and
//!   buttons bound to their step.
//! - [reliability](guide::reliability): hostile input, how it is tested, the fuzzers.
//! - [operating](guide::operating): the `stagecraft` tool (who is stuck where, resetting
//!   one user), the flow as a Mermaid diagram, the tracing span, events and metrics.
//!
//! # Feature flags
//!
//! | Name | Description | Default? |
//! |---|---|---|
//! | `sqlite` | `SqliteStore` on sqlx | yes |
//! | `postgres` | `PostgresStore` on sqlx | no |
//! | `mysql` | `MySqlStore` on sqlx | no |
//! | `redis` | `RedisStore` on redis-rs | no |
//! | `msgpack` | `Codec::MsgPack` | no |
//! | `teloxide` | the teloxide adapter (`adapters::teloxide`) | no |
//! | `testing` | the store conformance suite | no |
//! | `cli` | the `stagecraft` command-line tool ([`admin`] on any store URL) | no |
//! | `metrics` | counters through the `metrics` facade ([`observe`]) | no |
//! | `log` | `tracing`'s `log` bridge: events become `log` records without a subscriber | no |
//!
//! # Supported Rust versions
//!
//! Rust 1.85 and later. The minimum is at least six months old and is raised only in a
//! minor release.
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "teloxide")]
#[cfg_attr(docsrs, doc(cfg(feature = "teloxide")))]
pub mod adapters;
pub mod admin;
pub mod clock;
pub mod context;
pub mod error;
pub mod guide;
pub mod handler;
pub mod observe;
pub mod outcome;
pub mod pipeline;
pub mod prelude;
pub mod record;
pub mod replay;
pub mod scene;
pub mod session;
pub mod stage;
pub mod store;
pub mod testing;
pub mod transport;
pub mod update;
mod util;
pub mod wizard;

#[doc(inline)]
pub use context::Cx;
#[doc(inline)]
pub use error::{BoxError, Error, Result};
#[doc(inline)]
pub use outcome::Outcome;
#[doc(inline)]
pub use pipeline::{Dispatch, PendingDelivery, Pipeline, TimerTask};
#[doc(inline)]
pub use record::SceneState;
#[doc(inline)]
pub use scene::Scene;
#[doc(inline)]
pub use stage::Stage;
#[doc(inline)]
pub use wizard::Wizard;

/// The attribute that lets a trait have `async fn`s behind `dyn`: implement
/// [`SessionStore`](store::SessionStore), [`Transport`](transport::Transport) and the
/// store capability traits with it, without a dependency of your own.
#[doc(no_inline)]
pub use async_trait::async_trait;

#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

//! Testing conversations (and, with feature `testing`, stores: the conformance suite
//! and `FaultStore`, a store decorator that injects faults).
//!
//! [`TestBot`] drives a pipeline with scripted updates from a fake user, a
//! [`ManualClock`](crate::clock::ManualClock), and records the replies of each update, so a conversation is
//! unit-tested in a few lines:
//!
//! ```
//! use stagecraft::prelude::*;
//! use stagecraft::testing::TestBot;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let bot = TestBot::new(|b| {
//!     b.stage(Stage::builder()
//!         .scene(Wizard::builder("ask")
//!             .step(|cx: Cx<()>| async move { cx.reply("Name?"); Ok(Outcome::Next) })
//!             .step(|cx: Cx<()>| async move {
//!                 let name = cx.update().message_text().unwrap_or_default().to_owned();
//!                 cx.reply(format!("Hi {name}"));
//!                 Ok(Outcome::leave())
//!             })
//!             .build())
//!         .build().unwrap())
//!     .command("ask", |_cx: Cx<()>| async move { Ok(Outcome::enter("ask")) })
//!     .build()
//! });
//! assert_eq!(bot.send("/ask").await.unwrap(), ["Name?"]);
//! assert_eq!(bot.scenes().await, [("ask".to_owned(), Some(1))]);
//! assert_eq!(bot.send("Ann").await.unwrap(), ["Hi Ann"]);
//! assert!(bot.scenes().await.is_empty());
//! # });
//! ```

mod conversation;

pub use conversation::TestBot;

#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod conformance;
#[cfg(any(test, feature = "testing"))]
mod faults;

#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub use faults::{Call, Fault, FaultStore, InjectedFault};

//! The guides of the repository's `docs/` folder, in rustdoc.
//!
//! Each submodule is one guide, its Markdown included as it is on GitHub. Every Rust
//! block in a guide is a doctest, so the guides compile and run against the API they
//! describe (`cargo test --all-features --doc`).
//!
//! - [`getting_started`]: a two-step wizard, its test, and where its replies go.
//! - [`concepts`]: sessions, the scene stack, the stage, scenes and wizards, transitions.
//! - [`coming_from_telegraf`]: every Telegraf call and its stagecraft counterpart.
//! - [`concurrency`]: what is guaranteed, in one process and across replicas.
//! - [`testing`]: unit-testing a conversation with `TestBot`, replays.
//! - [`teloxide`]: running stagecraft in a teloxide bot (feature `teloxide`).
//! - [`stores`]: the stores, their options, and writing your own (built with every store
//!   feature).
//! - [`performance`]: measured throughput and costs per update, and how to reproduce them.
//! - [`architecture`]: the layers, who owns what, and one update end to end.
//! - [`operating`]: the `stagecraft` tool (who is where, reset one user), the flow as a
//!   diagram, the tracing span, events and metrics.
//! - [`deploying`]: polling or webhooks, replicas, choosing a store, TLS.
//! - [`timeouts`]: durable timeouts that notice a silent user, expiry hooks, the index
//!   of due work.
//! - [`migrations`]: conversations that survive a deploy: versioned state, upgrades,
//!   recovery of what no longer decodes, fields of newer versions kept.
//! - [`reliability`]: hostile input, the start-up check of a store, store faults and
//!   server outages, how they are tested, the fuzzers.

// The guides link to each other by file name (`[stores.md]`, defined at the end of each
// guide as a link to the file), so that they read on GitHub. Here the same names are
// defined first, pointing to the guide modules: CommonMark takes a label's first
// definition. (So a doctest's line, as rustdoc reports it, is 10 past its line in the
// Markdown file.)
macro_rules! guide_links {
    () => {
        "[getting-started.md]: crate::guide::getting_started\n\
         [operating.md]: crate::guide::operating\n\
         [concepts.md]: crate::guide::concepts\n\
         [coming-from-telegraf.md]: crate::guide::coming_from_telegraf\n\
         [concurrency.md]: crate::guide::concurrency\n\
         [testing.md]: crate::guide::testing\n\
         [teloxide.md]: crate::guide::teloxide\n\
         [stores.md]: crate::guide::stores\n\
         [performance.md]: crate::guide::performance\n\
         [architecture.md]: crate::guide::architecture\n\
         [reliability.md]: crate::guide::reliability\n\
         [delivery.md]: crate::guide::delivery\n\
         [migrations.md]: crate::guide::migrations\n\
         [timeouts.md]: crate::guide::timeouts\n\
         [deploying.md]: crate::guide::deploying"
    };
}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/getting-started.md")]
pub mod getting_started {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/concepts.md")]
pub mod concepts {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/coming-from-telegraf.md")]
pub mod coming_from_telegraf {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/concurrency.md")]
pub mod concurrency {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/testing.md")]
pub mod testing {}

// Its examples need the `teloxide` feature: without it, the guide is a pointer only.
#[cfg_attr(feature = "teloxide", doc = guide_links!())]
#[cfg_attr(feature = "teloxide", doc = include_str!("../../docs/teloxide.md"))]
#[cfg_attr(
    not(feature = "teloxide"),
    doc = "stagecraft in a teloxide bot: this guide is built with the `teloxide` feature."
)]
pub mod teloxide {}

// Its examples open every kind of store: without the store features, a pointer only.
#[cfg_attr(
    all(feature = "sqlite", feature = "postgres", feature = "mysql", feature = "redis", feature = "mongodb", feature = "testing"),
    doc = guide_links!()
)]
#[cfg_attr(
    all(feature = "sqlite", feature = "postgres", feature = "mysql", feature = "redis", feature = "mongodb", feature = "testing"),
    doc = include_str!("../../docs/stores.md")
)]
#[cfg_attr(
    not(all(
        feature = "sqlite",
        feature = "postgres",
        feature = "mysql",
        feature = "redis",
        feature = "mongodb",
        feature = "testing"
    )),
    doc = "The stores: this guide is built with the `sqlite`, `postgres`, `mysql`, `redis`, `mongodb` and `testing` features."
)]
pub mod stores {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/performance.md")]
pub mod performance {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/architecture.md")]
pub mod architecture {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/delivery.md")]
pub mod delivery {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/reliability.md")]
pub mod reliability {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/operating.md")]
pub mod operating {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/migrations.md")]
pub mod migrations {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/timeouts.md")]
pub mod timeouts {}

#[doc = guide_links!()]
#[doc = include_str!("../../docs/deploying.md")]
pub mod deploying {}

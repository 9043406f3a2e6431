//! stagecraft against Telegraf's conformance checklist (S1–S8, T0–T5, C1–C7, W1–W5),
//! through the public API only. Tests are named after the item they prove; `diff_*`
//! tests pin a deliberate difference from Telegraf, with a comment saying what Telegraf
//! does and why stagecraft differs.

mod common;
mod ordering;
mod scene;
mod session;
#[path = "../common/mod.rs"]
mod shared;
mod stack;
mod stage;
mod wizard;

//! Test helpers.

pub mod conformance;

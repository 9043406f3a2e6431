#![no_main]
//! See `stagecraft_fuzz::key_strategies`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stagecraft_fuzz::key_strategies(data));

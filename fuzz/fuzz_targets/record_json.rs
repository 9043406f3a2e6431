#![no_main]
//! See `stagecraft_fuzz::record_json`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stagecraft_fuzz::record_json(data));

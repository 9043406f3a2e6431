#![no_main]
//! See `stagecraft_fuzz::record_bytes`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stagecraft_fuzz::record_bytes(data));

#![no_main]
//! See `stagecraft_fuzz::replay`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stagecraft_fuzz::replay(data));

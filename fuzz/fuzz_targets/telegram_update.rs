#![no_main]
//! See `stagecraft_fuzz::telegram_update`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| stagecraft_fuzz::telegram_update(data));

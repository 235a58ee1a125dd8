//! Fuzz target: see `checks::event_decoder` (fuzz/checks.rs) for the property.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code, reason = "each target uses one check")]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::event_decoder(data));

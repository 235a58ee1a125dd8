//! Fuzz target: see `checks::backfill_config` (fuzz/checks.rs) for the property.
#![no_main]

#[path = "../checks.rs"]
#[allow(dead_code, reason = "each target uses one check")]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::backfill_config(data));

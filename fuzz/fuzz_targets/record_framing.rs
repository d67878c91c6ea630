//! `RecordBuffer::push` on data cut into chunks at lengths the input gives; records must match a one-shot split (fuzz/checks.rs).

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::record_framing(data));

//! What a new connection sends first: the handshake record, then records of the chosen protocol (fuzz/checks.rs).

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::handshake(data));

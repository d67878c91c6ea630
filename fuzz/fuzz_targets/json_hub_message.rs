//! One JSON hub protocol record (no separator) through
//! `Protocol::Json.decode`, and the decode -> encode -> decode round trip
//! (fuzz/checks.rs).

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::hub_message(signalr_sidecar::codec::Protocol::Json, data));

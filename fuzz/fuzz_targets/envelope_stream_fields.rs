//! A Redis Stream entry as `name=value` lines through `Envelope::from_stream_fields`; accepted ones must survive republishing (fuzz/checks.rs).

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::envelope_stream_fields(
    data,
    checks::schemas(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
));

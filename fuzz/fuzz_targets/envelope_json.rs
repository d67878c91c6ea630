//! An envelope as JSON (POST /internal/events, a stream entry's `data` field); accepted ones must survive republishing (fuzz/checks.rs).

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::envelope_json(
    data,
    checks::schemas(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
));

//! `LengthBuffer::push` (MessagePack's VarInt length prefixes) on data cut
//! into chunks at lengths the input gives; messages must match a one-shot
//! read (fuzz/checks.rs).

#![no_main]

#[allow(dead_code)]
#[path = "../checks.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::length_framing(data));

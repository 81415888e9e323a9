//! Arbitrary bytes into every decoder of the record format (`host/src/log/encoding.rs`):
//! none may panic, and whatever decodes must re-encode to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(record) = evhost::log::fuzzing::decode_all(data) {
        panic!("{record}: decoded, but re-encodes to other bytes");
    }
});

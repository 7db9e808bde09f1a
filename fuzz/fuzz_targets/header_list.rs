//! Decode arbitrary bytes as a sealed header list (docs/FORMAT.md section
//! 12.2). The decoder must never panic, and every list it accepts must
//! re-encode to exactly the input: a strict codec has one encoding per list.
//! The same property runs on stable in core/tests/format_headers.rs.
#![no_main]

use kafka_e2ee_core::format::{decode_header_list, encode_header_list};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(list) = decode_header_list(data) {
        assert_eq!(encode_header_list(&list).unwrap().as_slice(), data);
    }
});

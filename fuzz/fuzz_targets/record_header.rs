//! Decode arbitrary bytes as an `e2ee` record header. The decoder must never
//! panic, and every header it accepts must re-encode to exactly the input:
//! a strict codec has one encoding per header. The same check replays the
//! committed corpus in core/tests/format_fuzz_corpus.rs on stable.
#![no_main]

use kafka_e2ee_core::format::RecordHeader;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(header) = RecordHeader::decode(data) {
        assert_eq!(header.encode().as_slice(), data);
        assert_eq!(header.validate(), Ok(()));
    }
});

//! Replays the committed cargo-fuzz seed corpus of the `record_header` target
//! on stable, with the same check the fuzz target makes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;

use kafka_e2ee_core::format::RecordHeader;

fn check(data: &[u8]) {
    if let Ok(header) = RecordHeader::decode(data) {
        assert_eq!(header.encode().as_slice(), data);
        assert_eq!(header.validate(), Ok(()));
    }
}

#[test]
fn record_header_corpus_round_trips() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/record_header");
    let mut files = 0;
    let mut decoded = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).unwrap();
        check(&data);
        files += 1;
        decoded += usize::from(RecordHeader::decode(&data).is_ok());
    }
    assert!(files >= 5, "expected a seed corpus in {}", dir.display());
    assert!(
        decoded >= 1,
        "the seed corpus should hold valid headers too"
    );
}

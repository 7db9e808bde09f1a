//! The control-message parsers: the plaintext envelope and the inner batch.
//! Anything that decodes must re-encode to the same bytes.
#![no_main]

use kafka_e2ee_core::exchange::wire::{decode_batch, Envelope};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(env) = Envelope::decode(data) {
        assert_eq!(env.encode(), data);
    }
    let _ = decode_batch(data);
});

//! The engine's control-message input: arbitrary bytes (and bytes framed as
//! a control message) must never panic an engine, whatever state it is in.
#![no_main]

use std::sync::OnceLock;

use kafka_e2ee_core::trust::{Authority, Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Engine, EngineConfig};
use libfuzzer_sys::fuzz_target;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T0: u64 = 1_790_000_000_000;

fn engine() -> &'static Engine {
    static ENGINE: OnceLock<Engine> = OnceLock::new();
    ENGINE.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let authority = Authority::generate(&mut rng);
        let all = || vec![TopicPattern::all()];
        let id = Identity::generate("fuzz", all(), all(), T0 - 1, T0 + 1_000_000_000, &authority, &mut rng);
        let trust = TrustAnchor::from_authorities(vec![authority.public_key()]);
        Engine::new(EngineConfig::default(), id, trust, T0, Box::new(ChaCha20Rng::seed_from_u64(2)), None)
            .expect("engine")
    })
}

fuzz_target!(|data: &[u8]| {
    let e = engine();
    let _ = e.handle_control(T0, data);
    while e.poll_transmit().is_some() {}
});

//! The engine's control-message input: arbitrary bytes (and bytes framed as
//! a control message) must never panic an engine, whatever state it is in.
//!
//! One engine lives across inputs, so its state (pending handshakes, wants,
//! answer logs) builds up as it would under a flood. Its clock advances 1 ms
//! per input, and its timers run once per virtual second, so the handshake
//! budget refills (about one Hello in ten gets the full handshake path, as a
//! flooded instance would) and expiry paths run too. A crash may therefore
//! depend on earlier inputs: replay the whole corpus to reproduce it.
#![no_main]

use std::sync::atomic::{AtomicU64, Ordering};
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
        let id = Identity::generate("fuzz", all(), all(), T0 - 1, T0 + 1_000_000_000_000, &authority, &mut rng);
        let trust = TrustAnchor::from_authorities(vec![authority.public_key()]);
        Engine::new(EngineConfig::default(), id, trust, T0, Box::new(ChaCha20Rng::seed_from_u64(2)), None)
            .expect("engine")
    })
}

static INPUTS: AtomicU64 = AtomicU64::new(0);

fuzz_target!(|data: &[u8]| {
    let e = engine();
    let n = INPUTS.fetch_add(1, Ordering::Relaxed);
    let now = T0 + n;
    let _ = e.handle_control(now, data);
    if n % 1000 == 0 {
        let _ = e.handle_timeout(now);
    }
    while e.poll_transmit().is_some() {}
});

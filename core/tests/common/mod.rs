//! Two engines on a perfect in-memory control channel, for tests that are
//! about engine behaviour rather than network faults (those are in
//! simulation.rs).
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kafka_e2ee_core::trust::{Authority, Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::{Channel, ControlMessage, Engine, EngineConfig, Storage};
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

pub const T0: u64 = 1_790_000_000_000;

/// The engine's state in memory (wiped as it is replaced).
pub use kafka_e2ee_core::state::MemoryStorage as MemStorage;

pub struct World {
    pub authority: Authority,
    pub trust: TrustAnchor,
    pub rng: ChaCha20Rng,
}

impl World {
    pub fn new(seed: u64) -> World {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let authority = Authority::generate(&mut rng);
        let trust = TrustAnchor::from_authorities(vec![authority.public_key()]);
        World {
            authority,
            trust,
            rng,
        }
    }

    pub fn identity(&mut self, name: &str, produce: &[&str], consume: &[&str]) -> Identity {
        let pats = |v: &[&str]| {
            v.iter()
                .map(|t| TopicPattern::parse(t).unwrap())
                .collect::<Vec<_>>()
        };
        Identity::generate(
            name,
            pats(produce),
            pats(consume),
            T0 - 60_000,
            T0 + 86_400_000 * 365,
            &self.authority,
            &mut self.rng,
        )
    }

    pub fn engine(&mut self, identity: Identity, storage: Option<MemStorage>) -> Engine {
        self.engine_with(EngineConfig::default(), identity, storage, T0)
    }

    pub fn engine_with(
        &mut self,
        config: EngineConfig,
        identity: Identity,
        storage: Option<MemStorage>,
        now: u64,
    ) -> Engine {
        let rng = Box::new(ChaCha20Rng::from_rng(&mut self.rng).unwrap());
        let storage = storage.map(|s| Box::new(s) as Box<dyn Storage>);
        Engine::new(config, identity, self.trust.clone(), now, rng, storage).unwrap()
    }
}

/// The two topics as a broker keeps them: the keys topic keeps everything
/// (for the retention), the control topic reaches only who is running.
#[derive(Default)]
pub struct Cluster {
    pub keys: Vec<Vec<u8>>,
}

impl Cluster {
    /// Carries messages among the running engines until all are quiet.
    /// Keys-topic messages reach their writer too (a host reads the whole
    /// keys topic, its own records included) and are kept for engines that
    /// start later.
    pub fn run(&mut self, engines: &[&Engine], now: u64) {
        for _ in 0..100 {
            // Tick first: a tick's messages go out in the same round.
            for e in engines {
                e.handle_timeout(now).unwrap();
            }
            let mut moved = false;
            for (i, from) in engines.iter().enumerate() {
                while let Some(msg) = from.poll_transmit() {
                    moved = true;
                    let keys = msg.channel == Channel::Keys;
                    if keys {
                        assert!(msg.record_key().is_some());
                        self.keys.push(msg.payload.clone());
                    }
                    for (j, to) in engines.iter().enumerate() {
                        if i != j || keys {
                            let _ = to.handle_control(now, &msg.payload);
                        }
                    }
                }
            }
            if !moved {
                return;
            }
        }
        panic!("control traffic did not settle");
    }

    /// A starting engine reads the keys topic from its beginning, and says
    /// so (as the hosts do once they reach its end).
    pub fn catch_up(&self, e: &Engine, now: u64) {
        for m in &self.keys {
            let _ = e.handle_control(now, m);
        }
        e.keys_topic_read();
        e.handle_timeout(now).unwrap();
    }
}

/// Delivers every control message to every other engine until all are quiet.
/// Returns the messages carried, for corpus generation.
pub fn pump(engines: &[&Engine], now: u64) -> Vec<Vec<u8>> {
    pump_tapped(engines, now, &mut |_, _| true)
}

/// Like `pump`, but `tap` sees each message first, with every engine, and
/// may inject others or drop it (by returning false).
pub fn pump_tapped(
    engines: &[&Engine],
    now: u64,
    tap: &mut dyn FnMut(&ControlMessage, &[&Engine]) -> bool,
) -> Vec<Vec<u8>> {
    let mut carried = Vec::new();
    for _ in 0..100 {
        let mut moved = false;
        for (i, from) in engines.iter().enumerate() {
            while let Some(msg) = from.poll_transmit() {
                moved = true;
                if !tap(&msg, engines) {
                    continue;
                }
                carried.push(msg.payload.clone());
                for (j, to) in engines.iter().enumerate() {
                    if i != j {
                        let _ = to.handle_control(now, &msg.payload);
                    }
                }
            }
        }
        for e in engines {
            e.handle_timeout(now).unwrap();
        }
        if !moved {
            return carried;
        }
    }
    panic!("control traffic did not settle");
}

/// Like `pump`, but each engine reads its own clock: `(engine, now)` pairs,
/// for parties whose clocks disagree.
pub fn pump_skewed(engines: &[(&Engine, u64)]) {
    for _ in 0..100 {
        let mut moved = false;
        for (i, (from, _)) in engines.iter().enumerate() {
            while let Some(msg) = from.poll_transmit() {
                moved = true;
                for (j, (to, now)) in engines.iter().enumerate() {
                    if i != j {
                        let _ = to.handle_control(*now, &msg.payload);
                    }
                }
            }
        }
        for (e, now) in engines {
            e.handle_timeout(*now).unwrap();
        }
        if !moved {
            return;
        }
    }
    panic!("control traffic did not settle");
}

/// Answers a Hello (classical or hybrid) as `as_id` with the static key
/// `key` and `payload` (a credential, or anything) in message 2, the way an
/// engine does: for a hybrid Hello, encapsulates to the initiator's ML-KEM
/// key (randomness from `seed`) and sets the secret as the pre-shared key.
/// Returns the responder's handshake state and the reply, or `None` when
/// the Hello does not read.
pub fn answer_hello_as(
    key: &[u8; 32],
    hello: &kafka_e2ee_core::exchange::wire::Envelope,
    as_id: kafka_e2ee_core::format::InstanceId,
    seed: [u8; 64],
    payload: &[u8],
) -> Option<(
    snow::HandshakeState,
    kafka_e2ee_core::exchange::wire::Envelope,
)> {
    use kafka_e2ee_core::exchange::hybrid;
    use kafka_e2ee_core::exchange::session::new_handshake;
    use kafka_e2ee_core::exchange::wire::{Body, Envelope};
    let (session, noise, is_hybrid) = match &hello.body {
        Body::Hello { session, noise } => (*session, noise, false),
        Body::HybridHello { session, noise } => (*session, noise, true),
        _ => return None,
    };
    let mut hs = new_handshake(
        false,
        is_hybrid,
        key,
        hello.from,
        as_id,
        zeroize::Zeroizing::new(seed),
    )
    .ok()?;
    let mut buf = vec![0u8; 8192];
    let n = hs.read_message(noise, &mut buf).ok()?;
    let mut out = Vec::new();
    if is_hybrid {
        let m = zeroize::Zeroizing::new(<[u8; 32]>::try_from(&seed[32..]).ok()?);
        let (ct, secret) = hybrid::encapsulate(&buf[..n], &m).ok()?;
        hs.set_psk(hybrid::PSK_LOCATION, &*secret).ok()?;
        out = ct;
    }
    out.extend_from_slice(payload);
    let n = hs.write_message(&out, &mut buf).ok()?;
    let noise = buf[..n].to_vec();
    let body = if is_hybrid {
        Body::HybridReply { session, noise }
    } else {
        Body::HelloReply { session, noise }
    };
    Some((
        hs,
        Envelope {
            from: as_id,
            to: hello.from,
            body,
        },
    ))
}

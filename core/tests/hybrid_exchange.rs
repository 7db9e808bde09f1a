//! The hybrid post-quantum key exchange (issue 17) between engines: on by
//! default, what it costs on the wire, interop with parties of the
//! previous version (represented by `e2ee.kex.hybrid=off`, whose wire is
//! the previous version's byte for byte:
//! `control_fuzz_corpus.rs::hybrid_off_is_the_previous_versions_wire`), `require`, an active
//! broker that tries to make two hybrid parties speak classical, and an
//! attacker who knows every X25519 secret of a session ("quantum
//! adversary": docs/PROTOCOL.md, section 6).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::{Arc, Mutex};

use common::{pump_tapped, World, T0};
use kafka_e2ee_core::exchange::hybrid::{self, HybridMode, Speaks};
use kafka_e2ee_core::exchange::session;
use kafka_e2ee_core::exchange::wire::{decode_batch, Body, Envelope, Inner};
use kafka_e2ee_core::format::{open_in_place, KeyBinding, RecordHeader, HEADER_LEN};
use kafka_e2ee_core::{Channel, ControlMessage, Engine, EngineConfig, Opened};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};
use zeroize::Zeroizing;

fn config(mode: HybridMode) -> EngineConfig {
    EngineConfig {
        hybrid: mode,
        ..EngineConfig::default()
    }
}

fn seal(e: &Engine, plain: &[u8]) -> ([u8; HEADER_LEN], Vec<u8>) {
    let mut v = plain.to_vec();
    let h = e.seal("orders", KeyBinding::Bytes(b"k"), &mut v).unwrap();
    (h, v)
}

fn opens(c: &Engine, h: &[u8; HEADER_LEN], ct: &[u8]) -> bool {
    let mut v = ct.to_vec();
    c.open("orders", Some(h), KeyBinding::Bytes(b"k"), &mut v)
        .is_ok_and(|o| o == Opened::Decrypted)
}

/// A producer and a consumer with the given modes, a record sealed, and
/// the consumer asking for its key. Keys-topic messages are dropped by the
/// runs below: the key must come over a live session.
fn setup(seed: u64, p: HybridMode, c: HybridMode) -> (Engine, Engine, [u8; HEADER_LEN], Vec<u8>) {
    let mut w = World::new(seed);
    let pi = w.identity("p", &["orders"], &[]);
    let ci = w.identity("c", &[], &["orders"]);
    let p = w.engine_with(config(p), pi, None, T0);
    let c = w.engine_with(config(c), ci, None, T0);
    let (h, ct) = seal(&p, b"the record");
    assert!(!opens(&c, &h, &ct));
    (p, c, h, ct)
}

/// Runs the pair from T0 in 500 ms steps until the consumer opens the
/// record or `limit_ms` passes; every control message goes through `tap`
/// (which may drop or rewrite it). Returns when it opened, if it did, and
/// every control message carried.
fn run(
    p: &Engine,
    c: &Engine,
    h: &[u8; HEADER_LEN],
    ct: &[u8],
    limit_ms: u64,
    tap: &mut dyn FnMut(&ControlMessage) -> Option<Vec<u8>>,
) -> (Option<u64>, Vec<Vec<u8>>) {
    let mut seen = Vec::new();
    let mut now = T0;
    while now <= T0 + limit_ms {
        c.handle_timeout(now).unwrap();
        p.handle_timeout(now).unwrap();
        pump_tapped(&[p, c], now, &mut |m, engines| {
            if m.channel == Channel::Keys {
                return false;
            }
            seen.push(m.payload.clone());
            match tap(m) {
                Some(bytes) if bytes == m.payload => true,
                Some(bytes) => {
                    // Rewritten: delivered instead of the original.
                    for e in engines {
                        let _ = e.handle_control(now, &bytes);
                    }
                    false
                }
                None => false,
            }
        });
        if opens(c, h, ct) {
            return (Some(now - T0), seen);
        }
        now += 500;
    }
    (None, seen)
}

fn kinds(seen: &[Vec<u8>]) -> Vec<u8> {
    seen.iter().map(|m| m[5]).collect()
}

fn pass(m: &ControlMessage) -> Option<Vec<u8>> {
    Some(m.payload.clone())
}

fn body_len(seen: &[Vec<u8>], kind: u8) -> usize {
    seen.iter().find(|m| m[5] == kind).unwrap().len()
}

#[test]
fn two_default_parties_speak_hybrid_and_pay_for_it_once_per_session() {
    let (p, c, h, ct) = setup(1, HybridMode::Prefer, HybridMode::Prefer);
    let (opened, seen) = run(&p, &c, &h, &ct, 0, &mut pass);
    assert_eq!(opened, Some(0), "the key arrives in the first round trip");
    let k = kinds(&seen);
    assert!(k.contains(&9) && k.contains(&10) && k.contains(&3));
    assert!(!k.contains(&1) && !k.contains(&2), "no classical handshake");
    for e in [&p, &c] {
        assert_eq!(e.metrics().sessions_hybrid, 1);
        assert_eq!(e.metrics().sessions_classical, 0);
    }
    let census = hybrid::census(seen.iter().map(Vec::as_slice));
    assert_eq!(census.get(&c.instance_id()), Some(&Speaks::Hybrid));
    assert_eq!(census.get(&p.instance_id()), Some(&Speaks::Hybrid));

    // The same exchange, classical: what the hybrid one adds, per message.
    let (p2, c2, h2, ct2) = setup(1, HybridMode::Off, HybridMode::Off);
    let (opened, classical) = run(&p2, &c2, &h2, &ct2, 0, &mut pass);
    assert_eq!(opened, Some(0));
    let hello = body_len(&seen, 9) - body_len(&classical, 1);
    let reply = body_len(&seen, 10) - body_len(&classical, 2);
    // Message 1: the ML-KEM key and a tag (psk patterns encrypt it);
    // message 2: the ciphertext. Message 3 and transport are unchanged.
    assert_eq!(hello, hybrid::EK_LEN + 16);
    assert_eq!(reply, hybrid::CT_LEN);
    assert_eq!(body_len(&seen, 3), body_len(&classical, 3));
    println!(
        "handshake bytes: hybrid hello {} reply {} finish {}; classical hello {} reply {} finish {}",
        body_len(&seen, 9),
        body_len(&seen, 10),
        body_len(&seen, 3),
        body_len(&classical, 1),
        body_len(&classical, 2),
        body_len(&classical, 3),
    );
}

#[test]
fn a_consumer_of_the_previous_version_gets_keys_from_a_hybrid_producer_at_once() {
    let (p, c, h, ct) = setup(2, HybridMode::Prefer, HybridMode::Off);
    let (opened, seen) = run(&p, &c, &h, &ct, 0, &mut pass);
    assert_eq!(opened, Some(0));
    // The previous version's Hello: kind 1, message 1 is the 32-byte
    // ephemeral key alone (route 22, session 8).
    assert_eq!(body_len(&seen, 1), 22 + 8 + 32);
    assert!(!kinds(&seen).contains(&9));
    assert_eq!(p.metrics().sessions_classical, 1);
    let census = hybrid::census(seen.iter().map(Vec::as_slice));
    assert_eq!(census.get(&c.instance_id()), Some(&Speaks::ClassicalOnly));
}

#[test]
fn a_hybrid_consumer_gets_keys_from_a_producer_of_the_previous_version_within_seconds() {
    let (p, c, h, ct) = setup(3, HybridMode::Off, HybridMode::Prefer);
    let (opened, seen) = run(&p, &c, &h, &ct, 60_000, &mut pass);
    let at = opened.expect("the key arrives classically");
    // The hybrid Hello is rejected as an unknown kind. The producer answers
    // the consumer's Want with a Have, so it reads the control topic: when
    // the (re-sent) hybrid Hello times out unanswered, the next Hello is
    // classical and says it could do hybrid. About one handshake timeout,
    // well within the default key wait (30 s).
    let timeout = EngineConfig::default().handshake_timeout_ms;
    assert!(at <= timeout + 5_000, "opened after {at} ms");
    println!("key arrival, hybrid consumer and previous-version producer: {at} ms");
    assert!(kinds(&seen).contains(&9));
    assert_eq!(c.metrics().sessions_classical, 1);
    assert!(p.metrics().control_rejected >= 1);
    let census = hybrid::census(seen.iter().map(Vec::as_slice));
    assert_eq!(census.get(&c.instance_id()), Some(&Speaks::Hybrid));
    assert_eq!(census.get(&p.instance_id()), Some(&Speaks::ClassicalOnly));
}

#[test]
fn require_never_speaks_classical() {
    // A consumer that requires hybrid never calls classically...
    let (p, c, h, ct) = setup(4, HybridMode::Off, HybridMode::Require);
    let (opened, seen) = run(&p, &c, &h, &ct, 60_000, &mut pass);
    assert_eq!(opened, None);
    assert!(!kinds(&seen).contains(&1));
    // ... and a producer that requires it answers no classical Hello.
    let (p, c, h, ct) = setup(5, HybridMode::Require, HybridMode::Off);
    let (opened, seen) = run(&p, &c, &h, &ct, 60_000, &mut pass);
    assert_eq!(opened, None);
    assert!(!kinds(&seen).contains(&2));
    assert_eq!(p.metrics().sessions_classical, 0);
}

#[test]
fn an_active_broker_cannot_make_two_hybrid_parties_speak_classical() {
    // It drops every hybrid Hello: the consumer falls back to a classical
    // Hello that says it can do hybrid, and the producer refuses it (and
    // hints "hybrid", which the broker may pass or drop: either way).
    for pass_hints in [true, false] {
        let (p, c, h, ct) = setup(6, HybridMode::Prefer, HybridMode::Prefer);
        let (opened, seen) = run(&p, &c, &h, &ct, 120_000, &mut |m| match m.payload[5] {
            9 => None,
            11 if !pass_hints => None,
            _ => Some(m.payload.clone()),
        });
        assert_eq!(opened, None, "no key over a session the broker chose");
        let k = kinds(&seen);
        assert!(k.contains(&1), "the consumer tried classically");
        assert!(!k.contains(&2), "the producer never answered classically");
        assert_eq!(k.contains(&11), pass_hints || k.contains(&11));
        for e in [&p, &c] {
            assert_eq!(e.metrics().sessions_classical, 0);
            assert_eq!(e.metrics().sessions_hybrid, 0);
        }
    }
    // It also strips the "I can do hybrid" payload from the fallback Hello
    // (message 1 is the ephemeral key and the payload in the clear): the
    // producer answers, but the payload was in the transcript, so the
    // consumer rejects the reply, and no session forms.
    let (p, c, h, ct) = setup(7, HybridMode::Prefer, HybridMode::Prefer);
    let mut stripped = 0;
    let (opened, seen) = run(&p, &c, &h, &ct, 120_000, &mut |m| match m.payload[5] {
        9 => None,
        1 => {
            stripped += 1;
            Some(m.payload[..22 + 8 + 32].to_vec())
        }
        _ => Some(m.payload.clone()),
    });
    assert_eq!(opened, None);
    assert!(stripped > 0);
    assert!(
        kinds(&seen).contains(&2),
        "the producer answered the stripped Hello"
    );
    for e in [&p, &c] {
        assert_eq!(e.metrics().sessions_classical, 0);
    }
    assert!(
        c.metrics().control_rejected >= 1,
        "the consumer rejected the reply"
    );
}

/// An RNG that records what it hands out: the test's stand-in for a
/// quantum computer is to read the X25519 private keys off it.
struct Recording {
    inner: ChaCha20Rng,
    drawn: Arc<Mutex<Vec<u8>>>,
}

impl RngCore for Recording {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest);
        self.drawn.lock().unwrap().extend_from_slice(dest);
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Recording {}

/// What an attacker who knows every X25519 private key of a session (both
/// static keys, both ephemeral keys: what a quantum computer would compute
/// from the public ones the broker recorded) gets from the recorded
/// session: the topic keys it carried, if any. `real_kem`: the test also
/// hands it the consumer's ML-KEM key (a positive control: with it, the
/// attack must succeed, so that the hybrid case fails for that reason
/// alone).
fn attack(mode: HybridMode, real_kem: bool) -> (usize, usize) {
    let mut w = World::new(8);
    let pi = w.identity("p", &["orders"], &[]);
    let ci = w.identity("c", &[], &["orders"]);
    let c_static = ci.private_key_bytes();
    let p = w.engine_with(config(mode), pi, None, T0);
    let drawn = Arc::new(Mutex::new(Vec::new()));
    let rng = Recording {
        inner: ChaCha20Rng::seed_from_u64(9),
        drawn: drawn.clone(),
    };
    let c = Engine::new(config(mode), ci, w.trust.clone(), T0, Box::new(rng), None).unwrap();
    let (h, ct) = seal(&p, b"the record");
    assert!(!opens(&c, &h, &ct));
    let (opened, seen) = run(&p, &c, &h, &ct, 0, &mut pass);
    assert_eq!(opened, Some(0));
    let envs: Vec<Envelope> = seen.iter().map(|m| Envelope::decode(m).unwrap()).collect();
    let hybrid = mode != HybridMode::Off;

    // Message 1, and the consumer's ephemeral private key: the window of
    // its randomness whose X25519 public key is message 1's first 32 bytes.
    let (hello, noise1) = envs
        .iter()
        .find_map(|e| match &e.body {
            Body::Hello { noise, .. } | Body::HybridHello { noise, .. } => Some((e, noise)),
            _ => None,
        })
        .unwrap();
    let drawn = drawn.lock().unwrap().clone();
    let at = (0..drawn.len() - 32)
        .find(|&i| {
            let k: [u8; 32] = drawn[i..i + 32].try_into().unwrap();
            x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(k)).as_bytes()
                == &noise1[..32]
        })
        .expect("the consumer's ephemeral key");
    let mut seed = Zeroizing::new([0u8; 64]);
    seed[..32].copy_from_slice(&drawn[at..at + 32]);
    // Only the X25519 scalar: the rest of the handshake seed, from which
    // the ML-KEM key is derived, is not the attacker's.
    let mut me =
        session::new_handshake(true, hybrid, &c_static, hello.from, hello.to, seed).unwrap();
    // Message 1's payload (the ML-KEM public key) is public: anyone reads it.
    let mut reader = session::new_handshake(
        false,
        hybrid,
        &[1; 32],
        hello.from,
        hello.to,
        Zeroizing::new([2; 64]),
    )
    .unwrap();
    let mut buf = vec![0u8; 65535];
    let n = reader.read_message(noise1, &mut buf).unwrap();
    let payload1 = buf[..n].to_vec();
    let n = me.write_message(&payload1, &mut buf).unwrap();
    assert_eq!(
        &buf[..n],
        &noise1[..],
        "the attacker replays message 1 exactly"
    );
    // Message 2 decrypts with the X25519 secrets alone (ee, es).
    let noise2 = envs
        .iter()
        .find_map(|e| match &e.body {
            Body::HelloReply { noise, .. } | Body::HybridReply { noise, .. } => Some(noise),
            _ => None,
        })
        .unwrap();
    let n = me.read_message(noise2, &mut buf).unwrap();
    if hybrid {
        let kem_ct = buf[..hybrid::CT_LEN].to_vec();
        let secret = if real_kem {
            let full: [u8; 64] = drawn[at..at + 64].try_into().unwrap();
            hybrid::KemKey::from_handshake_seed(&full)
                .decapsulate(&kem_ct)
                .unwrap()
        } else {
            // Its best guess without the ML-KEM private key.
            Zeroizing::new([0u8; 32])
        };
        me.set_psk(hybrid::PSK_LOCATION, &*secret).unwrap();
    }
    let _ = n;
    me.write_message(&[], &mut buf).unwrap();
    let transport = me.into_stateless_transport_mode().unwrap();
    // Every transport message the producer sent: try to open, and use the
    // topic keys found on the record.
    let (mut opened_msgs, mut keys_that_open) = (0, 0);
    let key_id = RecordHeader::decode(&h).unwrap().key_id;
    for e in &envs {
        let Body::Sealed { nonce, noise, .. } = &e.body else {
            continue;
        };
        if e.from != hello.to {
            continue;
        }
        let Ok(n) = transport.read_message(*nonce, noise, &mut buf) else {
            continue;
        };
        opened_msgs += 1;
        for item in decode_batch(&buf[..n]).unwrap() {
            if let Inner::KeyDelivery(d) = item {
                let mut v = ct.clone();
                let header = RecordHeader::decode(&h).unwrap();
                if d.key_id == key_id
                    && open_in_place(&d.key, &header, "orders", KeyBinding::Bytes(b"k"), &mut v)
                        .is_ok()
                {
                    assert_eq!(v, b"the record");
                    keys_that_open += 1;
                }
            }
        }
    }
    (opened_msgs, keys_that_open)
}

#[test]
fn every_x25519_secret_of_a_hybrid_session_reveals_no_topic_key() {
    // Classical: the attacker reads the session and opens the record.
    let (msgs, keys) = attack(HybridMode::Off, false);
    assert!(
        msgs >= 1 && keys >= 1,
        "classical: {msgs} messages, {keys} keys"
    );
    // Hybrid: nothing opens without the ML-KEM secret...
    assert_eq!(attack(HybridMode::Prefer, false), (0, 0));
    // ... and everything does with it: nothing else was missing.
    let (msgs, keys) = attack(HybridMode::Prefer, true);
    assert!(
        msgs >= 1 && keys >= 1,
        "control: {msgs} messages, {keys} keys"
    );
}

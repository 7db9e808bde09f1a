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
use kafka_e2ee_core::exchange::mailbox::{self, Prekeys, SealedEnvelope};
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

// ---- envelopes: keys that outlive their producers (section 5d) -------------

/// The keys topic as a broker keeps it, and the engines that read it.
/// `keep` decides which messages the broker keeps (an active broker may
/// serve a filtered keys topic).
fn keys_round(engines: &[&Engine], now: u64, log: &mut Vec<Vec<u8>>, keep: &dyn Fn(&[u8]) -> bool) {
    for _ in 0..50 {
        for e in engines {
            e.handle_timeout(now).unwrap();
        }
        let mut moved = false;
        for (i, from) in engines.iter().enumerate() {
            while let Some(m) = from.poll_transmit() {
                moved = true;
                if m.channel != Channel::Keys || !keep(&m.payload) {
                    continue; // live sessions are not what these tests are about
                }
                log.push(m.payload.clone());
                for (j, to) in engines.iter().enumerate() {
                    if i != j {
                        let _ = to.handle_control(now, &m.payload);
                    }
                }
            }
        }
        if !moved {
            return;
        }
    }
    panic!("keys traffic did not settle");
}

/// A consumer with `c_mode` publishes its prekeys and exits; a producer
/// with `p_mode` starts later, reads the keys topic, seals a record and
/// exits; the consumer returns on its state and reads the keys topic.
/// Returns whether the record opened, and the keys topic.
fn offline(
    seed: u64,
    p_mode: HybridMode,
    c_mode: HybridMode,
    keep: &dyn Fn(&[u8]) -> bool,
) -> (bool, Vec<Vec<u8>>) {
    let mut w = World::new(seed);
    let ci = w.identity("c", &[], &["orders"]);
    let c_file = ci.to_file_bytes();
    let state = common::MemStorage::default();
    let mut log = Vec::new();
    let c = w.engine_with(config(c_mode), ci, Some(state.clone()), T0);
    keys_round(&[&c], T0, &mut log, keep);
    drop(c);
    let t1 = T0 + 60_000;
    let pi = w.identity("p", &["orders"], &[]);
    let p = w.engine_with(config(p_mode), pi, None, t1);
    for m in log.clone() {
        let _ = p.handle_control(t1, &m);
    }
    let (h, ct) = seal(&p, b"the record");
    keys_round(&[&p], t1, &mut log, keep);
    drop(p);
    let t2 = t1 + 5_000;
    let ci = kafka_e2ee_core::trust::Identity::from_file_bytes(&c_file).unwrap();
    let c = w.engine_with(config(c_mode), ci, Some(state), t2);
    for m in &log {
        let _ = c.handle_control(t2, m);
    }
    (opens(&c, &h, &ct), log)
}

fn count(log: &[Vec<u8>], kind: u8) -> usize {
    log.iter().filter(|m| m[5] == kind).count()
}

fn everything(_: &[u8]) -> bool {
    true
}

#[test]
fn two_default_parties_seal_hybrid_envelopes_only_and_the_record_opens_later() {
    let (opened, log) = offline(20, HybridMode::Prefer, HybridMode::Prefer, &everything);
    assert!(opened);
    // The mailbox publishes both records (the classical one for producers
    // of the previous version); the producer seals hybrid only.
    assert_eq!(count(&log, mailbox::KIND_PREKEYS), 1);
    assert_eq!(count(&log, mailbox::KIND_PREKEYS_HYBRID), 1);
    assert_eq!(count(&log, mailbox::KIND_ENVELOPE), 0);
    assert!(count(&log, mailbox::KIND_ENVELOPE_HYBRID) >= 1);
    let len = |kind: u8| log.iter().find(|m| m[5] == kind).unwrap().len();
    let (_, classical) = offline(20, HybridMode::Off, HybridMode::Off, &everything);
    let clen = |kind: u8| classical.iter().find(|m| m[5] == kind).unwrap().len();
    // What hybrid adds: the ML-KEM ciphertext per envelope; the ML-KEM keys
    // of the spans the record covers (170 hours: 8 or 9 keys) per record.
    assert_eq!(
        len(mailbox::KIND_ENVELOPE_HYBRID) - clen(mailbox::KIND_ENVELOPE),
        hybrid::CT_LEN
    );
    let record = Prekeys::decode(log.iter().find(|m| m[5] == 12).unwrap()).unwrap();
    let spans = record.kem.as_ref().unwrap().keys.len();
    assert!((8..=9).contains(&spans), "{spans} ML-KEM keys");
    assert_eq!(
        len(mailbox::KIND_PREKEYS_HYBRID) - clen(mailbox::KIND_PREKEYS),
        10 + spans * hybrid::EK_LEN
    );
    println!(
        "keys topic bytes: hybrid envelope {} (classical {}), hybrid prekeys record {} (classical {})",
        len(mailbox::KIND_ENVELOPE_HYBRID),
        clen(mailbox::KIND_ENVELOPE),
        len(mailbox::KIND_PREKEYS_HYBRID),
        clen(mailbox::KIND_PREKEYS),
    );
}

#[test]
fn envelopes_between_versions_are_classical_and_require_refuses_them() {
    // A producer of the previous version reads the classical record of a
    // hybrid mailbox; a hybrid producer seals classically to a mailbox of
    // the previous version.
    for (p, c) in [
        (HybridMode::Off, HybridMode::Prefer),
        (HybridMode::Prefer, HybridMode::Off),
    ] {
        let (opened, log) = offline(21, p, c, &everything);
        assert!(opened, "producer {p:?}, consumer {c:?}");
        assert!(count(&log, mailbox::KIND_ENVELOPE) >= 1);
        assert_eq!(count(&log, mailbox::KIND_ENVELOPE_HYBRID), 0);
    }
    // `require` on either side: no classical envelope, so no key from a
    // party of the previous version by this path.
    for (p, c) in [
        (HybridMode::Off, HybridMode::Require),
        (HybridMode::Require, HybridMode::Off),
    ] {
        let (opened, log) = offline(22, p, c, &everything);
        assert!(!opened, "producer {p:?}, consumer {c:?}");
        assert_eq!(count(&log, mailbox::KIND_ENVELOPE), 0);
    }
    // A `require` mailbox publishes the hybrid record only, and opens
    // hybrid envelopes.
    let (opened, log) = offline(23, HybridMode::Prefer, HybridMode::Require, &everything);
    assert!(opened);
    assert_eq!(count(&log, mailbox::KIND_PREKEYS), 0);
    assert_eq!(count(&log, mailbox::KIND_PREKEYS_HYBRID), 1);
}

#[test]
fn a_broker_cannot_make_a_hybrid_producer_seal_classically_to_a_mailbox_it_saw_hybrid() {
    // The broker serves the hybrid record first, then only a newer
    // classical one: the producer keeps sealing hybrid.
    let mut w = World::new(24);
    let ci = w.identity("c", &[], &["orders"]);
    let pi = w.identity("p", &["orders"], &[]);
    let c = w.engine_with(config(HybridMode::Prefer), ci, None, T0);
    let p = w.engine_with(config(HybridMode::Prefer), pi, None, T0);
    let mut log = Vec::new();
    keys_round(&[&c], T0, &mut log, &everything);
    let hybrid_record = log.iter().find(|m| m[5] == 12).unwrap().clone();
    p.handle_control(T0, &hybrid_record).unwrap();
    // An hour later the mailbox publishes again; the broker drops the
    // hybrid record and serves the classical one.
    let t1 = T0 + 3_600_000;
    let mut later = Vec::new();
    keys_round(&[&c], t1, &mut later, &everything);
    let classical = later.iter().find(|m| m[5] == 7).unwrap();
    p.handle_control(t1, classical).unwrap();
    let _ = seal(&p, b"x");
    let mut sealed = Vec::new();
    keys_round(&[&p], t1, &mut sealed, &everything);
    assert!(count(&sealed, mailbox::KIND_ENVELOPE_HYBRID) >= 1);
    assert_eq!(count(&sealed, mailbox::KIND_ENVELOPE), 0);
    // A broker that hides every hybrid record from the start can get
    // classical envelopes out of `prefer` (the mailbox may belong to the
    // previous version): `require` is what closes that (documented).
    let (opened, log) = offline(25, HybridMode::Prefer, HybridMode::Prefer, &|m| m[5] != 12);
    assert!(opened);
    assert!(count(&log, mailbox::KIND_ENVELOPE) >= 1);
    let (opened, _) = offline(25, HybridMode::Require, HybridMode::Prefer, &|m| m[5] != 12);
    assert!(!opened);
    // Stripping the ML-KEM part off a hybrid envelope (kind 13 made kind 8
    // without the ciphertext) is not an envelope the mailbox opens.
    let (_, log) = offline(26, HybridMode::Prefer, HybridMode::Prefer, &everything);
    let env = log.iter().find(|m| m[5] == 13).unwrap();
    let mut stripped = env[..50].to_vec();
    stripped[5] = mailbox::KIND_ENVELOPE;
    stripped.extend_from_slice(&env[50 + hybrid::CT_LEN..]);
    assert!(SealedEnvelope::decode(&stripped).is_ok());
    let c2 = w.identity("c2", &[], &["orders"]);
    let c = w.engine_with(config(HybridMode::Prefer), c2, None, T0);
    let before = c.metrics().keys_received;
    let _ = c.handle_control(T0, &stripped);
    assert_eq!(c.metrics().keys_received, before);
}

#[test]
fn a_restarted_producer_remembers_which_mailboxes_spoke_hybrid() {
    // The producer saw the mailbox's hybrid record, then restarts on its
    // state directory; the broker now serves only the classical record: no
    // classical envelope. Without the state directory it would (the
    // documented limit of `prefer`), which the last part checks.
    let mut w = World::new(29);
    let ci = w.identity("c", &[], &["orders"]);
    let pi = w.identity("p", &["orders"], &[]);
    let p_file = pi.to_file_bytes();
    let state = common::MemStorage::default();
    let c = w.engine_with(config(HybridMode::Prefer), ci, None, T0);
    let p = w.engine_with(config(HybridMode::Prefer), pi, Some(state.clone()), T0);
    let mut log = Vec::new();
    keys_round(&[&c], T0, &mut log, &everything);
    p.handle_control(T0, log.iter().find(|m| m[5] == 12).unwrap())
        .unwrap();
    p.handle_timeout(T0).unwrap(); // persists the mark
    drop(p);
    let classical = log.iter().find(|m| m[5] == 7).unwrap().clone();
    let mut restarted = |storage: Option<common::MemStorage>| {
        let pi = kafka_e2ee_core::trust::Identity::from_file_bytes(&p_file).unwrap();
        let p = w.engine_with(config(HybridMode::Prefer), pi, storage, T0 + 1_000);
        let _ = p.handle_control(T0 + 1_000, &classical);
        let _ = seal(&p, b"x");
        let mut sealed = Vec::new();
        keys_round(&[&p], T0 + 1_000, &mut sealed, &everything);
        (count(&sealed, mailbox::KIND_ENVELOPE), p)
    };
    let (classical_envelopes, p) = restarted(Some(state));
    assert_eq!(classical_envelopes, 0, "the mark survived the restart");
    // The hybrid record comes back: sealed hybrid again.
    p.handle_control(T0 + 1_000, log.iter().find(|m| m[5] == 12).unwrap())
        .unwrap();
    let _ = seal(&p, b"y");
    let mut sealed = Vec::new();
    keys_round(&[&p], T0 + 1_000, &mut sealed, &everything);
    assert!(count(&sealed, mailbox::KIND_ENVELOPE_HYBRID) >= 1);
    drop(p);
    let (classical_envelopes, _) = restarted(None);
    assert!(
        classical_envelopes >= 1,
        "without state, prefer seals classically"
    );
}

/// The quantum adversary against envelopes: it knows the recipient's
/// X25519 prekey private key of the period (what a quantum computer would
/// compute from the public key in the prekeys record) and reads the
/// recorded envelope. Returns how many topic keys that open the record it
/// gets; `real_kem`: it is also handed the mailbox's ML-KEM private key
/// (the positive control).
fn envelope_attack(mode: HybridMode, real_kem: bool) -> usize {
    use hkdf::Hkdf;
    use sha2::Sha256;
    let mut w = World::new(27);
    let ci = w.identity("c", &[], &["orders"]);
    let drawn = Arc::new(Mutex::new(Vec::new()));
    let rng = Recording {
        inner: ChaCha20Rng::seed_from_u64(28),
        drawn: drawn.clone(),
    };
    let c = Engine::new(config(mode), ci, w.trust.clone(), T0, Box::new(rng), None).unwrap();
    let pi = w.identity("p", &["orders"], &[]);
    let p = w.engine_with(config(mode), pi, None, T0);
    let mut log = Vec::new();
    keys_round(&[&c, &p], T0, &mut log, &everything);
    let (h, ct) = seal(&p, b"the record");
    keys_round(&[&c, &p], T0, &mut log, &everything);
    assert!(opens(&c, &h, &ct), "the mailbox itself opens it");
    let env_kind = if mode == HybridMode::Off { 8 } else { 13 };
    let env = SealedEnvelope::decode(log.iter().find(|m| m[5] == env_kind).unwrap()).unwrap();
    let record = Prekeys::decode(log.iter().find(|m| m[5] == 7).unwrap()).unwrap();
    // The X25519 prekey of the envelope's period, found among the
    // consumer's random draws (the chain seed) as a quantum computer would
    // find it from the public key.
    let hk32 = |ikm: &[u8], info: &[u8]| {
        let mut out = [0u8; 32];
        Hkdf::<Sha256>::new(None, ikm)
            .expand(info, &mut out)
            .unwrap();
        out
    };
    let drawn = drawn.lock().unwrap().clone();
    let target = record.key_for(env.period).unwrap();
    let prekey = (0..drawn.len() - 32)
        .find_map(|i| {
            let k = hk32(&drawn[i..i + 32], b"kafka-e2ee/v2/prekey");
            (x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(k)).to_bytes()
                == target)
                .then_some(k)
        })
        .expect("the prekey's chain seed");
    let psk = env.kem_ct.as_ref().map(|kem_ct| {
        if !real_kem {
            return Zeroizing::new([0u8; 32]); // its best guess
        }
        let hybrid_record = Prekeys::decode(log.iter().find(|m| m[5] == 12).unwrap()).unwrap();
        let ek = hybrid_record.kem_key_for(env.period).unwrap();
        let key = (0..drawn.len() - 32)
            .find_map(|i| {
                let mut d_z = [0u8; 64];
                Hkdf::<Sha256>::new(None, &drawn[i..i + 32])
                    .expand(b"kafka-e2ee/v3/kem-prekey", &mut d_z)
                    .unwrap();
                let k = hybrid::KemKey::from_seed(&d_z);
                (k.public() == ek).then_some(k)
            })
            .expect("the ML-KEM chain seed");
        key.decapsulate(kem_ct).unwrap()
    });
    let Ok(mut hs) = session::one_way(
        false,
        &prekey,
        None,
        &env.prologue(),
        Zeroizing::new([3; 64]),
        psk.as_deref(),
    ) else {
        return 0;
    };
    let mut buf = vec![0u8; 65535];
    let Ok(n) = hs.read_message(&env.noise, &mut buf) else {
        return 0;
    };
    let payload = mailbox::decode_payload(&buf[..n]).unwrap();
    let header = RecordHeader::decode(&h).unwrap();
    payload
        .items
        .iter()
        .filter(|item| {
            let mut v = ct.clone();
            open_in_place(
                &item.key,
                &header,
                "orders",
                KeyBinding::Bytes(b"k"),
                &mut v,
            )
            .is_ok()
                && v == b"the record"
        })
        .count()
}

#[test]
fn the_x25519_prekey_of_a_hybrid_envelope_reveals_no_topic_key() {
    // Classical envelope: the prekey alone opens it.
    assert_eq!(envelope_attack(HybridMode::Off, false), 1);
    // Hybrid: not without the ML-KEM private key...
    assert_eq!(envelope_attack(HybridMode::Prefer, false), 0);
    // ... and with it, yes: nothing else was missing.
    assert_eq!(envelope_attack(HybridMode::Prefer, true), 1);
}

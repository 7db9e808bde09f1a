//! What a writer of the control topic, or of a protected topic, can do to
//! the key exchange without any key: inject records under made-up producer
//! ids for hours, answer every Hello with garbage, send a Want that every
//! holder would answer; and what an expired producer can still do. Each test
//! states the bound it holds the engine to.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{pump_tapped, World, T0};
use kafka_e2ee_core::exchange::wire::{Body, Envelope};
use kafka_e2ee_core::format::{InstanceId, KeyBinding, KeyId, RecordHeader, HEADER_LEN};
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::trust::{Identity, TopicPattern};
use kafka_e2ee_core::{Channel, Engine, EngineConfig, Error, KeyUnavailable, Opened};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};

const HOUR: u64 = 3_600_000;

fn seal(e: &Engine, topic: &str, plain: &[u8]) -> ([u8; HEADER_LEN], Vec<u8>) {
    let mut v = plain.to_vec();
    let h = e.seal(topic, KeyBinding::Bytes(b"k"), &mut v).unwrap();
    (h, v)
}

/// Tries to open `ct` (sealed under header `h`) with its header's key id
/// replaced by `key_id`: what a consumer meets in a record injected under a
/// made-up producer or epoch. It never opens; the consumer wants the key.
fn try_open_as(c: &Engine, h: &[u8; HEADER_LEN], ct: &[u8], key_id: KeyId) {
    let mut header = RecordHeader::decode(h).unwrap();
    header.key_id = key_id;
    let mut v = ct.to_vec();
    assert!(c
        .open(
            "orders",
            Some(&header.encode()),
            KeyBinding::Bytes(b"k"),
            &mut v
        )
        .is_err());
}

fn keys_topic_dropped(m: &kafka_e2ee_core::ControlMessage) -> bool {
    m.channel != Channel::Keys
}

/// Item 1 of the hardening review: 300 records under made-up producer ids,
/// read in the first hour, once cost 27,000 Hellos in the third. Queued
/// requests now live only as long as the wants behind them, peers that never
/// answer are given up on, and everything is capped.
#[test]
fn made_up_producer_ids_stop_costing_within_the_want_ttl() {
    let mut w = World::new(41);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let cfg = EngineConfig::default();
    let (h, ct) = seal(&p, "orders", b"real record");
    let mut rng = ChaCha20Rng::seed_from_u64(9);

    let step = 4_000;
    let mut handshakes_at_hour = Vec::new();
    let mut peak = kafka_e2ee_core::StateSizes::default();
    let mut t = T0;
    while t < T0 + 3 * HOUR {
        if t < T0 + HOUR && (t - T0).is_multiple_of(12_000) {
            // One injected record every 12 s in the first hour: 300 ids.
            let mut id = [0u8; 8];
            rng.fill_bytes(&mut id);
            // The host asks while it waits (30 s), then gives up on it.
            try_open_as(
                &c,
                &h,
                &ct,
                KeyId {
                    producer: InstanceId(id),
                    epoch: 0,
                },
            );
            c.note_record_failed();
        }
        pump_tapped(&[&p, &c], t, &mut |_, _| true);
        let s = c.state_sizes();
        peak.queued_peers = peak.queued_peers.max(s.queued_peers);
        peak.wants = peak.wants.max(s.wants);
        peak.backoff = peak.backoff.max(s.backoff);
        if (t - T0).is_multiple_of(HOUR) {
            handshakes_at_hour.push(c.metrics().handshakes);
        }
        t += step;
    }
    handshakes_at_hour.push(c.metrics().handshakes);
    let per_hour: Vec<u64> = handshakes_at_hour.windows(2).map(|w| w[1] - w[0]).collect();
    let end = c.state_sizes();
    println!("hellos per hour {per_hour:?}; peak {peak:?}; end {end:?}");
    // The real record still opens.
    let mut v = ct.clone();
    assert_eq!(
        c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .unwrap(),
        Opened::Decrypted
    );
    // Hour 1: Hellos to peers never proven alive draw on a budget of 64
    // plus 360 an hour, however many ids are injected.
    assert!(per_hour[0] <= 64 + 360 + 4, "hour 1: {per_hour:?}");
    // Hour 3, two hours after the last injected record (wants live 10
    // minutes): only the honest producer's session refreshes remain.
    assert!(per_hour[2] <= 4, "hour 3: {per_hour:?}");
    assert!(cfg.want_ttl_ms < HOUR);
    assert!(end.queued_peers <= 1 && end.wants == 0, "{end:?}");
    assert!(end.backoff <= 1 && end.handshakes <= 1, "{end:?}");
    assert!(
        peak.queued_peers <= 4096 && peak.backoff <= 8192,
        "{peak:?}"
    );
}

/// Item 2: anyone who can write to the control topic answers every Hello
/// before the real peer does: once with 96 random bytes, once with a reply
/// that is valid Noise under a static key of its own (but no credential).
/// The consumer keeps its handshake and has its key in the same round trip.
#[test]
fn garbage_replies_do_not_kill_handshakes() {
    let mut w = World::new(42);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let (h, ct) = seal(&p, "orders", b"hello");
    let mut v = ct.clone();
    assert!(c
        .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .is_err());
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut garbage_sent = 0;
    let mut tap = |m: &kafka_e2ee_core::ControlMessage, engines: &[&Engine]| {
        if !keys_topic_dropped(m) {
            return false; // the key must come over a session, not by envelope
        }
        let env = Envelope::decode(&m.payload).unwrap();
        if let Body::Hello { session, .. } | Body::HybridHello { session, .. } = &env.body {
            let hybrid = matches!(env.body, Body::HybridHello { .. });
            let consumer = engines[1];
            // Random bytes of the length of a real reply of that kind.
            let mut junk = vec![0u8; if hybrid { 1300 } else { 96 }];
            rng.fill_bytes(&mut junk);
            let forged = |noise: Vec<u8>| {
                let session = *session;
                Envelope {
                    from: env.to,
                    to: env.from,
                    body: if hybrid {
                        Body::HybridReply { session, noise }
                    } else {
                        Body::HelloReply { session, noise }
                    },
                }
                .encode()
            };
            assert!(consumer.handle_control(T0, &forged(junk)).is_err());
            // A Noise-valid reply under the attacker's own static key.
            let mut key = [0u8; 32];
            rng.fill_bytes(&mut key);
            let (_, reply) =
                common::answer_hello_as(&key, &env, env.to, [3u8; 64], b"not a credential")
                    .unwrap();
            assert!(consumer.handle_control(T0, &reply.encode()).is_err());
            garbage_sent += 2;
        }
        true
    };
    c.handle_timeout(T0).unwrap();
    pump_tapped(&[&p, &c], T0, &mut tap);
    assert!(garbage_sent >= 2);
    assert_eq!(
        c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .unwrap(),
        Opened::Decrypted,
        "the key arrived in the first round trip despite the garbage"
    );
    assert_eq!(
        c.metrics().handshakes,
        1,
        "no handshake was lost and retried"
    );
}

/// Item 4: a producer whose credential expired seals nothing (with an error
/// that names the expiry), and a consumer whose clock runs behind takes no
/// key of an epoch that began after the producer's credential expired, even
/// over a session opened while it was valid.
#[test]
fn expired_producers_mint_nothing() {
    let mut w = World::new(43);
    let expires = T0 + 40 * 60_000;
    let pats = |t: &str| vec![TopicPattern::parse(t).unwrap()];
    let p = Identity::generate(
        "p",
        pats("orders"),
        Vec::new(),
        T0 - 60_000,
        expires,
        &w.authority,
        &mut w.rng,
    );
    let c = w.identity("c", &[], &["orders"]);
    let skew = 10 * 60_000; // the producer's clock runs 10 minutes ahead
    let p = w.engine_with(EngineConfig::default(), p, None, T0 + skew);
    let c = w.engine(c, None);
    let (h, ct) = seal(&p, "orders", b"before expiry");
    let mut v = ct.clone();
    assert!(c
        .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .is_err());
    let rotation = KeyPolicy::default().rotation_ms;
    let mut t = T0;
    while t <= T0 + 45 * 60_000 {
        common::pump_skewed(&[(&p, t + skew), (&c, t)]);
        t += 10_000;
    }
    assert_eq!(
        c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .unwrap(),
        Opened::Decrypted
    );
    // Epoch n started at T0 + skew + n * rotation on the producer's clock.
    let producer = RecordHeader::decode(&h).unwrap().key_id.producer;
    let mut held_after = Vec::new();
    for epoch in 0..6u32 {
        let started = T0 + skew + u64::from(epoch) * rotation;
        let held = c.holds_key(KeyId { producer, epoch }, "orders");
        if started >= expires && held {
            held_after.push(epoch);
        }
    }
    assert!(
        held_after.is_empty(),
        "keys of epochs begun after expiry were taken: {held_after:?}"
    );
    // And the producer refuses to seal, naming its credential's expiry.
    let mut v = b"after expiry".to_vec();
    let err = p
        .seal("orders", KeyBinding::Bytes(b"k"), &mut v)
        .unwrap_err();
    assert!(matches!(err, Error::Trust(_)), "{err}");
    assert!(
        err.to_string().contains(&format!("expired at {expires}")),
        "{err}"
    );
    assert_eq!(v, b"after expiry", "nothing was sealed");
    // Once the consumer's clock passes the expiry, the session ends too.
    common::pump_skewed(&[(&p, expires + skew + 1), (&c, expires + 1)]);
    assert_eq!(c.state_sizes().sessions, 0);
}

/// Item 7: one broadcast Want (here forged, from a made-up instance) reaches
/// every holder of the key. At most a few answer: the others see their
/// answers on the topic first and stay silent.
#[test]
fn one_want_draws_few_answers_across_holders() {
    let mut w = World::new(44);
    let p = w.identity("p", &["orders"], &[]);
    let p = w.engine(p, None);
    let (h, ct) = seal(&p, "orders", b"x");
    let key_id = RecordHeader::decode(&h).unwrap().key_id;
    let holders: Vec<Engine> = (0..12)
        .map(|i| {
            let id = w.identity(&format!("c{i}"), &[], &["orders"]);
            w.engine(id, None)
        })
        .collect();
    for c in &holders {
        let mut v = ct.clone();
        let _ = c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v);
        c.handle_timeout(T0).unwrap();
        common::pump(&[&p, c], T0);
        assert!(c.holds_key(key_id, "orders"));
    }
    let want = Envelope {
        from: InstanceId(*b"nobody!!"),
        to: kafka_e2ee_core::exchange::wire::BROADCAST,
        body: Body::Want {
            key_id,
            topic: "orders".into(),
        },
    }
    .encode();
    let refs: Vec<&Engine> = holders.iter().collect();
    for c in &refs {
        c.handle_control(T0 + 1, &want).unwrap();
    }
    let mut haves = 0;
    let mut t = T0 + 1;
    while t < T0 + 5_000 {
        pump_tapped(&refs, t, &mut |m, _| {
            if let Ok(Envelope {
                body: Body::Have { .. },
                ..
            }) = Envelope::decode(&m.payload)
            {
                haves += 1;
            }
            true
        });
        t += 50;
    }
    assert!(haves >= 1, "a holder answered");
    assert!(haves <= 3, "{haves} of 12 holders answered one Want");
}

/// Item 7: a session's first batch carries at most 255 items; requests
/// beyond that went nowhere until their retry. Now they follow at once.
#[test]
fn many_requests_to_one_producer_all_go_out_at_once() {
    let mut w = World::new(45);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let (h, ct) = seal(&p, "orders", b"x");
    let producer = RecordHeader::decode(&h).unwrap().key_id.producer;
    // 256 epochs the producer never made (as many as one peer's queue holds).
    for epoch in 1000..1256u32 {
        try_open_as(&c, &h, &ct, KeyId { producer, epoch });
    }
    c.handle_timeout(T0).unwrap();
    pump_tapped(&[&p, &c], T0, &mut |m, _| keys_topic_dropped(m));
    let pending: Vec<u32> = (1000..1256u32)
        .filter(|&epoch| {
            c.want_status(KeyId { producer, epoch }, "orders") == Some(KeyUnavailable::Pending)
        })
        .collect();
    assert!(
        pending.is_empty(),
        "{} requests got no answer in the first round trip",
        pending.len()
    );
}

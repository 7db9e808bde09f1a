//! Engine behaviour on a perfect channel: what hosts rely on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{pump, pump_skewed, MemStorage, World, T0};
use kafka_e2ee_core::format::{KeyBinding, RecordHeader, HEADER_LEN};
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::state;
use kafka_e2ee_core::{EngineConfig, Error, KeyUnavailable, Opened};

fn seal(e: &kafka_e2ee_core::Engine, topic: &str, plain: &[u8]) -> ([u8; HEADER_LEN], Vec<u8>) {
    let mut v = plain.to_vec();
    let h = e.seal(topic, KeyBinding::Bytes(b"k"), &mut v).unwrap();
    (h, v)
}

#[test]
fn consumer_gets_key_and_opens() {
    let mut w = World::new(1);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let (h, ct) = seal(&p, "orders", b"hello world");
    assert_ne!(ct, b"hello world");
    let mut v = ct.clone();
    let err = c
        .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap_err();
    assert!(matches!(
        err,
        Error::KeyUnavailable {
            reason: KeyUnavailable::Pending,
            ..
        }
    ));
    assert_eq!(v, ct, "a failed open must not change the value");
    c.handle_timeout(T0).unwrap();
    pump(&[&p, &c], T0);
    assert_eq!(
        c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .unwrap(),
        Opened::Decrypted
    );
    assert_eq!(v, b"hello world");
    // The key of the next epoch was pushed ahead of use: after rotation the
    // consumer opens at once, without asking again.
    let later = T0 + KeyPolicy::default().rotation_ms;
    p.handle_timeout(later).unwrap();
    let (h2, ct2) = seal(&p, "orders", b"next epoch");
    assert_ne!(
        RecordHeader::decode(&h2).unwrap().key_id,
        RecordHeader::decode(&h).unwrap().key_id
    );
    let mut v2 = ct2.clone();
    assert_eq!(
        c.open("orders", Some(&h2), KeyBinding::Bytes(b"k"), &mut v2)
            .unwrap(),
        Opened::Decrypted
    );
    assert_eq!(v2, b"next epoch");
}

#[test]
fn missing_header_on_protected_topic_is_rejected() {
    let mut w = World::new(2);
    let c = w.identity("c", &[], &["*"]);
    let c = w.engine(c, None);
    let mut v = b"injected plaintext".to_vec();
    assert!(matches!(
        c.open("orders", None, KeyBinding::Unbound, &mut v),
        Err(Error::MissingHeader { .. })
    ));
    assert_eq!(c.metrics().records_missing_header, 1);
    // An unprotected topic passes through.
    let mut w2 = World::new(3);
    let id = w2.identity("c", &[], &["*"]);
    let cfg = EngineConfig {
        protected_topics: vec![kafka_e2ee_core::trust::TopicPattern::parse("secure.*").unwrap()],
        ..EngineConfig::default()
    };
    let c2 = w2.engine_with(cfg, id, None, T0);
    assert_eq!(
        c2.open("public", None, KeyBinding::Unbound, &mut v)
            .unwrap(),
        Opened::Plaintext
    );
    assert!(matches!(
        c2.open("secure.x", None, KeyBinding::Unbound, &mut v),
        Err(Error::MissingHeader { .. })
    ));
}

#[test]
fn unauthorized_consumer_is_refused_and_cannot_seal() {
    let mut w = World::new(4);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["payments"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let (h, ct) = seal(&p, "orders", b"secret");
    let mut v = ct.clone();
    assert!(matches!(
        c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v),
        Err(Error::NotAuthorized { .. })
    ));
    assert!(matches!(
        c.seal("orders", KeyBinding::Unbound, &mut v),
        Err(Error::NotAuthorized { .. })
    ));
    pump(&[&p, &c], T0);
    assert_eq!(v, ct);
}

#[test]
fn unseal_reverses_only_this_instances_own_seal_and_counts_nothing() {
    let mut w = World::new(19);
    let p = w.identity("p", &["orders"], &["*"]);
    let c = w.identity("c", &[], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let (h, ct) = seal(&p, "orders", b"the delivery report's payload");
    let before = p.metrics();

    // Another instance, even one that may read the topic, cannot unseal:
    // unseal never fetches a key, so it is no way around asking for one.
    let mut v = ct.clone();
    assert!(c
        .unseal("orders", &h, KeyBinding::Bytes(b"k"), &mut v)
        .is_err());
    assert_eq!(v, ct);
    // Another topic, record key, or a flipped bit: refused, value unchanged.
    for (topic, key) in [("payments", &b"k"[..]), ("orders", b"x")] {
        assert!(p.unseal(topic, &h, KeyBinding::Bytes(key), &mut v).is_err());
        assert_eq!(v, ct);
    }
    let mut flipped = ct.clone();
    flipped[3] ^= 1;
    let tampered = flipped.clone();
    assert!(p
        .unseal("orders", &h, KeyBinding::Bytes(b"k"), &mut flipped)
        .is_err());
    assert_eq!(flipped, tampered);
    assert!(p
        .unseal("orders", &h[..10], KeyBinding::Bytes(b"k"), &mut v)
        .is_err());

    p.unseal("orders", &h, KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, b"the delivery report's payload");
    assert_eq!(p.metrics(), before, "unseal is not a record opened");
    let key_id = RecordHeader::decode(&h).unwrap().key_id;
    assert_eq!(
        c.want_status(key_id, "orders"),
        None,
        "unseal asked for a key"
    );
}

#[test]
fn tampering_fails_and_leaves_value_unchanged() {
    let mut w = World::new(5);
    let p = w.identity("p", &["*"], &["*"]);
    let p = w.engine(p, None);
    let (h, ct) = seal(&p, "orders", b"0123456789");
    for i in 0..ct.len() * 8 {
        let mut v = ct.clone();
        v[i / 8] ^= 1 << (i % 8);
        let before = v.clone();
        assert!(p
            .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .is_err());
        assert_eq!(v, before);
    }
    let mut v = ct.clone();
    assert!(
        p.open("payments", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .is_err(),
        "moved to another topic"
    );
    assert!(
        p.open("orders", Some(&h), KeyBinding::Bytes(b"other"), &mut v)
            .is_err(),
        "spliced onto another key"
    );
    assert!(p
        .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .is_ok());
    assert!(p.metrics().records_rejected >= 80);
}

#[test]
fn restarted_producer_serves_keys_from_its_state_directory() {
    let mut w = World::new(6);
    let storage = MemStorage::default();
    let p_id = w.identity("p", &["orders"], &[]);
    let p_secret_file = p_id.to_file_bytes();
    let p = w.engine(p_id, Some(storage.clone()));
    let (h, ct) = seal(&p, "orders", b"written before the crash");
    drop(p); // crash
    let p2 = w.engine(
        kafka_e2ee_core::trust::Identity::from_file_bytes(&p_secret_file).unwrap(),
        Some(storage.clone()),
    );
    let c = w.identity("c", &[], &["orders"]);
    let c = w.engine(c, None);
    let mut v = ct.clone();
    assert!(c
        .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .is_err());
    c.handle_timeout(T0).unwrap();
    pump(&[&p2, &c], T0);
    assert_eq!(
        c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .unwrap(),
        Opened::Decrypted
    );
    assert_eq!(v, b"written before the crash");
    // The restarted producer never seals under the old epoch again.
    let (h2, _) = seal(&p2, "orders", b"after");
    assert_ne!(
        RecordHeader::decode(&h2).unwrap().key_id.producer,
        RecordHeader::decode(&h).unwrap().key_id.producer
    );
    // The state as a state directory seals it (under a file key and the
    // credential) is useless to another credential; garbage is refused.
    let plain = storage.blob().unwrap();
    let file_key = state::new_file_key(&mut rand_core::OsRng);
    let mut keys = state::KeyFile::empty();
    keys.set(0, &file_key);
    let p_id = kafka_e2ee_core::trust::Identity::from_file_bytes(&p_secret_file)
        .unwrap()
        .state_key();
    let blob = state::seal(&p_id, &file_key, &plain, &mut rand_core::OsRng);
    assert!(state::open(&p_id, Some(&keys), &blob).is_ok());
    let other = w.identity("p", &["orders"], &[]);
    assert!(state::open(&other.state_key(), Some(&keys), &blob).is_err());
    let r = kafka_e2ee_core::Engine::new(
        EngineConfig::default(),
        other,
        w.trust.clone(),
        T0,
        Box::new(rand_core::OsRng),
        Some(Box::new({
            let mut garbage = MemStorage::default();
            kafka_e2ee_core::Storage::store(&mut garbage, b"garbage").unwrap();
            garbage
        })),
    );
    assert!(matches!(r, Err(Error::Storage(_))));
}

#[test]
fn a_holder_serves_when_the_producer_is_gone() {
    let mut w = World::new(7);
    let p = w.identity("p", &["orders"], &[]);
    let c1 = w.identity("c1", &[], &["orders"]);
    let c2 = w.identity("c2", &[], &["orders"]);
    let (p, c1, c2) = (w.engine(p, None), w.engine(c1, None), w.engine(c2, None));
    let (h, ct) = seal(&p, "orders", b"kept alive by holders");
    let mut v = ct.clone();
    let _ = c1.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v);
    c1.handle_timeout(T0).unwrap();
    pump(&[&p, &c1], T0);
    assert!(c1
        .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .is_ok());
    drop(p); // every producer gone
    let mut v = ct.clone();
    let _ = c2.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v);
    let mut now = T0;
    for _ in 0..20 {
        now += 1000;
        c1.handle_timeout(now).unwrap();
        c2.handle_timeout(now).unwrap();
        pump(&[&c1, &c2], now);
        if c2.holds_key(RecordHeader::decode(&h).unwrap().key_id, "orders") {
            break;
        }
    }
    assert_eq!(
        c2.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .unwrap(),
        Opened::Decrypted
    );
}

#[test]
fn retention_and_shred_delete_keys() {
    let mut w = World::new(8);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let (h, ct) = seal(&p, "orders", b"x");
    let key_id = RecordHeader::decode(&h).unwrap().key_id;
    let mut v = ct.clone();
    let _ = c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v);
    c.handle_timeout(T0).unwrap();
    pump(&[&p, &c], T0);
    assert!(c.holds_key(key_id, "orders"));
    // Shredding deletes early, on both sides.
    assert!(c.shred(T0 + 1).unwrap() >= 1);
    assert!(p.shred(T0 + 1).unwrap() >= 1);
    assert!(!c.holds_key(key_id, "orders") && !p.holds_key(key_id, "orders"));
    let mut v = ct.clone();
    let err = c
        .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap_err();
    assert!(matches!(err, Error::KeyUnavailable { .. }));
    c.handle_timeout(T0 + 10).unwrap();
    pump(&[&p, &c], T0 + 10);
    assert!(
        c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .is_err(),
        "shredded keys are gone everywhere"
    );
    assert!(matches!(
        c.want_status(key_id, "orders"),
        Some(KeyUnavailable::Expired | KeyUnavailable::Unknown)
    ));
}

#[test]
fn after_fork_the_child_never_reuses_the_parents_epoch() {
    let mut w = World::new(9);
    let id = w.identity("p", &["orders"], &[]);
    let mut e = w.engine(id, None);
    let (h1, _) = seal(&e, "orders", b"parent");
    e.after_fork(T0).unwrap();
    let (h2, _) = seal(&e, "orders", b"child");
    let (k1, k2) = (
        RecordHeader::decode(&h1).unwrap(),
        RecordHeader::decode(&h2).unwrap(),
    );
    assert_ne!(k1.key_id, k2.key_id);
    assert_ne!(k1.key_id.producer, k2.key_id.producer);
}

#[test]
fn rotation_by_record_count_never_repeats_a_counter() {
    let mut w = World::new(10);
    let id = w.identity("p", &["orders"], &[]);
    let cfg = EngineConfig {
        key: KeyPolicy {
            rotation_records: 10,
            ..KeyPolicy::default()
        },
        ..EngineConfig::default()
    };
    let e = w.engine_with(cfg, id, None, T0);
    let mut seen = std::collections::HashSet::new();
    let mut sealed = 0;
    for i in 0..200u64 {
        let mut v = vec![0u8; 8];
        match e.seal("orders", KeyBinding::Unbound, &mut v) {
            Ok(h) => {
                let h = RecordHeader::decode(&h).unwrap();
                assert!(seen.insert((h.key_id, h.counter)), "nonce reused");
                assert!(h.counter < 10);
                sealed += 1;
            }
            Err(Error::NoSealingKey) => e.handle_timeout(T0 + i).unwrap(),
            Err(other) => panic!("{other}"),
        }
    }
    assert!(sealed > 150);
}

#[test]
fn no_secret_in_debug_output() {
    let mut w = World::new(11);
    let id = w.identity("p", &["orders"], &[]);
    let secret_hex: String = id
        .private_key_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let e = w.engine(id, None);
    let dbg = format!("{e:?} {:?}", e.identity());
    assert!(!dbg.contains(&secret_hex));
    assert!(!dbg.contains(&format!("{:?}", &e.identity().private_key_bytes()[..8])));
}

proptest::proptest! {
    #[test]
    fn arbitrary_control_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let mut w = World::new(12);
        let id = w.identity("c", &["*"], &["*"]);
        let e = w.engine(id, None);
        let _ = e.handle_control(T0, &bytes);
        let mut framed = b"KE2X\x01".to_vec();
        framed.extend_from_slice(&bytes);
        let _ = e.handle_control(T0, &framed);
        e.handle_timeout(T0 + 1).unwrap();
    }
}

#[test]
fn many_threads_seal_with_unique_nonces_and_rotate_safely() {
    let mut w = World::new(13);
    let id = w.identity("p", &["orders"], &["orders"]);
    let cfg = EngineConfig {
        key: KeyPolicy {
            rotation_records: 1000,
            ..KeyPolicy::default()
        },
        ..EngineConfig::default()
    };
    let e = std::sync::Arc::new(w.engine_with(cfg, id, None, T0));
    // The host's background thread: ticks until the workers are done, so a
    // used-up epoch is always followed by a prepared one.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let (e, done) = (e.clone(), done.clone());
        std::thread::spawn(move || {
            let mut i = 0;
            while !done.load(std::sync::atomic::Ordering::Acquire) {
                e.handle_timeout(T0 + i).unwrap();
                i += 1;
                std::thread::yield_now();
            }
        })
    };
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let e = e.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                // A used-up epoch makes seal fail with NoSealingKey until the
                // ticker has moved on: the worker retries, as a host does, so
                // every record gets sealed however the threads are scheduled.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
                for i in 0..2000u32 {
                    let plain = format!("t{t}-{i}").into_bytes();
                    loop {
                        let mut v = plain.clone();
                        match e.seal("orders", KeyBinding::Unbound, &mut v) {
                            Ok(h) => {
                                out.push((h, v, plain));
                                break;
                            }
                            Err(Error::NoSealingKey) if std::time::Instant::now() < deadline => {
                                std::thread::yield_now()
                            }
                            Err(other) => panic!("{other}"),
                        }
                    }
                }
                out
            })
        })
        .collect();
    let sealed: Vec<_> = workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect();
    done.store(true, std::sync::atomic::Ordering::Release);
    ticker.join().unwrap();
    let mut nonces = std::collections::HashSet::new();
    for (h, ct, plain) in &sealed {
        let hd = RecordHeader::decode(h).unwrap();
        assert!(
            nonces.insert((hd.key_id, hd.counter)),
            "a nonce repeated across threads"
        );
        let mut v = ct.clone();
        e.open("orders", Some(h), KeyBinding::Unbound, &mut v)
            .unwrap();
        assert_eq!(&v, plain);
    }
    assert_eq!(sealed.len(), 8000, "every record sealed");
    assert!(
        e.metrics().rotations > 0
            || nonces
                .iter()
                .map(|(k, _)| k)
                .collect::<std::collections::HashSet<_>>()
                .len()
                > 1
    );
}

#[test]
fn the_producers_binding_flag_decides_how_a_record_opens() {
    let mut w = World::new(14);
    let id = w.identity("p", &["orders"], &["orders"]);
    let e = w.engine(id, None);
    // Sealed without the key: a hook that sees the key still opens it.
    let mut v = b"unbound".to_vec();
    let h = e.seal("orders", KeyBinding::Unbound, &mut v).unwrap();
    e.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, b"unbound");
    // Sealed with the key: a hook that cannot see keys fails, value unchanged.
    let mut v = b"bound".to_vec();
    let h = e.seal("orders", KeyBinding::Bytes(b"k"), &mut v).unwrap();
    let ct = v.clone();
    assert!(e
        .open("orders", Some(&h), KeyBinding::Unbound, &mut v)
        .is_err());
    assert_eq!(v, ct);
    assert!(e
        .open("orders", Some(&h), KeyBinding::Null, &mut v)
        .is_err());
    e.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, b"bound");
}

#[test]
fn aes_and_compressed_records_open_on_a_consumer_with_default_settings() {
    use kafka_e2ee_core::format::{Cipher, Compression, Sealing};
    let mut w = World::new(11);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let sealing = Sealing {
        cipher: Cipher::Aes256Gcm,
        compression: Compression::Zstd,
    };
    let config = EngineConfig {
        sealing,
        ..EngineConfig::default()
    };
    let (p, c) = (w.engine_with(config, p, None, T0), w.engine(c, None));
    let json: Vec<u8> = (0..40)
        .flat_map(|i| format!("{{\"order\":{i},\"status\":\"PAID\"}},").into_bytes())
        .collect();
    let (h, ct) = seal(&p, "orders", &json);
    let header = RecordHeader::decode(&h).unwrap();
    assert_eq!(header.cipher(), Cipher::Aes256Gcm);
    assert_eq!(header.compression(), Compression::Zstd);
    assert_eq!(ct.len(), json.len(), "the value keeps its length");
    let zeros = ct.iter().rev().take_while(|&&b| b == 0).count();
    assert!(zeros > json.len() / 2, "padding of {zeros} bytes");
    // Too short to shrink: sealed uncompressed, still with AES-256-GCM.
    let (h_short, ct_short) = seal(&p, "orders", b"x");
    let short = RecordHeader::decode(&h_short).unwrap();
    assert_eq!(
        (short.cipher(), short.compression()),
        (Cipher::Aes256Gcm, Compression::None)
    );

    let mut v = ct.clone();
    let _ = c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v);
    c.handle_timeout(T0).unwrap();
    pump(&[&p, &c], T0);
    c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, json);
    let mut v = ct_short;
    c.open("orders", Some(&h_short), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, b"x");
    // The padding is authenticated: one more zero byte and it fails, unchanged.
    let mut longer = ct.clone();
    longer.push(0);
    assert!(matches!(
        c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut longer),
        Err(Error::Format(_))
    ));
    assert_eq!(&longer[..ct.len()], &ct[..]);
}

#[test]
fn an_expiring_consumer_gets_no_key_of_an_epoch_that_starts_after_its_expiry() {
    use kafka_e2ee_core::trust::{Identity, TopicPattern};
    let mut w = World::new(9);
    let rotation = KeyPolicy::default().rotation_ms;
    let p = w.identity("p", &["orders"], &[]);
    // Expires half-way through the producer's third epoch (epoch 2).
    let expires = T0 + 2 * rotation + rotation / 2;
    let c = Identity::generate(
        "short",
        vec![],
        vec![TopicPattern::parse("orders").unwrap()],
        T0 - 60_000,
        expires,
        &w.authority,
        &mut w.rng,
    );
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let epoch_of = |h: &[u8; HEADER_LEN]| RecordHeader::decode(h).unwrap().key_id.epoch;
    let mut sealed = Vec::new();
    for step in 0..4 {
        let now = T0 + step * rotation;
        p.handle_timeout(now).unwrap();
        let (h, ct) = seal(&p, "orders", format!("record of epoch {step}").as_bytes());
        assert_eq!(u64::from(epoch_of(&h)), step);
        let mut v = ct.clone();
        // The consumer asks for what it lacks; the producer pushes ahead.
        let _ = c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v);
        c.handle_timeout(now).unwrap();
        pump(&[&p, &c], now);
        sealed.push((h, ct));
    }
    let opens = |(h, ct): &([u8; HEADER_LEN], Vec<u8>)| {
        let mut v = ct.clone();
        c.open("orders", Some(h), KeyBinding::Bytes(b"k"), &mut v)
            .is_ok()
    };
    // Epochs 0-2 started before the expiry: readable. Epoch 3 starts after
    // it: its key was not pushed ahead at the rotation before the expiry,
    // and is refused after it.
    assert!(opens(&sealed[0]) && opens(&sealed[1]) && opens(&sealed[2]));
    assert!(
        !opens(&sealed[3]),
        "an expired consumer holds a key of an epoch after its expiry"
    );
    assert!(p.metrics().keys_refused > 0);
}

/// Clocks skewed between parties (PROTOCOL.md, "Faults: control plane,
/// clocks, credentials"): a key is kept for the retention the producer's
/// policy leaves it, measured on the holder's own clock, whatever the
/// producer's clock reads. Here the producer's clock is right, one consumer
/// runs 5 minutes ahead (it must not drop the key as already deleted) and
/// one 5 minutes behind (it must not keep the key 5 minutes too long);
/// retention is shorter than the skew.
#[test]
fn keys_live_for_the_retention_on_each_holders_own_clock_whatever_the_skew() {
    let mut w = World::new(10);
    let (rotation, retention, skew) = (60_000, 120_000, 5 * 60_000);
    let config = EngineConfig {
        key: KeyPolicy {
            rotation_ms: rotation,
            retention_ms: retention,
            ..KeyPolicy::default()
        },
        ..EngineConfig::default()
    };
    let p = w.identity("p", &["orders"], &[]);
    let ahead = w.identity("ahead", &[], &["orders"]);
    let behind = w.identity("behind", &[], &["orders"]);
    let p = w.engine_with(config.clone(), p, None, T0);
    let ahead = w.engine_with(config.clone(), ahead, None, T0 + skew);
    let behind = w.engine_with(config, behind, None, T0 - skew);
    // `real` is the true time; each engine reads its own clock.
    let clocks = |real: u64| [(&p, real), (&ahead, real + skew), (&behind, real - skew)];
    let (h, ct) = seal(&p, "orders", b"skewed");
    let key_id = RecordHeader::decode(&h).unwrap().key_id;
    for (c, now) in &clocks(T0)[1..] {
        let mut v = ct.clone();
        let _ = c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v);
        c.handle_timeout(*now).unwrap();
    }
    pump_skewed(&clocks(T0));
    for (c, _) in &clocks(T0)[1..] {
        let mut v = ct.clone();
        assert_eq!(
            c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
                .unwrap(),
            Opened::Decrypted,
            "{c:?} did not keep the key"
        );
        assert_eq!(v, b"skewed");
    }
    // The epoch (never rotated: the producer is not ticked again) is to be
    // deleted a rotation plus the retention after it started, in true time.
    let deleted = T0 + rotation + retention;
    for (c, now) in &clocks(deleted - 1000)[1..] {
        c.handle_timeout(*now).unwrap();
        assert!(c.holds_key(key_id, "orders"), "{c:?} deleted the key early");
    }
    for (c, now) in &clocks(deleted + 1000)[1..] {
        c.handle_timeout(*now).unwrap();
        assert!(
            !c.holds_key(key_id, "orders"),
            "{c:?} kept the key past its retention"
        );
    }
}

/// A consumer asks for a producer's key while the producer does not yet
/// read the control topic (its control plane starts reading at the end a
/// moment after its first records are on the broker). Time runs as in a
/// host: 100 ms steps, a tick whenever `poll_timeout` says, and a steady
/// stream of other control messages. Returns when the record opened (ms).
fn first_open_after_lost_hello(deliver_wants: bool) -> u64 {
    let mut w = World::new(9);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let (h, ct) = seal(&p, "orders", b"hello world");
    let reads_from = T0 + 1_000;
    let mut now = T0;
    while now <= T0 + 30_000 {
        let mut v = ct.clone();
        if c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
            .is_ok()
        {
            assert_eq!(v, b"hello world");
            return now - T0;
        }
        // Other traffic on the control topic (another pair's messages).
        let _ = c.handle_control(now, b"KE2X\x01 not for us");
        for e in [&c, &p] {
            if now >= e.poll_timeout() {
                e.handle_timeout(now).unwrap();
            }
        }
        for _ in 0..4 {
            while let Some(m) = c.poll_transmit() {
                if now >= reads_from && (deliver_wants || m.to.is_some()) {
                    let _ = p.handle_control(now, &m.payload);
                }
            }
            while let Some(m) = p.poll_transmit() {
                let _ = c.handle_control(now, &m.payload);
            }
        }
        now += 100;
    }
    panic!("the key never arrived in 30 s");
}

#[test]
fn a_hello_lost_before_the_producer_reads_is_sent_again_when_it_answers_a_want() {
    // The producer answers the next broadcast Want (at 1.5 s): that proves
    // it reads, and a new Hello goes out at once.
    let ms = first_open_after_lost_hello(true);
    assert!(ms <= 2_000, "opened after {ms} ms");
}

#[test]
fn a_hello_lost_is_sent_again_when_it_times_out_whatever_else_arrives() {
    // Without Wants, the Hello is retried when the handshake times out
    // (10 s) and the backoff (0.5 s) ends, even though control messages
    // arrive all the time.
    let ms = first_open_after_lost_hello(false);
    let cfg = EngineConfig::default();
    let bound = cfg.handshake_timeout_ms + cfg.request_retry_ms + 200;
    assert!(ms <= bound, "opened after {ms} ms, more than {bound}");
}

/// What the librdkafka plugin's second `on_consume` run relies on: a value is
/// taken as a record's plaintext only if it seals to that record's tag, under
/// a key the consumer holds, with the same topic and key binding.
#[test]
fn is_plaintext_of_vouches_only_for_the_records_own_plaintext() {
    use kafka_e2ee_core::format::{Cipher, Compression, Sealing};
    let mut w = World::new(21);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let other = w.identity("o", &[], &["audit"]);
    let (p, c, other) = (w.engine(p, None), w.engine(c, None), w.engine(other, None));
    let (h, ct) = seal(&p, "orders", b"hello world");
    // No key held yet: nothing is vouched for, and nothing is asked for.
    assert!(!c.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"k"), b"hello world"));
    let mut v = ct.clone();
    let _ = c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v);
    c.handle_timeout(T0).unwrap();
    pump(&[&p, &c, &other], T0);
    c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, b"hello world");

    assert!(c.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"k"), &v));
    // The producer's own epoch counts too (it may read its records back).
    assert!(p.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"k"), &v));
    // Any other value, including the ciphertext and a one-bit change.
    assert!(!c.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"k"), &ct));
    assert!(!c.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"k"), b"hello worle"));
    assert!(!c.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"k"), b"hello world!"));
    assert!(!c.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"k"), b""));
    // Another record key, binding kind, topic or header.
    assert!(!c.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"K"), &v));
    assert!(!c.is_plaintext_of("orders", &h, KeyBinding::Null, &v));
    assert!(!c.is_plaintext_of("orderz", &h, KeyBinding::Bytes(b"k"), &v));
    for i in 0..HEADER_LEN {
        let mut bad = h;
        bad[i] ^= 1;
        assert!(
            !c.is_plaintext_of("orders", &bad, KeyBinding::Bytes(b"k"), &v),
            "header byte {i}"
        );
    }
    assert!(!c.is_plaintext_of("orders", &h[..HEADER_LEN - 1], KeyBinding::Bytes(b"k"), &v));
    // A consumer not authorized for the topic.
    assert!(!other.is_plaintext_of("orders", &h, KeyBinding::Bytes(b"k"), &v));

    // A compressed record is never vouched for this way (the plugin keeps
    // its value-form marker for those).
    let config = EngineConfig {
        sealing: Sealing {
            cipher: Cipher::Aes256Gcm,
            compression: Compression::Zstd,
        },
        ..EngineConfig::default()
    };
    let zp = w.identity("zp", &["orders"], &[]);
    let zp = w.engine_with(config, zp, None, T0);
    let json: Vec<u8> = (0..40)
        .flat_map(|i| format!("{{\"n\":{i}}},").into_bytes())
        .collect();
    let (zh, zct) = seal(&zp, "orders", &json);
    assert_eq!(
        RecordHeader::decode(&zh).unwrap().compression(),
        Compression::Zstd
    );
    assert!(!zp.is_plaintext_of("orders", &zh, KeyBinding::Bytes(b"k"), &json));
    assert!(!zp.is_plaintext_of("orders", &zh, KeyBinding::Bytes(b"k"), &zct));
}

#[test]
fn sealed_headers_round_trip_through_the_engine_and_failures_count_as_rejected() {
    use kafka_e2ee_core::format::{decode_header_list, encode_header_list, AppHeader};
    let mut w = World::new(5);
    let p = w.identity("p", &["*"], &["*"]);
    let p = w.engine(p, None);
    let headers = [
        AppHeader {
            name: "tenant",
            value: Some(b"acme"),
            clear: false,
        },
        AppHeader {
            name: "route",
            value: None,
            clear: true,
        },
        AppHeader {
            name: "tenant",
            value: Some(b""),
            clear: false,
        },
    ];
    let list = encode_header_list(&headers).unwrap();
    let mut v = b"payload".to_vec();
    let (h, sealed) = p
        .seal_record("orders", KeyBinding::Null, &mut v, Some(&list))
        .unwrap();
    let sealed = sealed.unwrap();
    assert_eq!(h[1] & 0x80, 0x80, "the HEADERS flag");
    let visible = [AppHeader {
        name: "route",
        value: None,
        clear: false,
    }];
    let ct = v.clone();
    let before = p.metrics().records_rejected;
    // Every way a broker can get it wrong is rejected, counted, value unchanged.
    let mut flipped = sealed.clone();
    flipped[0] ^= 1;
    let cases: [(&[&[u8]], &[AppHeader<'_>]); 5] = [
        (&[], &visible),
        (&[&sealed, &sealed], &visible),
        (&[&flipped], &visible),
        (&[&sealed], &[]),
        (&[&sealed[..15]], &visible),
    ];
    for (i, (s, vis)) in cases.iter().enumerate() {
        let mut v = ct.clone();
        let r = p.open_record("orders", Some(&h), s, vis, KeyBinding::Null, &mut v);
        assert!(matches!(r, Err(Error::Format(_))), "case {i}: {r:?}");
        assert_eq!(v, ct, "case {i}");
    }
    // The plain `open` of a host that does not restore headers fails closed.
    let mut v = ct.clone();
    assert!(p
        .open("orders", Some(&h), KeyBinding::Null, &mut v)
        .is_err());
    // e2ee.h without an e2ee header, even on a record of an unprotected kind.
    let mut v = ct.clone();
    assert!(p
        .open_record("orders", None, &[&sealed], &[], KeyBinding::Null, &mut v)
        .is_err());
    assert_eq!(p.metrics().records_rejected, before + 7);
    let mut v = ct.clone();
    let (opened, restored) = p
        .open_record(
            "orders",
            Some(&h),
            &[&sealed],
            &visible,
            KeyBinding::Null,
            &mut v,
        )
        .unwrap();
    assert_eq!(opened, Opened::Decrypted);
    assert_eq!(v, b"payload");
    assert_eq!(decode_header_list(&restored.unwrap()).unwrap(), headers);
}

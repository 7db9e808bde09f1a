//! Key exchange v2: keys outlive their producers. A consumer that ran before
//! a record was written opens it later with no producer or holder alive, from
//! the envelopes on the keys topic; nobody else can; and nothing opens after
//! the retention, even with the consumer's state directory and credential.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Cluster, MemStorage, World, T0};
use kafka_e2ee_core::format::{KeyBinding, HEADER_LEN};
use kafka_e2ee_core::keys::KeyPolicy;
use kafka_e2ee_core::{Channel, Engine, EngineConfig, Error};

fn seal(e: &Engine, topic: &str, plain: &[u8]) -> ([u8; HEADER_LEN], Vec<u8>) {
    let mut v = plain.to_vec();
    let h = e.seal(topic, KeyBinding::Bytes(b"k"), &mut v).unwrap();
    (h, v)
}

fn open(e: &Engine, topic: &str, h: &[u8], ct: &[u8]) -> Result<Vec<u8>, Error> {
    let mut v = ct.to_vec();
    e.open(topic, Some(h), KeyBinding::Bytes(b"k"), &mut v)?;
    Ok(v)
}

#[test]
fn a_consumer_that_ran_before_reads_after_the_producer_exited() {
    let mut w = World::new(40);
    let mut cluster = Cluster::default();
    let c_id = w.identity("c", &[], &["orders"]);
    let c_file = c_id.to_file_bytes();
    let c_state = MemStorage::default();
    // The consumer runs once (publishes its prekeys), then exits.
    let c = w.engine(c_id, Some(c_state.clone()));
    cluster.run(&[&c], T0);
    let mailbox = c.mailbox_id().expect("a consumer has a mailbox");
    drop(c);

    // The producer starts later, writes, and exits: nobody else is running.
    let t1 = T0 + 60_000;
    let p = w.identity("p", &["orders"], &[]);
    let p = w.engine_with(EngineConfig::default(), p, None, t1);
    cluster.catch_up(&p, t1);
    let records: Vec<_> = (0..5)
        .map(|i| seal(&p, "orders", format!("record {i}").as_bytes()))
        .collect();
    cluster.run(&[&p], t1); // a tick: envelopes go out (as on close)
    assert!(p.metrics().envelopes_sealed >= 1);
    drop(p);

    // The consumer comes back on its state directory: every record opens,
    // from the keys topic alone.
    let t2 = t1 + 5_000;
    let c_id = kafka_e2ee_core::trust::Identity::from_file_bytes(&c_file).unwrap();
    let c = w.engine_with(EngineConfig::default(), c_id, Some(c_state), t2);
    assert_eq!(
        c.mailbox_id(),
        Some(mailbox),
        "the mailbox survives a restart"
    );
    cluster.catch_up(&c, t2);
    for (i, (h, ct)) in records.iter().enumerate() {
        assert_eq!(
            open(&c, "orders", h, ct).unwrap(),
            format!("record {i}").as_bytes()
        );
    }
    assert!(c.metrics().envelopes_received >= 1);
}

#[test]
fn a_consumer_offline_while_the_producer_runs_gets_every_epoch_including_later_topics() {
    let mut w = World::new(41);
    let mut cluster = Cluster::default();
    let state = MemStorage::default();
    let c_id = w.identity("c", &[], &["*"]);
    let c_file = c_id.to_file_bytes();
    let c = w.engine(c_id, Some(state.clone()));
    cluster.run(&[&c], T0);
    drop(c);

    let p = w.identity("p", &["*"], &[]);
    let p = w.engine(p, None);
    cluster.catch_up(&p, T0);
    let rotation = KeyPolicy::default().rotation_ms;
    let mut records = Vec::new();
    // Three epochs; a topic first written late in the second one.
    for k in 0..3u64 {
        let now = T0 + k * rotation + 1_000;
        cluster.run(&[&p], now);
        records.push(("a", seal(&p, "a", b"a")));
        if k == 1 {
            records.push(("b", seal(&p, "b", b"b")));
        }
        cluster.run(&[&p], now + 1);
    }
    drop(p);

    let t = T0 + 3 * rotation;
    let c_id = kafka_e2ee_core::trust::Identity::from_file_bytes(&c_file).unwrap();
    let c = w.engine_with(EngineConfig::default(), c_id, Some(state), t);
    cluster.catch_up(&c, t);
    for (topic, (h, ct)) in &records {
        assert_eq!(open(&c, topic, h, ct).unwrap(), topic.as_bytes());
    }
}

#[test]
fn the_next_epoch_key_reaches_a_running_consumer_before_the_first_record_needs_it() {
    let mut w = World::new(42);
    let mut cluster = Cluster::default();
    let c = w.identity("c", &[], &["orders"]);
    let c = w.engine(c, None);
    let p = w.identity("p", &["orders"], &[]);
    let p = w.engine(p, None);
    cluster.run(&[&c, &p], T0);
    let _ = seal(&p, "orders", b"first");
    cluster.run(&[&c, &p], T0 + 1);
    let received = c.metrics().keys_received;
    assert!(received >= 2, "current and next epoch: {received}");
    // After rotation the record opens at once: its key came ahead.
    let later = T0 + KeyPolicy::default().rotation_ms;
    p.handle_timeout(later).unwrap();
    let (h, ct) = seal(&p, "orders", b"second");
    assert_eq!(open(&c, "orders", &h, &ct).unwrap(), b"second");
}

#[test]
fn nobody_else_gets_the_keys_a_consumer_without_the_topic_a_producer_only_credential_or_a_newcomer()
{
    let mut w = World::new(43);
    let mut cluster = Cluster::default();
    let other = w.identity("other", &[], &["payments"]);
    let other_file = other.to_file_bytes();
    let other_state = MemStorage::default();
    let other = w.engine(other, Some(other_state.clone()));
    let p = w.identity("p", &["orders"], &[]);
    let p = w.engine(p, None);
    assert_eq!(
        p.mailbox_id(),
        None,
        "a producer-only credential has no mailbox"
    );
    cluster.run(&[&other, &p], T0);
    let (h, ct) = seal(&p, "orders", b"secret");
    cluster.run(&[&other, &p], T0 + 1);
    assert_eq!(p.metrics().envelopes_sealed, 0, "no authorized recipient");
    drop(other);
    drop(p);

    let t = T0 + 10_000;
    let other = kafka_e2ee_core::trust::Identity::from_file_bytes(&other_file).unwrap();
    let other = w.engine_with(EngineConfig::default(), other, Some(other_state), t);
    cluster.catch_up(&other, t);
    assert!(matches!(
        open(&other, "orders", &h, &ct),
        Err(Error::NotAuthorized { .. })
    ));
    // A consumer of the topic that never ran before the record was written
    // has no envelope (it needs a keeper or a live holder).
    let newcomer = w.identity("new", &[], &["orders"]);
    let newcomer = w.engine_with(EngineConfig::default(), newcomer, None, t);
    cluster.catch_up(&newcomer, t);
    assert!(matches!(
        open(&newcomer, "orders", &h, &ct),
        Err(Error::KeyUnavailable { .. })
    ));
}

#[test]
fn after_the_retention_neither_the_state_directory_nor_the_envelopes_open_old_records() {
    let mut w = World::new(44);
    let mut cluster = Cluster::default();
    let state = MemStorage::default();
    let c_id = w.identity("c", &[], &["orders"]);
    let c_file = c_id.to_file_bytes();
    let c = w.engine(c_id, Some(state.clone()));
    cluster.run(&[&c], T0);
    drop(c);
    let p = w.identity("p", &["orders"], &[]);
    let p = w.engine(p, None);
    cluster.catch_up(&p, T0);
    let (h, ct) = seal(&p, "orders", b"old");
    cluster.run(&[&p], T0 + 1);
    drop(p);
    let old_state = state.blob();

    // The consumer runs on past the retention (plus its prekeys' margin):
    // its keys and the prekey chain seeds that opened the envelopes go.
    let cfg = EngineConfig::default();
    let k = cfg.key;
    let past =
        T0 + k.rotation_ms * 2 + k.retention_ms + cfg.clock_skew_ms + 2 * cfg.prekey_period_ms + 1;
    let c_id = kafka_e2ee_core::trust::Identity::from_file_bytes(&c_file).unwrap();
    let c = w.engine_with(cfg.clone(), c_id, Some(state.clone()), T0 + 2_000);
    cluster.catch_up(&c, T0 + 2_000);
    assert_eq!(open(&c, "orders", &h, &ct).unwrap(), b"old");
    c.handle_timeout(past).unwrap();
    drop(c);

    // With its current state directory and credential, and every envelope
    // the broker kept (or archived), nothing opens.
    let c_id = kafka_e2ee_core::trust::Identity::from_file_bytes(&c_file).unwrap();
    let c = w.engine_with(cfg, c_id, Some(state), past);
    cluster.catch_up(&c, past);
    assert!(matches!(
        open(&c, "orders", &h, &ct),
        Err(Error::KeyUnavailable { .. })
    ));
    assert_eq!(c.metrics().envelopes_received, 0);
    assert!(old_state.is_some());
}

#[test]
fn forged_tampered_and_misdirected_keys_topic_messages_are_rejected() {
    let mut w = World::new(45);
    let mut cluster = Cluster::default();
    let c = w.identity("c", &[], &["orders"]);
    let c = w.engine(c, None);
    let p = w.identity("p", &["orders"], &[]);
    let p = w.engine(p, None);
    cluster.run(&[&c], T0);
    let prekeys = cluster.keys[0].clone();
    cluster.catch_up(&p, T0);
    let (h, ct) = seal(&p, "orders", b"x");
    p.handle_timeout(T0 + 1).unwrap();
    let mut envelopes = Vec::new();
    while let Some(m) = p.poll_transmit() {
        if m.channel == Channel::Keys {
            envelopes.push(m.payload);
        }
    }
    assert!(!envelopes.is_empty());
    let env = &envelopes[0];

    // Every single-bit flip of an envelope, and every truncation, is
    // rejected or ignored by the consumer, and never yields a key.
    let before = c.metrics().keys_received;
    for i in 0..env.len() {
        let mut bad = env.clone();
        bad[i] ^= 0x01;
        let _ = c.handle_control(T0 + 2, &bad);
    }
    for n in 0..env.len() {
        let _ = c.handle_control(T0 + 2, &env[..n]);
    }
    assert_eq!(c.metrics().keys_received, before);
    // A bit flip in the prekeys record breaks its signature: a producer
    // that reads it seals nothing to it.
    let q = w.identity("q", &["orders"], &[]);
    let q = w.engine(q, None);
    // (A flip that makes the record look stale is ignored before the
    // signature check; every other one fails it.)
    let mut rejected = 0;
    for i in 22..prekeys.len() {
        let mut bad = prekeys.clone();
        bad[i] ^= 0x80;
        rejected += usize::from(q.handle_control(T0, &bad).is_err());
    }
    assert!(rejected + 16 >= prekeys.len() - 22, "{rejected}");
    let _ = seal(&q, "orders", b"y");
    q.handle_timeout(T0 + 1).unwrap();
    assert_eq!(q.metrics().envelopes_sealed, 0);
    // The genuine envelope opens.
    c.handle_control(T0 + 2, env).unwrap();
    assert_eq!(open(&c, "orders", &h, &ct).unwrap(), b"x");
    // Replayed: harmless, no second key.
    let n = c.metrics().keys_received;
    c.handle_control(T0 + 3, env).unwrap();
    assert_eq!(c.metrics().keys_received, n);
}

#[test]
fn a_clock_jump_far_ahead_and_back_costs_no_long_hash_chain_walk() {
    let mut w = World::new(46);
    let c = w.identity("c", &[], &["orders"]);
    let c = w.engine(c, None);
    for now in [u64::MAX, i64::MAX as u64, 0, T0, T0 + 1] {
        c.handle_timeout(now).unwrap();
        while c.poll_transmit().is_some() {}
    }
}

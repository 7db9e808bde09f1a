//! Only producers mint keys: an insider that holds a valid credential and
//! speaks the protocol by hand (not through an engine) answers a consumer's
//! Hello in a producer's name, pushes forged keys for the producer's current
//! and future epochs, refuses in its name, and serves a key as a holder with a
//! statement it signed itself. None of it changes what the honest consumer
//! holds or believes; the real producer's key still arrives and opens.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{pump, World, T0};
use kafka_e2ee_core::exchange::mailbox::{KemPrekeys, Prekeys, KEM_SPAN, PREKEYS_CONTEXT};
use kafka_e2ee_core::exchange::statement::Statement;
use kafka_e2ee_core::exchange::wire::{
    self, encode_batch, Body, Delivery, Envelope, Inner, Refusal,
};
use kafka_e2ee_core::format::{DataKey, InstanceId, KeyBinding, KeyId, RecordHeader};
use kafka_e2ee_core::trust::Identity;
use kafka_e2ee_core::{Channel, Engine, Error, KeyUnavailable};

/// The consumer's next control-topic message of this kind.
fn next_of(e: &Engine, kind: fn(&Body) -> bool) -> Envelope {
    while let Some(m) = e.poll_transmit() {
        if m.channel != Channel::Control {
            continue;
        }
        let env = Envelope::decode(&m.payload).unwrap();
        if kind(&env.body) {
            return env;
        }
    }
    panic!("no such message");
}

/// Answers `hello` as `as_id` with the insider's own (valid) credential, and
/// returns what it would need to speak over the session once the consumer's
/// HelloFinish arrives.
fn answer_hello(
    insider: &Identity,
    hello: &Envelope,
    as_id: InstanceId,
    consumer: &Engine,
    now: u64,
) -> (snow::StatelessTransportState, [u8; 8]) {
    let (mut hs, reply) = common::answer_hello_as(
        &insider.private_key_bytes(),
        hello,
        as_id,
        [7u8; 64],
        &insider.credential().encode(),
    )
    .unwrap();
    let session = match &reply.body {
        Body::HelloReply { session, .. } | Body::HybridReply { session, .. } => *session,
        _ => unreachable!(),
    };
    let mut buf = vec![0u8; 8192];
    consumer.handle_control(now, &reply.encode()).unwrap();
    let finish = next_of(consumer, |b| matches!(b, Body::HelloFinish { .. }));
    let Body::HelloFinish { noise, .. } = &finish.body else {
        panic!()
    };
    let n = hs.read_message(noise, &mut buf).unwrap();
    let (_cred, _batch) = wire::decode_finish_payload(&buf[..n]).unwrap();
    (hs.into_stateless_transport_mode().unwrap(), session)
}

fn sealed(
    t: &snow::StatelessTransportState,
    session: [u8; 8],
    nonce: u64,
    from: InstanceId,
    to: InstanceId,
    items: &[Inner],
) -> Vec<u8> {
    let batch = encode_batch(items);
    let mut buf = vec![0u8; batch.len() + 64];
    let n = t.write_message(nonce, &batch, &mut buf).unwrap();
    Envelope {
        from,
        to,
        body: Body::Sealed {
            session,
            nonce,
            noise: buf[..n].to_vec(),
        },
    }
    .encode()
}

fn forged(key_id: KeyId, statement: Option<Statement>) -> Inner {
    let statement = statement.map(Box::new);
    Inner::KeyDelivery(Delivery {
        key_id,
        topic: "orders".into(),
        key: DataKey::from_bytes([0x42; 32]),
        epoch_started_ms: T0,
        retain_ms: 3_600_000,
        statement,
    })
}

#[test]
fn an_insider_answering_as_the_producer_cannot_push_keys_or_refuse_in_its_name() {
    let mut w = World::new(60);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    // Insiders: one that may only consume the topic, one that may even
    // produce it (but is not the producer instance).
    let reader = w.identity("insider-reader", &[], &["orders"]);
    let writer = w.identity("insider-writer", &["orders"], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let mut value = b"the record".to_vec();
    let h = p
        .seal("orders", KeyBinding::Bytes(b"k"), &mut value)
        .unwrap();
    let key_id = RecordHeader::decode(&h).unwrap().key_id;
    let future = KeyId {
        producer: key_id.producer,
        epoch: key_id.epoch + 5,
    };

    for (i, insider) in [&reader, &writer].into_iter().enumerate() {
        // (Past the backoff the previous dropped session earned.)
        let now = T0 + 60_000 * i as u64;
        let mut probe = value.clone();
        assert!(c
            .open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut probe)
            .is_err());
        c.handle_timeout(now).unwrap();
        let hello = next_of(&c, |b| {
            matches!(b, Body::Hello { .. } | Body::HybridHello { .. })
        });
        assert_eq!(hello.to, key_id.producer);
        let (t, session) = answer_hello(insider, &hello, key_id.producer, &c, now);
        // Forged keys (current and a future epoch; no statement, and one the
        // insider signed itself), then a refusal in the producer's name.
        let own = Statement::sign(
            insider,
            [1; 16],
            &key_id,
            "orders",
            &DataKey::from_bytes([0x42; 32]),
            T0,
            T0 + 1,
        );
        let items = [
            forged(key_id, None),
            forged(future, None),
            forged(key_id, Some(own)),
            Inner::KeyUnavailable {
                key_id,
                topic: "orders".into(),
                reason: Refusal::NotAuthorized,
            },
        ];
        let msg = sealed(&t, session, 0, key_id.producer, hello.from, &items);
        assert!(
            c.handle_control(now, &msg).is_err(),
            "an unproven session is dropped"
        );
        assert_eq!(c.metrics().keys_received, 0);
        assert!(!c.holds_key(key_id, "orders") && !c.holds_key(future, "orders"));
        assert_eq!(
            c.want_status(key_id, "orders"),
            Some(KeyUnavailable::Pending),
            "the refusal was not taken"
        );
        let mut probe = value.clone();
        assert!(matches!(
            c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut probe),
            Err(Error::KeyUnavailable {
                reason: KeyUnavailable::Pending,
                ..
            })
        ));
    }
    // The real producer still serves the consumer, after the backoff the
    // dropped sessions earned.
    let mut now = T0 + 120_000;
    for _ in 0..40 {
        now += 1000;
        c.handle_timeout(now).unwrap();
        pump(&[&p, &c], now);
        if c.holds_key(key_id, "orders") {
            break;
        }
    }
    let mut v = value.clone();
    c.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, b"the record");
}

#[test]
fn a_holder_relays_the_producers_statement_so_a_key_outlives_its_producer_through_holders() {
    let mut w = World::new(61);
    let p = w.identity("p", &["orders"], &[]);
    let a = w.identity("a", &[], &["orders"]);
    let b = w.identity("b", &[], &["orders"]);
    let (p, a, b) = (w.engine(p, None), w.engine(a, None), w.engine(b, None));
    let mut value = b"relayed".to_vec();
    let h = p
        .seal("orders", KeyBinding::Bytes(b"k"), &mut value)
        .unwrap();
    let key_id = RecordHeader::decode(&h).unwrap().key_id;
    // a gets the key from the producer; the producer goes away; b gets it
    // from a (Want, Have, session) with the producer's statement.
    let mut probe = value.clone();
    let _ = a.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut probe);
    a.handle_timeout(T0).unwrap();
    pump(&[&p, &a], T0);
    assert!(a.holds_key(key_id, "orders"));
    drop(p);
    let mut probe = value.clone();
    let _ = b.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut probe);
    let mut now = T0;
    for _ in 0..60 {
        now += 500;
        b.handle_timeout(now).unwrap();
        pump(&[&a, &b], now);
        if b.holds_key(key_id, "orders") {
            break;
        }
    }
    let mut v = value.clone();
    b.open("orders", Some(&h), KeyBinding::Bytes(b"k"), &mut v)
        .unwrap();
    assert_eq!(v, b"relayed");
}

/// Found by the simulation: an insider that reads an honest consumer's
/// mailbox id on the keys topic publishes a newer prekeys record for that
/// mailbox, signed with its own (valid, consuming) credential. Producers must
/// not take it over the owner's, or they would seal the mailbox's keys to the
/// insider's prekeys and the consumer would get no envelope.
#[test]
fn an_insider_cannot_take_over_a_consumers_mailbox_with_its_own_prekeys() {
    let mut w = World::new(62);
    let c = w.identity("c", &[], &["orders"]);
    let insider = w.identity("insider", &[], &["orders"]);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.engine(c, None);
    let p = w.engine(p, None);
    let mailbox = c.mailbox_id().unwrap();
    c.handle_timeout(T0).unwrap();
    let mut published = None;
    while let Some(m) = c.poll_transmit() {
        if m.channel == Channel::Keys {
            published = Some(m.payload);
        }
    }
    p.handle_control(T0, &published.unwrap()).unwrap();
    // The insider's record, in both kinds: classical, and hybrid (its own
    // ML-KEM keys too).
    let forged: Vec<Prekeys> = [None, Some(vec![vec![7; 1184]; 8])]
        .into_iter()
        .map(|kem_keys| {
            let mut forged = Prekeys {
                mailbox,
                keeper: false,
                published_ms: T0 + 1,
                first_period: T0 / 3_600_000,
                salt: [3; 16],
                keys: vec![[9; 32]; 4],
                kem: kem_keys.map(|keys| KemPrekeys {
                    first: T0 / 3_600_000 / KEM_SPAN,
                    keys,
                }),
                credential: insider.credential().encode(),
                signature: [0; 64],
            };
            forged.signature = insider.sign_statement(PREKEYS_CONTEXT, &forged.signed_part());
            forged
        })
        .collect();
    // p already holds the owner's hybrid record: the forged hybrid record
    // fails the ownership check, the forged classical one does not replace
    // a hybrid record at all (checked below: the envelope reaches c).
    assert!(p.handle_control(T0 + 1, &forged[1].encode()).is_err());
    let _ = p.handle_control(T0 + 1, &forged[0].encode());
    // Compaction keeps the newest record per mailbox, so a producer that
    // starts later may see the insider's record first, or alone: the mailbox
    // id is bound to its owner's signing key, so that changes nothing.
    let q = w.identity("q", &["orders"], &[]);
    let q = w.engine(q, None);
    for f in &forged {
        assert!(q.handle_control(T0 + 1, &f.encode()).is_err());
    }
    let _ = q.seal("orders", KeyBinding::Bytes(b"k"), &mut b"y".to_vec());
    q.handle_timeout(T0 + 2).unwrap();
    assert!(
        std::iter::from_fn(|| q.poll_transmit()).all(|m| m.channel != Channel::Keys),
        "nothing sealed to the insider's prekeys"
    );
    let mut value = b"x".to_vec();
    let h = p
        .seal("orders", KeyBinding::Bytes(b"k"), &mut value)
        .unwrap();
    let key_id = RecordHeader::decode(&h).unwrap().key_id;
    p.handle_timeout(T0 + 2).unwrap();
    while let Some(m) = p.poll_transmit() {
        if m.channel == Channel::Keys {
            let _ = c.handle_control(T0 + 2, &m.payload);
        }
    }
    assert!(
        c.holds_key(key_id, "orders"),
        "the envelope reached its owner"
    );
}

//! Tokenized record keys (docs/FORMAT.md section 13, docs/PROTOCOL.md
//! section 5e): one token secret per topic, shared by every authorized
//! producer through the keys topic, stable across restarts, moved only by
//! an explicit rotation; the consumer gets the real key back.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{Cluster, MemStorage, World, T0};
use kafka_e2ee_core::exchange::tokens::{TokenClaim, KIND_TOKEN_ENVELOPE, SETTLE_MS};
use kafka_e2ee_core::format::{KeyBinding, RecordExtras};
use kafka_e2ee_core::{Engine, EngineConfig, Error};

fn tokenizing() -> EngineConfig {
    EngineConfig {
        tokenize_keys: true,
        ..EngineConfig::default()
    }
}

fn token(e: &Engine, key: &[u8]) -> Result<Vec<u8>, Error> {
    Ok(e.token_secret("customers")?
        .token("customers", key)?
        .to_vec())
}

/// Asks for the secret, then runs the cluster past the settling time.
fn settle(cluster: &mut Cluster, engines: &[&Engine], now: u64) -> u64 {
    for e in engines {
        let _ = e.token_secret("customers");
    }
    cluster.run(engines, now);
    let later = now + SETTLE_MS;
    cluster.run(engines, later);
    later
}

#[test]
fn producers_share_one_secret_and_the_consumer_gets_the_real_key() {
    let mut w = World::new(70);
    let mut cluster = Cluster::default();
    let c = w.identity("c", &[], &["customers"]);
    let c = w.engine(c, None);
    let p1 = w.identity("p1", &["customers"], &[]);
    let p1 = w.engine_with(tokenizing(), p1, None, T0);
    let p2 = w.identity("p2", &["customers"], &[]);
    let p2 = w.engine_with(tokenizing(), p2, None, T0);
    assert!(
        p1.mailbox_id().is_some(),
        "a tokenizing producer has a mailbox"
    );
    for e in [&c, &p1, &p2] {
        cluster.catch_up(e, T0);
    }
    // Nothing yet: the first ask founds one (p1 asks first), and it is
    // used only once settled.
    assert!(matches!(
        token(&p1, b"alice@example.com"),
        Err(Error::TokenPending { .. })
    ));
    cluster.run(&[&c, &p1, &p2], T0);
    assert!(matches!(
        token(&p1, b"alice@example.com"),
        Err(Error::TokenPending { .. })
    ));
    let now = settle(&mut cluster, &[&c, &p1, &p2], T0 + 1);
    let key = b"alice@example.com";
    let t1 = token(&p1, key).unwrap();
    assert_eq!(t1, token(&p2, key).unwrap(), "equal keys, equal tokens");
    assert_eq!(t1.len(), key.len());
    assert_ne!(&t1[..], &key[..]);
    for k in [&b"bob"[..], &42u64.to_be_bytes()] {
        assert_eq!(token(&p1, k).unwrap(), token(&p2, k).unwrap());
    }

    // A record sealed by p2 with the key tokenized: the consumer gets the
    // value and the real key back; the wire carries only the token.
    let mut value = b"balance: 10".to_vec();
    let r = p2
        .seal_record_tokenized("customers", key, true, &mut value, None)
        .unwrap();
    assert_eq!(&r.token[..], &t1[..]);
    cluster.run(&[&c, &p1, &p2], now);
    let (_, opened) = c
        .open_record_parts(
            "customers",
            Some(&r.header),
            RecordExtras {
                wire_key: Some(&r.token),
                sealed_keys: &[&r.sealed_key],
                ..RecordExtras::default()
            },
            KeyBinding::Bytes(&r.token),
            &mut value,
        )
        .unwrap();
    assert_eq!(value, b"balance: 10");
    assert_eq!(opened.key.as_deref().map(Vec::as_slice), Some(&key[..]));
    // A host that does not restore keys fails closed on it.
    let mut again = b"balance: 10".to_vec();
    let r = p2
        .seal_record_tokenized("customers", key, false, &mut again, None)
        .unwrap();
    assert!(c
        .open(
            "customers",
            Some(&r.header),
            KeyBinding::Unbound,
            &mut again
        )
        .is_err());
}

#[test]
fn producers_that_found_at_once_converge_on_one_secret() {
    let mut w = World::new(71);
    let mut cluster = Cluster::default();
    let p1 = w.identity("p1", &["customers"], &[]);
    let p1 = w.engine_with(tokenizing(), p1, None, T0);
    let p2 = w.identity("p2", &["customers"], &[]);
    let p2 = w.engine_with(tokenizing(), p2, None, T0);
    cluster.catch_up(&p1, T0);
    cluster.catch_up(&p2, T0);
    // Both ask and found before either claim is on the keys topic.
    for e in [&p1, &p2] {
        let _ = e.token_secret("customers");
        e.handle_timeout(T0).unwrap();
    }
    let now = settle(&mut cluster, &[&p1, &p2], T0);
    let claims: Vec<TokenClaim> = cluster
        .keys
        .iter()
        .filter_map(|m| TokenClaim::decode(m).ok())
        .collect();
    let founders: std::collections::BTreeSet<_> = claims.iter().map(|c| c.founder).collect();
    assert_eq!(founders.len(), 2, "both founded");
    cluster.run(&[&p1, &p2], now + SETTLE_MS);
    assert_eq!(
        token(&p1, b"k-0001").unwrap(),
        token(&p2, b"k-0001").unwrap()
    );
}

#[test]
fn a_producer_that_starts_after_the_others_exited_gets_the_secret_from_a_consumer() {
    let mut w = World::new(72);
    let mut cluster = Cluster::default();
    let c = w.identity("c", &[], &["customers"]);
    let c = w.engine(c, None);
    let p1 = w.identity("p1", &["customers"], &[]);
    let p1 = w.engine_with(tokenizing(), p1, None, T0);
    cluster.catch_up(&c, T0);
    cluster.catch_up(&p1, T0);
    let now = settle(&mut cluster, &[&c, &p1], T0);
    let before = token(&p1, b"customer-000042").unwrap();
    drop(p1);

    // Later, only the consumer runs; a new producer starts.
    let later = now + 3_600_000;
    let p3 = w.identity("p3", &["customers"], &[]);
    let p3 = w.engine_with(tokenizing(), p3, None, later);
    cluster.catch_up(&p3, later);
    let _ = p3.token_secret("customers");
    cluster.run(&[&c, &p3], later);
    assert_eq!(token(&p3, b"customer-000042").unwrap(), before);
}

#[test]
fn a_restarted_producer_keeps_its_secret_and_tokens() {
    let mut w = World::new(73);
    let mut cluster = Cluster::default();
    let id = w.identity("p", &["customers"], &[]);
    let file = id.to_file_bytes();
    let state = MemStorage::default();
    let p = w.engine_with(tokenizing(), id, Some(state.clone()), T0);
    cluster.catch_up(&p, T0);
    let now = settle(&mut cluster, &[&p], T0);
    let before = token(&p, b"acct-77").unwrap();
    drop(p);
    // Back on its state directory, with nobody else running and before
    // reading the keys topic: the same secret at once.
    let id = kafka_e2ee_core::trust::Identity::from_file_bytes(&file).unwrap();
    let p = w.engine_with(tokenizing(), id, Some(state), now + 60_000);
    assert_eq!(token(&p, b"acct-77").unwrap(), before);
}

#[test]
fn a_rotation_moves_every_producer_to_the_next_generation() {
    let mut w = World::new(74);
    let mut cluster = Cluster::default();
    let p1 = w.identity("p1", &["customers"], &[]);
    let p1 = w.engine_with(tokenizing(), p1, None, T0);
    let p2 = w.identity("p2", &["customers"], &[]);
    let p2 = w.engine_with(tokenizing(), p2, None, T0);
    cluster.catch_up(&p1, T0);
    cluster.catch_up(&p2, T0);
    let now = settle(&mut cluster, &[&p1, &p2], T0);
    let old = token(&p1, b"k-0001").unwrap();
    assert_eq!(p1.rotate_token_secret("customers").unwrap(), 2);
    let now = settle(&mut cluster, &[&p1, &p2], now);
    let new = token(&p1, b"k-0001").unwrap();
    assert_ne!(new, old, "a new generation gives new tokens");
    assert_eq!(token(&p2, b"k-0001").unwrap(), new);
    let _ = now;
}

#[test]
fn no_secret_before_the_keys_topic_was_read() {
    let mut w = World::new(75);
    let mut cluster = Cluster::default();
    let p = w.identity("p", &["customers"], &[]);
    let p = w.engine_with(tokenizing(), p, None, T0);
    let _ = p.token_secret("customers");
    cluster.run(&[&p], T0);
    cluster.run(&[&p], T0 + 60_000);
    assert!(cluster.keys.iter().all(|m| TokenClaim::decode(m).is_err()));
    assert!(matches!(token(&p, b"abc"), Err(Error::TokenPending { .. })));
    // A consumer cannot tokenize at all.
    let c = w.identity("c", &[], &["customers"]);
    let c = w.engine(c, None);
    assert!(matches!(
        token(&c, b"abc"),
        Err(Error::NotAuthorized { .. })
    ));
}

#[test]
fn nobody_outside_the_topic_is_sealed_the_secret_and_forged_claims_change_nothing() {
    let mut w = World::new(76);
    let mut cluster = Cluster::default();
    let p1 = w.identity("p1", &["customers"], &[]);
    let p1 = w.engine_with(tokenizing(), p1, None, T0);
    let outsider = w.identity("o", &["payments"], &["payments"]);
    let outsider = w.engine_with(tokenizing(), outsider, None, T0);
    let o_mailbox = outsider.mailbox_id().unwrap();
    cluster.catch_up(&p1, T0);
    cluster.catch_up(&outsider, T0);
    let now = settle(&mut cluster, &[&p1, &outsider], T0);
    let good = token(&p1, b"k-0001").unwrap();
    let to_outsider = cluster
        .keys
        .iter()
        .any(|m| m.get(5) == Some(&KIND_TOKEN_ENVELOPE) && m.get(14..22) == Some(&o_mailbox.0[..]));
    assert!(
        !to_outsider,
        "no token envelope to a party without the topic"
    );

    // A claim with its signature broken, and one re-signed by an insider
    // for a higher generation but with a broken signature, change nothing.
    let claim = cluster
        .keys
        .iter()
        .find_map(|m| TokenClaim::decode(m).ok())
        .unwrap();
    let mut forged = claim.clone();
    forged.generation = 9;
    let mut bad_sig = claim.clone();
    bad_sig.signature[0] ^= 1;
    for c in [forged, bad_sig] {
        assert!(p1.handle_control(now, &c.encode()).is_err());
    }
    cluster.run(&[&p1], now + SETTLE_MS);
    assert_eq!(token(&p1, b"k-0001").unwrap(), good);
}

//! Known answers for the hybrid key exchange (issue 17), from published
//! test vectors taken as facts (tests/vectors/):
//!
//! - ML-KEM-768 (FIPS 203) key generation, encapsulation and decapsulation
//!   through `exchange::hybrid`, against the X-Wing draft's vectors
//!   (draft-connolly-cfrg-xwing-kem-06, appendix C; as shipped in the
//!   RustCrypto `x-wing` 0.1.1 crate): an X-Wing key pair is ML-KEM-768's
//!   from the first 64 bytes of SHAKE-256(seed), and an X-Wing ciphertext
//!   starts with ML-KEM-768's for the first 32 bytes of its randomness. The
//!   X-Wing shared secret, SHA3-256 over ML-KEM's secret and the X25519
//!   parts, then checks ML-KEM's shared secret too.
//! - The combiner: Noise's pre-shared-key mixing, in exactly the patterns
//!   and positions the engine uses (`XXpsk3` for sessions, `Xpsk1` for
//!   envelopes), run through the engine's own handshake builder and
//!   envelope function (its randomness feeds the ephemeral keys), against
//!   the cacophony vectors for those patterns.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::cast_possible_truncation
)]

use kafka_e2ee_core::exchange::hybrid::{self, KemKey};
use kafka_e2ee_core::exchange::{mailbox, session};
use serde_json::Value;
use sha3::digest::{ExtendableOutput, Update, XofReader};
use sha3::{Digest, Sha3_256, Shake256};
use zeroize::Zeroizing;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn vectors(name: &str) -> Value {
    let path = format!("{}/../tests/vectors/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn ml_kem_768_matches_the_x_wing_draft_vectors() {
    let all = vectors("xwing-draft-06.json");
    let all = all.as_array().unwrap();
    assert_eq!(all.len(), 3);
    for v in all {
        let field = |k: &str| hex(v[k].as_str().unwrap());
        let (seed, pk, eseed, ct, ss) = (
            field("seed"),
            field("pk"),
            field("eseed"),
            field("ct"),
            field("ss"),
        );
        assert_eq!(pk.len(), hybrid::EK_LEN + 32);
        assert_eq!(ct.len(), hybrid::CT_LEN + 32);
        let mut expanded = [0u8; 96];
        let mut xof = Shake256::default();
        xof.update(&seed);
        xof.finalize_xof().read(&mut expanded);

        let d_z: [u8; 64] = expanded[..64].try_into().unwrap();
        let key = KemKey::from_seed(&d_z);
        assert_eq!(key.public(), pk[..hybrid::EK_LEN], "ML-KEM-768 KeyGen");

        let m = Zeroizing::new(<[u8; 32]>::try_from(&eseed[..32]).unwrap());
        let (kem_ct, kem_ss) = hybrid::encapsulate(&pk[..hybrid::EK_LEN], &m).unwrap();
        assert_eq!(kem_ct, ct[..hybrid::CT_LEN], "ML-KEM-768 Encaps");
        assert_eq!(
            *key.decapsulate(&kem_ct).unwrap(),
            *kem_ss,
            "ML-KEM-768 Decaps"
        );

        // X-Wing's combiner over ML-KEM's secret: equal only if ML-KEM's
        // shared secret is the vector's.
        let sk_x: [u8; 32] = expanded[64..].try_into().unwrap();
        let pk_x = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(sk_x));
        assert_eq!(pk_x.as_bytes(), &pk[hybrid::EK_LEN..]);
        let ek_x = x25519_dalek::StaticSecret::from(<[u8; 32]>::try_from(&eseed[32..]).unwrap());
        let ct_x = x25519_dalek::PublicKey::from(&ek_x);
        assert_eq!(ct_x.as_bytes(), &ct[hybrid::CT_LEN..]);
        let ss_x = ek_x.diffie_hellman(&pk_x);
        let mut h = Sha3_256::new();
        Digest::update(&mut h, *kem_ss);
        Digest::update(&mut h, ss_x.as_bytes());
        Digest::update(&mut h, ct_x.as_bytes());
        Digest::update(&mut h, pk_x.as_bytes());
        Digest::update(&mut h, b"\\.//^\\");
        assert_eq!(h.finalize().as_slice(), &ss[..], "X-Wing shared secret");
    }
}

#[test]
fn a_malformed_or_tampered_kem_message_yields_no_secret_of_the_sender() {
    let key = KemKey::from_seed(&[7; 64]);
    let ek = key.public();
    let m = Zeroizing::new([9u8; 32]);
    let (ct, ss) = hybrid::encapsulate(&ek, &m).unwrap();
    // Wrong lengths are refused, never a panic.
    assert!(hybrid::encapsulate(&ek[..100], &m).is_err());
    assert!(key.decapsulate(&ct[..100]).is_err());
    // An encapsulation key that fails FIPS 203's modulus check is refused.
    let mut bad = ek.clone();
    bad[0] = 0xff;
    bad[1] = 0xff;
    assert!(hybrid::encapsulate(&bad, &m).is_err());
    // A flipped ciphertext bit gives an unrelated secret (implicit
    // rejection): the handshake fails at its next authentication.
    let mut flipped = ct.clone();
    flipped[5] ^= 1;
    assert_ne!(*key.decapsulate(&flipped).unwrap(), *ss);
}

/// Runs one cacophony vector through `session::build` and snow.
fn run_noise_vector(v: &Value, psk_location: usize) {
    let field = |k: &str| hex(v[k].as_str().unwrap());
    let pattern = v["protocol_name"].as_str().unwrap();
    let seed = |k: &str| {
        let mut s = Zeroizing::new([0u8; 64]);
        s[..32].copy_from_slice(&field(k));
        s
    };
    let key = |k: &str| <[u8; 32]>::try_from(field(k)).unwrap();
    let one_way = !pattern.starts_with("Noise_XX");
    let resp_static = key("resp_static");
    let resp_public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(resp_static));
    let mut init = session::build(
        pattern,
        true,
        &key("init_static"),
        one_way.then_some(resp_public.as_bytes()),
        &field("init_prologue"),
        seed("init_ephemeral"),
    )
    .unwrap();
    let mut resp = session::build(
        pattern,
        false,
        &resp_static,
        None,
        &field("resp_prologue"),
        seed(if one_way {
            "init_ephemeral"
        } else {
            "resp_ephemeral"
        }),
    )
    .unwrap();
    let psk = hex(v["init_psks"][0].as_str().unwrap());
    init.set_psk(psk_location, &psk).unwrap();
    resp.set_psk(psk_location, &psk).unwrap();
    let messages = v["messages"].as_array().unwrap();
    let rounds = if one_way { 1 } else { 3 };
    for (i, msg) in messages.iter().take(rounds).enumerate() {
        let payload = hex(msg["payload"].as_str().unwrap());
        let expected = hex(msg["ciphertext"].as_str().unwrap());
        let (w, r) = if i % 2 == 0 {
            (&mut init, &mut resp)
        } else {
            (&mut resp, &mut init)
        };
        let mut out = vec![0u8; 65535];
        let n = w.write_message(&payload, &mut out).unwrap();
        assert_eq!(out[..n], expected[..], "{pattern} message {i}");
        let mut back = vec![0u8; 65535];
        let m = r.read_message(&out[..n], &mut back).unwrap();
        assert_eq!(back[..m], payload[..]);
    }
    assert_eq!(init.get_handshake_hash(), &field("handshake_hash")[..]);
}

#[test]
fn the_combiner_is_noise_psk_mixing_as_published() {
    let all = vectors("noise-psk-cacophony.json");
    let list = all["vectors"].as_array().unwrap();
    let xx = list
        .iter()
        .find(|v| v["protocol_name"] == hybrid::NOISE_PARAMS_HYBRID)
        .expect("a vector of the session pattern");
    run_noise_vector(xx, hybrid::PSK_LOCATION);
}

#[test]
fn the_envelope_combiner_is_noise_xpsk1_as_published() {
    let all = vectors("noise-psk-cacophony.json");
    let v = all["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["protocol_name"] == mailbox::ENVELOPE_NOISE_HYBRID)
        .expect("a vector of the envelope pattern")
        .clone();
    run_noise_vector(&v, mailbox::ENVELOPE_PSK_LOCATION);
    // And through the function the engine seals and opens envelopes with.
    let field = |k: &str| hex(v[k].as_str().unwrap());
    let key = |k: &str| <[u8; 32]>::try_from(field(k)).unwrap();
    let psk = <[u8; 32]>::try_from(hex(v["init_psks"][0].as_str().unwrap())).unwrap();
    let resp_public =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(key("resp_static")));
    let mut seed = Zeroizing::new([0u8; 64]);
    seed[..32].copy_from_slice(&field("init_ephemeral"));
    let prologue = field("init_prologue");
    let mut init = session::one_way(
        true,
        &key("init_static"),
        Some(resp_public.as_bytes()),
        &prologue,
        seed,
        Some(&psk),
    )
    .unwrap();
    let msg = &v["messages"][0];
    let payload = hex(msg["payload"].as_str().unwrap());
    let mut out = vec![0u8; 65535];
    let n = init.write_message(&payload, &mut out).unwrap();
    assert_eq!(out[..n], hex(msg["ciphertext"].as_str().unwrap())[..]);
    let mut resp = session::one_way(
        false,
        &key("resp_static"),
        None,
        &prologue,
        Zeroizing::new([1; 64]),
        Some(&psk),
    )
    .unwrap();
    let mut back = vec![0u8; 65535];
    let m = resp.read_message(&out[..n], &mut back).unwrap();
    assert_eq!(back[..m], payload[..]);
    // Another psk (the attacker's guess of the ML-KEM secret): nothing.
    let mut wrong = session::one_way(
        false,
        &key("resp_static"),
        None,
        &prologue,
        Zeroizing::new([1; 64]),
        Some(&[0; 32]),
    )
    .unwrap();
    assert!(wrong.read_message(&out[..n], &mut back).is_err());
}

/// The CPU a handshake costs both sides together, classical and hybrid
/// (docs/PERFORMANCE.md): Noise XX or XXpsk3 through the engine's builder,
/// with the ML-KEM-768 key generation, encapsulation and decapsulation the
/// engine does. Run with `cargo test --release -p kafka-e2ee-core --test
/// hybrid_kem handshake_cpu -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; prints figures"]
fn handshake_cpu() {
    use kafka_e2ee_core::format::InstanceId;
    let (a, b) = (InstanceId([1; 8]), InstanceId([2; 8]));
    let run = |hybrid: bool, i: u8| {
        let seed = |x: u8| Zeroizing::new([x ^ i; 64]);
        let mut init = session::new_handshake(true, hybrid, &[3; 32], a, b, seed(4)).unwrap();
        let mut resp = session::new_handshake(false, hybrid, &[5; 32], a, b, seed(6)).unwrap();
        let mut buf = vec![0u8; 4096];
        let mut back = vec![0u8; 4096];
        let kem = hybrid.then(|| KemKey::from_handshake_seed(&seed(4)));
        let p1 = kem.as_ref().map(KemKey::public).unwrap_or_default();
        let n = init.write_message(&p1, &mut buf).unwrap();
        let m = resp.read_message(&buf[..n], &mut back).unwrap();
        let mut p2 = vec![7u8; 300]; // a credential
        if hybrid {
            let (ct, ss) = hybrid::encapsulate(&back[..m], &Zeroizing::new([8; 32])).unwrap();
            resp.set_psk(hybrid::PSK_LOCATION, &*ss).unwrap();
            p2 = [ct, p2].concat();
        }
        let n = resp.write_message(&p2, &mut buf).unwrap();
        let m = init.read_message(&buf[..n], &mut back).unwrap();
        if let Some(kem) = &kem {
            let ss = kem.decapsulate(&back[..hybrid::CT_LEN]).unwrap();
            init.set_psk(hybrid::PSK_LOCATION, &*ss).unwrap();
        }
        let _ = m;
        let n = init.write_message(&[9u8; 300], &mut buf).unwrap();
        resp.read_message(&buf[..n], &mut back).unwrap();
        assert!(init.is_handshake_finished() && resp.is_handshake_finished());
    };
    for hybrid in [false, true] {
        let rounds = 300u32;
        let t = std::time::Instant::now();
        for i in 0..rounds {
            run(hybrid, i as u8);
        }
        let per = t.elapsed() / rounds;
        println!(
            "{} handshake, both sides: {} us",
            if hybrid {
                "hybrid XXpsk3"
            } else {
                "classical XX"
            },
            per.as_micros()
        );
    }
    let key = KemKey::from_seed(&[1; 64]);
    let ek = key.public();
    let rounds = 1000u32;
    let t = std::time::Instant::now();
    for i in 0..rounds {
        let mut s = [0u8; 64];
        s[0] = i as u8;
        std::hint::black_box(KemKey::from_seed(&s).public());
    }
    println!(
        "ML-KEM-768 keygen: {} us",
        (t.elapsed() / rounds).as_micros()
    );
    let t = std::time::Instant::now();
    let mut ct = Vec::new();
    for i in 0..rounds {
        ct = hybrid::encapsulate(&ek, &Zeroizing::new([i as u8; 32]))
            .unwrap()
            .0;
    }
    println!(
        "ML-KEM-768 encaps: {} us",
        (t.elapsed() / rounds).as_micros()
    );
    let t = std::time::Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(key.decapsulate(&ct).unwrap());
    }
    println!(
        "ML-KEM-768 decaps: {} us",
        (t.elapsed() / rounds).as_micros()
    );
}

/// CPU per envelope (docs/PERFORMANCE.md, issue 17): sealing (Noise `X` or
/// `Xpsk1`, plus the encapsulation) and opening (plus the decapsulation),
/// with a 300-byte credential and one topic key as the payload. Run with
/// `cargo test --release -p kafka-e2ee-core --test hybrid_kem envelope_cpu
/// -- --ignored --nocapture`.
#[test]
#[ignore = "a measurement; prints figures"]
fn envelope_cpu() {
    let prekey_private = [5u8; 32];
    let prekey =
        x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(prekey_private)).to_bytes();
    let kem = KemKey::from_seed(&[1; 64]);
    let ek = kem.public();
    let payload = [7u8; 300 + 150];
    for hybrid in [false, true] {
        let rounds = 500u32;
        let (mut seal, mut open) = (std::time::Duration::ZERO, std::time::Duration::ZERO);
        for i in 0..rounds {
            let seed = Zeroizing::new([i as u8; 64]);
            let t = std::time::Instant::now();
            let (ct, psk) = if hybrid {
                let (ct, ss) = hybrid::encapsulate(&ek, &Zeroizing::new([i as u8; 32])).unwrap();
                (ct, Some(ss))
            } else {
                (Vec::new(), None)
            };
            let mut init =
                session::one_way(true, &[3; 32], Some(&prekey), &ct, seed, psk.as_deref()).unwrap();
            let mut buf = vec![0u8; 2048];
            let n = init.write_message(&payload, &mut buf).unwrap();
            seal += t.elapsed();
            let t = std::time::Instant::now();
            let psk = hybrid.then(|| kem.decapsulate(&ct).unwrap());
            let mut resp = session::one_way(
                false,
                &prekey_private,
                None,
                &ct,
                Zeroizing::new([9; 64]),
                psk.as_deref(),
            )
            .unwrap();
            let mut back = vec![0u8; 2048];
            resp.read_message(&buf[..n], &mut back).unwrap();
            open += t.elapsed();
        }
        println!(
            "{} envelope: seal {} us, open {} us",
            if hybrid {
                "hybrid Xpsk1"
            } else {
                "classical X"
            },
            (seal / rounds).as_micros(),
            (open / rounds).as_micros()
        );
    }
}

//! Credentials, trust anchors and policy: the properties the key exchange
//! relies on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kafka_e2ee_core::trust::{
    Authority, Credential, Identity, TopicPattern, TrustAnchor, TrustError, DEFAULT_SKEW_MS,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

const NOW: u64 = 1_750_000_000_000;
const DAY: u64 = 86_400_000;

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn pats(list: &[&str]) -> Vec<TopicPattern> {
    list.iter()
        .map(|s| TopicPattern::parse(s).unwrap())
        .collect()
}

fn setup() -> (Authority, Identity, TrustAnchor) {
    let mut r = rng(1);
    let authority = Authority::generate(&mut r);
    let id = Identity::generate(
        "orders-writer",
        pats(&["orders.*"]),
        pats(&["audit"]),
        NOW - DAY,
        NOW + 90 * DAY,
        &authority,
        &mut r,
    );
    let anchor = TrustAnchor::from_authorities(vec![authority.public_key()]);
    (authority, id, anchor)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn issued_credential_verifies() {
    let (_, id, anchor) = setup();
    anchor
        .verify(id.credential(), NOW, DEFAULT_SKEW_MS)
        .unwrap();
    assert_eq!(id.public_key(), id.credential().public_key());
    assert!(id.credential().may_produce("orders.eu"));
    assert!(!id.credential().may_produce("audit"));
    assert!(id.credential().may_consume("audit"));
    assert!(!id.credential().may_consume("orders.eu"));
}

#[test]
fn every_single_bit_flip_fails() {
    let (_, id, anchor) = setup();
    let bytes = id.credential().encode();
    for i in 0..bytes.len() * 8 {
        let mut b = bytes.clone();
        b[i / 8] ^= 1 << (i % 8);
        if let Ok(c) = Credential::decode(&b) {
            assert!(
                anchor.verify(&c, NOW, DEFAULT_SKEW_MS).is_err(),
                "bit {i} flipped and still verified"
            );
        }
    }
}

#[test]
fn wrong_authority_rejected() {
    let (authority, id, anchor) = setup();
    let other = Authority::generate(&mut rng(2));
    let other_anchor = TrustAnchor::from_authorities(vec![other.public_key()]);
    assert!(matches!(
        other_anchor.verify(id.credential(), NOW, 0),
        Err(TrustError::UnknownAuthority { .. })
    ));
    // Signed by another authority, with the issuer field rewritten to claim
    // the trusted one: a bad signature.
    let forged = other.issue("x", id.public_key(), pats(&["*"]), vec![], 0, u64::MAX);
    let mut bytes = forged.encode();
    let issuer_at = bytes.len() - 64 - 32;
    bytes[issuer_at..issuer_at + 32].copy_from_slice(&authority.public_key());
    let forged = Credential::decode(&bytes).unwrap();
    assert_eq!(
        anchor.verify(&forged, NOW, 0),
        Err(TrustError::BadSignature)
    );
}

#[test]
fn validity_window_and_skew() {
    let mut r = rng(3);
    let authority = Authority::generate(&mut r);
    let anchor = TrustAnchor::from_authorities(vec![authority.public_key()]);
    let nb = NOW;
    let exp = NOW + DAY;
    let id = Identity::generate("c", pats(&["*"]), vec![], nb, exp, &authority, &mut r);
    let c = id.credential();
    let skew = DEFAULT_SKEW_MS;
    // Not yet valid, without skew and beyond the skew.
    assert!(matches!(
        anchor.verify(c, nb - 1, 0),
        Err(TrustError::NotYetValid { .. })
    ));
    assert!(matches!(
        anchor.verify(c, nb - skew - 1, skew),
        Err(TrustError::NotYetValid { .. })
    ));
    // Within the skew before not_before: accepted.
    anchor.verify(c, nb - skew, skew).unwrap();
    anchor.verify(c, nb, 0).unwrap();
    anchor.verify(c, exp - 1, 0).unwrap();
    // Expiry is strict: skew does not extend it.
    assert!(matches!(
        anchor.verify(c, exp, 0),
        Err(TrustError::Expired { .. })
    ));
    assert!(matches!(
        anchor.verify(c, exp, skew),
        Err(TrustError::Expired { .. })
    ));
    assert!(matches!(
        anchor.verify(c, exp + 1, skew),
        Err(TrustError::Expired { .. })
    ));
    assert!(c.is_valid_at(nb, 0) && !c.is_valid_at(exp, skew));
    // No overflow at the edges.
    assert!(c.is_valid_at(nb, u64::MAX));
    assert!(!c.is_valid_at(u64::MAX, u64::MAX));
}

#[test]
fn deny_list_wins() {
    let (_, id, mut anchor) = setup();
    anchor.add_pinned(id.credential().clone());
    anchor.add_deny(id.public_key());
    assert!(anchor.is_denied(&id.public_key()));
    assert!(matches!(
        anchor.verify(id.credential(), NOW, DEFAULT_SKEW_MS),
        Err(TrustError::Denied { .. })
    ));
    // Denial survives the trust file.
    let back = TrustAnchor::from_file_bytes(&anchor.to_file_bytes()).unwrap();
    assert_eq!(back, anchor);
    assert!(matches!(
        back.verify(id.credential(), NOW, DEFAULT_SKEW_MS),
        Err(TrustError::Denied { .. })
    ));
}

#[test]
fn pinned_trust() {
    let public_key = [7u8; 32];
    let c = Credential::new_unsigned("pinned-app", public_key, pats(&["t"]), vec![], 0, u64::MAX)
        .unwrap();
    assert!(c.is_unsigned());
    let anchor = TrustAnchor::pinned(vec![c.clone()]);
    anchor.verify(&c, NOW, 0).unwrap();
    // Any other credential, even for the same key, is not trusted.
    let wider =
        Credential::new_unsigned("pinned-app", public_key, pats(&["*"]), vec![], 0, u64::MAX)
            .unwrap();
    assert!(matches!(
        anchor.verify(&wider, NOW, 0),
        Err(TrustError::NotPinned { .. })
    ));
    // Unsigned credentials are not trusted by authorities alone.
    let (authority, id, _) = setup();
    let by_authority = TrustAnchor::from_authorities(vec![authority.public_key()]);
    assert!(matches!(
        by_authority.verify(&c, NOW, 0),
        Err(TrustError::NotPinned { .. })
    ));
    // A signed credential can be pinned without trusting its authority.
    let pin_signed = TrustAnchor::pinned(vec![id.credential().clone()]);
    pin_signed.verify(id.credential(), NOW, 0).unwrap();
    // Pinned credentials still expire.
    let short = Credential::new_unsigned("s", public_key, vec![], vec![], 0, NOW).unwrap();
    assert!(matches!(
        TrustAnchor::pinned(vec![short.clone()]).verify(&short, NOW, 0),
        Err(TrustError::Expired { .. })
    ));
}

#[test]
fn identity_keys() {
    let (_, id, _) = setup();
    let sk = id.private_key_bytes();
    let secret = x25519_dalek::StaticSecret::from(*sk);
    assert_eq!(
        x25519_dalek::PublicKey::from(&secret).to_bytes(),
        id.public_key()
    );
    let state = id.state_key();
    assert_ne!(*state, [0u8; 32]);
    assert_ne!(*state, *sk);
    // Deterministic: the same private key gives the same state key.
    let back = Identity::from_file_bytes(&id.to_file_bytes()).unwrap();
    assert_eq!(*back.state_key(), *state);
    // Independent check of the HKDF derivation.
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, &*sk);
    let mut expect = [0u8; 32];
    hk.expand(b"kafka-e2ee/v1/state-at-rest", &mut expect)
        .unwrap();
    assert_eq!(*state, expect);
}

#[test]
fn key_mismatch_rejected() {
    let (authority, id, _) = setup();
    let other = Identity::generate("o", vec![], vec![], 0, 1, &authority, &mut rng(9));
    let text = format!(
        "kafka-e2ee-credential v1\nprivate-key: {}\ncredential: {}\n",
        STANDARD.encode(*other.private_key_bytes()),
        STANDARD.encode(id.credential().encode())
    );
    assert_eq!(
        Identity::from_file_bytes(text.as_bytes()).unwrap_err(),
        TrustError::KeyMismatch
    );
}

#[test]
fn invalid_attributes() {
    let authority = Authority::generate(&mut rng(4));
    assert!(matches!(
        authority.try_issue("", [1; 32], vec![], vec![], 0, 1),
        Err(TrustError::InvalidName { .. })
    ));
    assert!(matches!(
        authority.try_issue("a\nb", [1; 32], vec![], vec![], 0, 1),
        Err(TrustError::InvalidName { .. })
    ));
    assert!(matches!(
        authority.try_issue(&"n".repeat(256), [1; 32], vec![], vec![], 0, 1),
        Err(TrustError::InvalidName { .. })
    ));
    let many = vec![TopicPattern::all(); 65];
    assert!(matches!(
        authority.try_issue("n", [1; 32], many.clone(), vec![], 0, 1),
        Err(TrustError::TooManyPatterns { count: 65 })
    ));
    // The infallible form makes the input acceptable and still verifies.
    let c = authority.issue("a\nb", [1; 32], many, vec![], 0, u64::MAX);
    assert_eq!(c.name(), "a?b");
    assert_eq!(c.produce().len(), 64);
    let anchor = TrustAnchor::from_authorities(vec![authority.public_key()]);
    anchor
        .verify(&Credential::decode(&c.encode()).unwrap(), NOW, 0)
        .unwrap();
}

#[test]
fn debug_never_shows_secrets() {
    let (authority, id, _) = setup();
    let sk = id.private_key_bytes();
    let id_debug = format!("{id:?} {id:#?}");
    assert!(!id_debug.contains(&hex(&*sk)));
    assert!(!id_debug.contains(&STANDARD.encode(*sk)));
    assert!(!id_debug.contains(&format!("{:?}", *sk)));
    assert!(id_debug.contains("redacted"));

    let file = authority.to_file_bytes();
    let text = std::str::from_utf8(&file).unwrap();
    let seed_b64 = text
        .lines()
        .find_map(|l| l.strip_prefix("signing-key: "))
        .unwrap();
    let seed = STANDARD.decode(seed_b64).unwrap();
    let a_debug = format!("{authority:?} {authority:#?}");
    assert!(!a_debug.contains(seed_b64));
    assert!(!a_debug.contains(&hex(&seed)));
    assert!(!a_debug.contains(&format!("{seed:?}")));
    assert!(a_debug.contains("redacted"));
}

#[test]
fn errors_never_show_secrets() {
    let (_, id, _) = setup();
    let sk_b64 = STANDARD.encode(*id.private_key_bytes());
    // A private key pasted where a field name belongs, or with a bad length.
    for text in [
        format!("kafka-e2ee-credential v1\n{sk_b64}\n"),
        format!("kafka-e2ee-credential v1\n{sk_b64}: x\n"),
        format!("kafka-e2ee-credential v1\nprivate-key: {sk_b64}A\n"),
        format!("kafka-e2ee-credential v1\nprivate-key: {sk_b64}\n"),
    ] {
        let e = Identity::from_file_bytes(text.as_bytes()).unwrap_err();
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(&sk_b64[..20]), "{shown}");
    }
}

#[test]
fn fingerprint_format() {
    let (_, id, _) = setup();
    let f = id.credential().fingerprint();
    assert_eq!(f.len(), 39);
    assert_eq!(f.split(':').count(), 8);
    assert!(f.chars().all(|c| c == ':' || c.is_ascii_hexdigit()));
}

// ---- version 2: the certified Ed25519 signing key ---------------------------

const CTX: &[u8] = b"kafka-e2ee/test/statement";

/// The signing key seed, derived independently of the library.
fn expected_signing_key(private_key: &[u8; 32]) -> [u8; 32] {
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, private_key);
    let mut seed = [0u8; 32];
    hk.expand(b"kafka-e2ee/v2/signing-key", &mut seed).unwrap();
    ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes()
}

/// Where the signing key starts in a version 2 encoding.
fn signing_key_offset(c: &Credential) -> usize {
    4 + 1 + 1 + c.name().len() + 32
}

#[test]
fn generated_identities_are_version_2() {
    let (authority, id, anchor) = setup();
    let c = id.credential();
    assert_eq!(c.version(), 2);
    assert!(id.has_signing_key());
    assert_eq!(c.signing_key(), Some(id.signing_public_key()));
    assert_eq!(
        id.signing_public_key(),
        expected_signing_key(&id.private_key_bytes())
    );
    assert_eq!(c.encode()[4], 2);
    // The signing key is deterministic: the credential file round-trips it.
    let back = Identity::from_file_bytes(&id.to_file_bytes()).unwrap();
    assert_eq!(back.signing_public_key(), id.signing_public_key());
    assert_eq!(back.credential(), c);
    // Distinct from the X25519 key and from the state key.
    assert_ne!(id.signing_public_key(), id.public_key());
    assert_ne!(id.signing_public_key(), *id.state_key());
    // try_generate and try_generate_unsigned too.
    let t = Identity::try_generate(
        "t",
        pats(&["*"]),
        vec![],
        0,
        u64::MAX,
        &authority,
        &mut rng(5),
    )
    .unwrap();
    assert_eq!(t.credential().signing_key(), Some(t.signing_public_key()));
    anchor.verify(t.credential(), NOW, 0).unwrap();
    let u = Identity::try_generate_unsigned("u", pats(&["*"]), vec![], 0, u64::MAX, &mut rng(6))
        .unwrap();
    assert_eq!(u.credential().version(), 2);
    assert_eq!(u.credential().signing_key(), Some(u.signing_public_key()));
    TrustAnchor::pinned(vec![u.credential().clone()])
        .verify(u.credential(), NOW, 0)
        .unwrap();
}

/// The encodings, built field by field from docs/TRUST.md.
#[test]
fn binary_layout_v1_and_v2() {
    let produce = pats(&["orders.*"]);
    let consume = pats(&["audit", "*"]);
    let layout = |version: u8, signing_key: Option<[u8; 32]>| {
        let mut b = b"KE2C".to_vec();
        b.push(version);
        b.push(3);
        b.extend_from_slice(b"app");
        b.extend_from_slice(&[7; 32]);
        if let Some(k) = signing_key {
            b.extend_from_slice(&k);
        }
        b.extend_from_slice(b"\x01\x08orders.*\x02\x05audit\x01*");
        b.extend_from_slice(&5u64.to_be_bytes());
        b.extend_from_slice(&9u64.to_be_bytes());
        b
    };
    let v1 =
        Credential::new_unsigned("app", [7; 32], produce.clone(), consume.clone(), 5, 9).unwrap();
    let mut expect = layout(1, None);
    expect.extend_from_slice(&[0; 96]);
    assert_eq!(v1.encode(), expect);
    assert_eq!(v1.version(), 1);
    assert_eq!(v1.signing_key(), None);
    let v2 = Credential::new_unsigned_v2(
        "app",
        [7; 32],
        [8; 32],
        produce.clone(),
        consume.clone(),
        5,
        9,
    )
    .unwrap();
    let mut expect = layout(2, Some([8; 32]));
    expect.extend_from_slice(&[0; 96]);
    assert_eq!(v2.encode(), expect);
    assert_eq!(v2.encode().len(), v1.encode().len() + 32);
    assert_eq!(v2.signing_key(), Some([8; 32]));
    for c in [&v1, &v2] {
        assert_eq!(&Credential::decode(&c.encode()).unwrap(), c);
    }

    // Signed: the signature covers the whole body, signing key included.
    let authority = Authority::generate(&mut rng(10));
    let signed = authority
        .try_issue_v2(
            "app",
            [7; 32],
            [8; 32],
            produce.clone(),
            consume.clone(),
            5,
            9,
        )
        .unwrap();
    let mut body = layout(2, Some([8; 32]));
    body.extend_from_slice(&authority.public_key());
    let bytes = signed.encode();
    assert_eq!(&bytes[..bytes.len() - 64], &body[..]);
    let mut msg = b"kafka-e2ee/v1/credential".to_vec();
    msg.extend_from_slice(&body);
    let sig_bytes: [u8; 64] = bytes[bytes.len() - 64..].try_into().unwrap();
    let sig = ed25519_dalek::Signature::from_bytes(&sig_bytes);
    ed25519_dalek::VerifyingKey::from_bytes(&authority.public_key())
        .unwrap()
        .verify_strict(&msg, &sig)
        .unwrap();
    // The v1 issuers are unchanged.
    let signed_v1 = authority
        .try_issue("app", [7; 32], produce.clone(), consume.clone(), 5, 9)
        .unwrap();
    assert_eq!(signed_v1.version(), 1);
    let mut body = layout(1, None);
    body.extend_from_slice(&authority.public_key());
    assert_eq!(&signed_v1.encode()[..body.len()], &body[..]);
    assert_eq!(
        authority.issue("app", [7; 32], produce.clone(), consume.clone(), 5, 9),
        signed_v1
    );
    assert_eq!(
        authority.issue_v2("app", [7; 32], [8; 32], produce, consume, 5, 9),
        signed
    );
}

#[test]
fn unknown_versions_rejected() {
    let (_, id, _) = setup();
    let mut bytes = id.credential().encode();
    for v in [0u8, 3, 255] {
        bytes[4] = v;
        assert_eq!(
            Credential::decode(&bytes),
            Err(TrustError::UnsupportedCredentialVersion { found: v })
        );
    }
}

#[test]
fn signing_key_bit_flips_fail_authority_verification() {
    let (_, id, anchor) = setup();
    let c = id.credential();
    let bytes = c.encode();
    let at = signing_key_offset(c);
    assert_eq!(&bytes[at..at + 32], &c.signing_key().unwrap());
    for bit in 0..256 {
        let mut b = bytes.clone();
        b[at + bit / 8] ^= 1 << (bit % 8);
        let flipped = Credential::decode(&b).unwrap();
        assert_ne!(flipped.signing_key(), c.signing_key());
        assert_eq!(
            anchor.verify(&flipped, NOW, 0),
            Err(TrustError::BadSignature),
            "bit {bit}"
        );
    }
}

#[test]
fn from_parts_checks_the_signing_key() {
    let (authority, id, _) = setup();
    let other = Identity::generate("o", vec![], vec![], 0, u64::MAX, &authority, &mut rng(11));
    // Right X25519 key, someone else's signing key.
    let wrong = authority.issue_v2(
        "orders-writer",
        id.public_key(),
        other.signing_public_key(),
        vec![],
        vec![],
        0,
        u64::MAX,
    );
    assert_eq!(
        Identity::from_parts(id.private_key_bytes(), wrong.clone()).unwrap_err(),
        TrustError::KeyMismatch
    );
    let text = format!(
        "kafka-e2ee-credential v1\nprivate-key: {}\ncredential: {}\n",
        STANDARD.encode(*id.private_key_bytes()),
        STANDARD.encode(wrong.encode())
    );
    assert_eq!(
        Identity::from_file_bytes(text.as_bytes()).unwrap_err(),
        TrustError::KeyMismatch
    );
    // The right one is accepted.
    let right = authority.issue_v2(
        "orders-writer",
        id.public_key(),
        id.signing_public_key(),
        vec![],
        vec![],
        0,
        u64::MAX,
    );
    let again = Identity::from_parts(id.private_key_bytes(), right).unwrap();
    assert!(again.has_signing_key());
    // A version 1 credential (no signing key) is still accepted.
    let v1 = authority.issue(
        "orders-writer",
        id.public_key(),
        vec![],
        vec![],
        0,
        u64::MAX,
    );
    let old = Identity::from_parts(id.private_key_bytes(), v1.clone()).unwrap();
    assert!(!old.has_signing_key());
    assert_eq!(old.credential(), &v1);
    // It still derives the same signing key, it is just not certified.
    assert_eq!(old.signing_public_key(), id.signing_public_key());
    // And an old credential file round-trips byte for byte.
    let back = Identity::from_file_bytes(&old.to_file_bytes()).unwrap();
    assert_eq!(back.credential().encode(), v1.encode());
}

#[test]
fn statements_sign_and_verify() {
    let (authority, id, _) = setup();
    let c = id.credential();
    let sig = id.sign_statement(CTX, b"prekey 1");
    assert!(c.verify_statement(CTX, b"prekey 1", &sig));
    // Deterministic (Ed25519).
    assert_eq!(id.sign_statement(CTX, b"prekey 1"), sig);
    // Wrong context, message, signature or key.
    assert!(!c.verify_statement(b"kafka-e2ee/test/other", b"prekey 1", &sig));
    assert!(!c.verify_statement(CTX, b"prekey 2", &sig));
    assert!(!c.verify_statement(CTX, b"", &sig));
    for i in [0, 31, 32, 63] {
        let mut bad = sig;
        bad[i] ^= 1;
        assert!(!c.verify_statement(CTX, b"prekey 1", &bad), "byte {i}");
    }
    let other = Identity::generate("o", vec![], vec![], 0, u64::MAX, &authority, &mut rng(12));
    assert!(!other.credential().verify_statement(CTX, b"prekey 1", &sig));
    assert!(!c.verify_statement(CTX, b"prekey 1", &other.sign_statement(CTX, b"prekey 1")));
    // The signature is plain Ed25519 over context || message.
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&id.signing_public_key()).unwrap();
    let mut msg = CTX.to_vec();
    msg.extend_from_slice(b"prekey 1");
    vk.verify_strict(&msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .unwrap();
    // Survives the binary encoding.
    let decoded = Credential::decode(&c.encode()).unwrap();
    assert!(decoded.verify_statement(CTX, b"prekey 1", &sig));
}

#[test]
fn version_1_credentials_verify_no_statements() {
    let (authority, id, anchor) = setup();
    let v1 = authority.issue("old", id.public_key(), pats(&["*"]), vec![], 0, u64::MAX);
    anchor.verify(&v1, NOW, 0).unwrap();
    let old = Identity::from_parts(id.private_key_bytes(), v1).unwrap();
    let sig = old.sign_statement(CTX, b"m");
    assert!(!old.credential().verify_statement(CTX, b"m", &sig));
    // An unusable signing key (not a curve point) verifies nothing either.
    let mut bad_key = [0xffu8; 32];
    bad_key[31] = 0x7f;
    let bad = Credential::new_unsigned_v2("b", [1; 32], bad_key, vec![], vec![], 0, 1).unwrap();
    assert!(!bad.verify_statement(CTX, b"m", &[0; 64]));
    // Nor does an all-zero (small-order) key accept an all-zero signature.
    let zero = Credential::new_unsigned_v2("z", [1; 32], [0; 32], vec![], vec![], 0, 1).unwrap();
    assert!(!zero.verify_statement(CTX, b"m", &[0; 64]));
}

#[test]
fn debug_shows_the_signing_key_fingerprint() {
    let (authority, id, _) = setup();
    let shown = format!("{:?}", id.credential());
    let fp = kafka_e2ee_core::trust::fingerprint(&id.signing_public_key());
    assert!(shown.contains(&fp), "{shown}");
    assert_eq!(id.credential().signing_key_fingerprint(), Some(fp));
    let v1 = authority.issue("old", id.public_key(), vec![], vec![], 0, 1);
    assert!(format!("{v1:?}").contains("none (version 1)"));
    // The derived seed is secret: not in the Identity's Debug.
    let sk = id.private_key_bytes();
    let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, &*sk);
    let mut seed = [0u8; 32];
    hk.expand(b"kafka-e2ee/v2/signing-key", &mut seed).unwrap();
    let id_debug = format!("{id:?} {id:#?}");
    assert!(!id_debug.contains(&hex(&seed)));
    assert!(!id_debug.contains(&format!("{seed:?}")));
    assert!(!id_debug.contains(&STANDARD.encode(seed)));
}

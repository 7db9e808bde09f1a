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

//! Round trips of the binary credential and the three text files, and
//! decoders that never panic on arbitrary input.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kafka_e2ee_core::trust::{
    Authority, Credential, Identity, TopicPattern, TrustAnchor, TrustError,
};
use proptest::prelude::*;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn pattern() -> impl Strategy<Value = TopicPattern> {
    prop_oneof![
        Just(TopicPattern::all()),
        "[a-zA-Z0-9._-]{1,40}\\*?".prop_filter_map("valid", |s| TopicPattern::parse(&s).ok()),
    ]
}

fn credential() -> impl Strategy<Value = Credential> {
    (
        "[^\\p{Cc}]{1,60}",
        any::<[u8; 32]>(),
        prop::collection::vec(pattern(), 0..6),
        prop::collection::vec(pattern(), 0..6),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<bool>(),
        prop::option::of(any::<[u8; 32]>()),
    )
        .prop_map(|(name, pk, produce, consume, nb, exp, seed, signed, sk)| {
            let name: String = name.chars().take(60).collect();
            let name = if name.len() > 255 {
                "n".to_owned()
            } else {
                name
            };
            let a = Authority::generate(&mut ChaCha20Rng::seed_from_u64(seed));
            match (signed, sk) {
                (true, None) => a.try_issue(&name, pk, produce, consume, nb, exp).unwrap(),
                (true, Some(sk)) => a
                    .try_issue_v2(&name, pk, sk, produce, consume, nb, exp)
                    .unwrap(),
                (false, None) => {
                    Credential::new_unsigned(&name, pk, produce, consume, nb, exp).unwrap()
                }
                (false, Some(sk)) => {
                    Credential::new_unsigned_v2(&name, pk, sk, produce, consume, nb, exp).unwrap()
                }
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn credential_round_trip(c in credential()) {
        let bytes = c.encode();
        let back = Credential::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &c);
        prop_assert_eq!(back.encode(), bytes.clone());
        // The version byte says whether a signing key follows the public key.
        let version = if c.signing_key().is_some() { 2 } else { 1 };
        prop_assert_eq!(bytes[4], version);
        prop_assert_eq!(c.version(), version);
    }

    #[test]
    fn v1_and_v2_differ_only_by_the_signing_key(
        name in "[a-z][a-z0-9.-]{0,30}",
        pk in any::<[u8; 32]>(),
        sk in any::<[u8; 32]>(),
        p in prop::collection::vec(pattern(), 0..4),
        nb in any::<u64>(),
        exp in any::<u64>(),
    ) {
        let v1 = Credential::new_unsigned(&name, pk, p.clone(), p.clone(), nb, exp).unwrap();
        let v2 = Credential::new_unsigned_v2(&name, pk, sk, p.clone(), p, nb, exp).unwrap();
        let (b1, b2) = (v1.encode(), v2.encode());
        let at = 4 + 1 + 1 + name.len() + 32;
        prop_assert_eq!(b2[4], 2);
        prop_assert_eq!(&b2[..4], &b1[..4]);
        prop_assert_eq!(&b2[5..at], &b1[5..at]);
        prop_assert_eq!(&b2[at..at + 32], &sk[..]);
        prop_assert_eq!(&b2[at + 32..], &b1[at..]);
    }

    #[test]
    fn trailing_and_truncated_rejected(c in credential(), extra in prop::collection::vec(any::<u8>(), 1..8)) {
        let bytes = c.encode();
        let mut longer = bytes.clone();
        longer.extend_from_slice(&extra);
        prop_assert!(Credential::decode(&longer).is_err());
        for n in 0..bytes.len() {
            prop_assert!(Credential::decode(&bytes[..n]).is_err());
        }
    }

    #[test]
    fn identity_file_round_trip(seed in any::<u64>(), name in "[a-z][a-z0-9 -]{0,30}", p in prop::collection::vec(pattern(), 0..4)) {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let a = Authority::generate(&mut rng);
        let id = Identity::try_generate(&name, p.clone(), p, 0, u64::MAX, &a, &mut rng).unwrap();
        let file = id.to_file_bytes();
        let back = Identity::from_file_bytes(&file).unwrap();
        prop_assert_eq!(back.credential(), id.credential());
        prop_assert_eq!(back.credential().signing_key(), Some(id.signing_public_key()));
        prop_assert_eq!(*back.private_key_bytes(), *id.private_key_bytes());
        // Windows line endings are accepted too.
        let crlf = String::from_utf8(file.to_vec()).unwrap().replace('\n', "\r\n");
        prop_assert_eq!(Identity::from_file_bytes(crlf.as_bytes()).unwrap().public_key(), id.public_key());
    }

    #[test]
    fn authority_file_round_trip(seed in any::<u64>()) {
        let a = Authority::generate(&mut ChaCha20Rng::seed_from_u64(seed));
        let back = Authority::from_file_bytes(&a.to_file_bytes()).unwrap();
        prop_assert_eq!(back.public_key(), a.public_key());
    }

    #[test]
    fn trust_file_round_trip(
        seeds in prop::collection::vec(any::<u64>(), 0..3),
        pinned in prop::collection::vec(credential(), 0..3),
        deny in prop::collection::vec(any::<[u8; 32]>(), 0..3),
    ) {
        prop_assume!(!seeds.is_empty() || !pinned.is_empty());
        let authorities = seeds
            .iter()
            .map(|s| Authority::generate(&mut ChaCha20Rng::seed_from_u64(*s)).public_key())
            .collect();
        let mut anchor = TrustAnchor::from_authorities(authorities);
        for c in pinned {
            anchor.add_pinned(c);
        }
        for d in deny {
            anchor.add_deny(d);
        }
        let back = TrustAnchor::from_file_bytes(&anchor.to_file_bytes()).unwrap();
        prop_assert_eq!(back, anchor);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decoders_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Credential::decode(&bytes);
        let _ = Identity::from_file_bytes(&bytes);
        let _ = TrustAnchor::from_file_bytes(&bytes);
        let _ = Authority::from_file_bytes(&bytes);
        let _ = TopicPattern::parse(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn credential_decoder_never_panics_near_valid(c in credential(), flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4)) {
        let mut bytes = c.encode();
        for (i, v) in flips {
            let i = i.index(bytes.len());
            bytes[i] = v;
        }
        let _ = Credential::decode(&bytes);
    }

    #[test]
    fn text_parsers_never_panic(lines in prop::collection::vec(
        prop_oneof![
            Just("kafka-e2ee-credential v1".to_owned()),
            Just("kafka-e2ee-trust v1".to_owned()),
            Just("kafka-e2ee-authority v1".to_owned()),
            "(private-key|credential|authority|pinned|deny|signing-key|#|x)?:? ?[A-Za-z0-9+/=]{0,60}",
        ],
        0..6,
    )) {
        let text = lines.join("\n");
        let _ = Identity::from_file_bytes(text.as_bytes());
        let _ = TrustAnchor::from_file_bytes(text.as_bytes());
        let _ = Authority::from_file_bytes(text.as_bytes());
    }
}

#[test]
fn file_errors_are_specific() {
    let msg = |r: Result<Identity, TrustError>| r.unwrap_err().to_string();
    assert!(msg(Identity::from_file_bytes(b"")).contains("first line must be"));
    assert!(msg(Identity::from_file_bytes(b"kafka-e2ee-credential v2\n")).contains("version"));
    assert!(msg(Identity::from_file_bytes(b"kafka-e2ee-trust v1\n")).contains("trust file"));
    assert!(msg(Identity::from_file_bytes(
        b"kafka-e2ee-credential v1\nfoo: bar\n"
    ))
    .contains("line 2"));
    assert!(msg(Identity::from_file_bytes(
        b"kafka-e2ee-credential v1\nprivate-key: !!\n"
    ))
    .contains("not valid base64"));
    assert!(msg(Identity::from_file_bytes(
        b"kafka-e2ee-credential v1\nprivate-key: AAAA\n"
    ))
    .contains("32 bytes"));
    assert!(msg(Identity::from_file_bytes(
        b"kafka-e2ee-credential v1\n# only a comment\n"
    ))
    .contains("no `private-key`"));
    let e = TrustAnchor::from_file_bytes(b"kafka-e2ee-trust v1\n# nothing\n").unwrap_err();
    assert!(e.to_string().contains("trusts nothing"));
    let e = TrustAnchor::from_file_bytes(
        b"kafka-e2ee-trust v1\nauthority: AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("line 2"), "{e}");
}

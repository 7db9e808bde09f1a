//! Property tests of record format v1: round trips, tamper detection (any
//! single bit of value, header, topic or bound key), strict header decoding;
//! for both ciphers, with and without compression.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kafka_e2ee_core::format::{
    open_in_place, seal_in_place, seal_in_place_with, Cipher, Compression, DataKey, EpochSecret,
    FormatError, InstanceId, KeyBinding, KeyId, RecordHeader, Sealing, COMPRESSION_MASK,
    FLAG_AES_256_GCM, FLAG_HEADERS, FLAG_KEY_BOUND, FLAG_KEY_NULL, FLAG_TOKEN_KEY, HEADER_LEN,
    VERSION,
};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Binding {
    Unbound,
    Null,
    Bytes(Vec<u8>),
}

impl Binding {
    fn as_binding(&self) -> KeyBinding<'_> {
        match self {
            Binding::Unbound => KeyBinding::Unbound,
            Binding::Null => KeyBinding::Null,
            Binding::Bytes(b) => KeyBinding::Bytes(b),
        }
    }
}

fn binding() -> impl Strategy<Value = Binding> {
    prop_oneof![
        Just(Binding::Unbound),
        Just(Binding::Null),
        proptest::collection::vec(any::<u8>(), 0..600).prop_map(Binding::Bytes),
    ]
}

fn key_id() -> impl Strategy<Value = KeyId> {
    (any::<[u8; 8]>(), any::<u32>()).prop_map(|(p, epoch)| KeyId {
        producer: InstanceId(p),
        epoch,
    })
}

/// One sealed record with everything needed to open it.
#[derive(Debug)]
struct Case {
    key: DataKey,
    topic: String,
    binding: Binding,
    plaintext: Vec<u8>,
    header: RecordHeader,
    ciphertext: Vec<u8>,
}

fn sealed_case(
    topic: impl Strategy<Value = String>,
    binding: impl Strategy<Value = Binding>,
) -> impl Strategy<Value = Case> {
    sealed_case_with(
        topic,
        binding,
        Just(Sealing::default()),
        proptest::collection::vec(any::<u8>(), 0..2048),
    )
}

fn sealing() -> impl Strategy<Value = Sealing> {
    (
        prop::sample::select(Cipher::ALL.to_vec()),
        prop::sample::select(Compression::ALL.to_vec()),
    )
        .prop_map(|(cipher, compression)| Sealing {
            cipher,
            compression,
        })
}

/// Values that are sometimes compressible (runs from a small alphabet) and
/// sometimes not.
fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        proptest::collection::vec(prop::sample::select(b"ab{}\":,0 ".to_vec()), 0..2048),
    ]
}

fn sealed_case_with(
    topic: impl Strategy<Value = String>,
    binding: impl Strategy<Value = Binding>,
    sealing: impl Strategy<Value = Sealing>,
    plaintext: impl Strategy<Value = Vec<u8>>,
) -> impl Strategy<Value = Case> {
    (
        any::<[u8; 32]>(),
        key_id(),
        any::<u32>(),
        topic,
        binding,
        sealing,
        plaintext,
    )
        .prop_map(
            |(secret, key_id, counter, topic, binding, sealing, plaintext)| {
                let key = DataKey::derive(&EpochSecret::from_bytes(secret), key_id, &topic);
                let mut ciphertext = plaintext.clone();
                let header = seal_in_place_with(
                    &key,
                    key_id,
                    counter,
                    &topic,
                    binding.as_binding(),
                    sealing,
                    &mut ciphertext,
                )
                .unwrap();
                Case {
                    key,
                    topic,
                    binding,
                    plaintext,
                    header,
                    ciphertext,
                }
            },
        )
}

fn open_bytes(
    key: &DataKey,
    header: &[u8],
    topic: &str,
    binding: KeyBinding<'_>,
    value: &mut [u8],
) -> Result<(), FormatError> {
    let header = RecordHeader::decode(header)?;
    open_in_place(key, &header, topic, binding, value)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn seal_then_open_round_trips(case in sealed_case(any::<String>(), binding())) {
        prop_assert_eq!(case.ciphertext.len(), case.plaintext.len());
        prop_assert_eq!(case.header.version, VERSION);
        let encoded = case.header.encode();
        prop_assert_eq!(RecordHeader::decode(&encoded), Ok(case.header));
        let mut value = case.ciphertext.clone();
        open_bytes(&case.key, &encoded, &case.topic, case.binding.as_binding(), &mut value).unwrap();
        prop_assert_eq!(value, case.plaintext);
    }

    #[test]
    fn any_value_bit_flip_fails(
        case in sealed_case("[a-z.]{1,40}", binding()),
        pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        prop_assume!(!case.ciphertext.is_empty());
        let mut value = case.ciphertext.clone();
        let at = pick.index(value.len());
        value[at] ^= 1 << bit;
        let tampered = value.clone();
        let err = open_bytes(&case.key, &case.header.encode(), &case.topic, case.binding.as_binding(), &mut value);
        prop_assert_eq!(err, Err(FormatError::Authentication));
        prop_assert_eq!(value, tampered, "value must be unchanged on failure");
    }

    #[test]
    fn any_header_bit_flip_fails(
        case in sealed_case("[a-z.]{1,40}", binding()),
        byte in 0..HEADER_LEN,
        bit in 0u8..8,
    ) {
        let mut header = case.header.encode();
        header[byte] ^= 1 << bit;
        let mut value = case.ciphertext.clone();
        let result = open_bytes(&case.key, &header, &case.topic, case.binding.as_binding(), &mut value);
        prop_assert!(result.is_err(), "flip of header byte {} bit {} opened", byte, bit);
        prop_assert_eq!(value, case.ciphertext);
    }

    #[test]
    fn any_topic_bit_flip_fails(
        case in sealed_case("[a-zA-Z0-9._-]{1,249}", binding()),
        pick in any::<prop::sample::Index>(),
        bit in 0u8..7, // ASCII topics stay valid UTF-8
    ) {
        let mut topic = case.topic.clone().into_bytes();
        let at = pick.index(topic.len());
        topic[at] ^= 1 << bit;
        let topic = String::from_utf8(topic).unwrap();
        let mut value = case.ciphertext.clone();
        let err = open_bytes(&case.key, &case.header.encode(), &topic, case.binding.as_binding(), &mut value);
        prop_assert_eq!(err, Err(FormatError::Authentication));
        prop_assert_eq!(value, case.ciphertext);
    }

    #[test]
    fn any_bound_key_bit_flip_fails(
        case in sealed_case(
            "[a-z.]{1,40}",
            proptest::collection::vec(any::<u8>(), 1..600).prop_map(Binding::Bytes),
        ),
        pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let Binding::Bytes(mut key_bytes) = case.binding.clone() else { unreachable!() };
        let at = pick.index(key_bytes.len());
        key_bytes[at] ^= 1 << bit;
        let mut value = case.ciphertext.clone();
        let err = open_bytes(&case.key, &case.header.encode(), &case.topic, KeyBinding::Bytes(&key_bytes), &mut value);
        prop_assert_eq!(err, Err(FormatError::Authentication));
        prop_assert_eq!(value, case.ciphertext);
    }

    #[test]
    fn other_binding_kind_is_a_mismatch(
        case in sealed_case("[a-z.]{1,40}", binding()),
        other in binding(),
    ) {
        let same_kind = other.as_binding().kind() == case.binding.as_binding().kind();
        prop_assume!(!same_kind);
        let mut value = case.ciphertext.clone();
        let err = open_bytes(&case.key, &case.header.encode(), &case.topic, other.as_binding(), &mut value);
        let is_mismatch = matches!(err, Err(FormatError::KeyBindingMismatch { .. }));
        prop_assert!(is_mismatch, "{:?}", err);
        prop_assert_eq!(value, case.ciphertext);
    }

    #[test]
    fn every_sealing_round_trips_and_keeps_the_length(
        case in sealed_case_with("[a-z.]{1,40}", binding(), sealing(), value()),
    ) {
        prop_assert_eq!(case.ciphertext.len(), case.plaintext.len());
        let mut value = case.ciphertext.clone();
        open_bytes(&case.key, &case.header.encode(), &case.topic, case.binding.as_binding(), &mut value).unwrap();
        prop_assert_eq!(value, case.plaintext);
    }

    #[test]
    fn every_sealing_detects_any_value_bit_flip(
        case in sealed_case_with("[a-z.]{1,40}", binding(), sealing(), value()),
        pick in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        // For a compressed record this covers the ciphertext, the marker and
        // the zero padding after it.
        prop_assume!(!case.ciphertext.is_empty());
        let mut value = case.ciphertext.clone();
        let at = pick.index(value.len());
        value[at] ^= 1 << bit;
        let tampered = value.clone();
        let err = open_bytes(&case.key, &case.header.encode(), &case.topic, case.binding.as_binding(), &mut value);
        prop_assert_eq!(err, Err(FormatError::Authentication));
        prop_assert_eq!(value, tampered, "value must be unchanged on failure");
    }

    #[test]
    fn every_sealing_detects_any_header_bit_flip(
        case in sealed_case_with("[a-z.]{1,40}", binding(), sealing(), value()),
        byte in 0..HEADER_LEN,
        bit in 0u8..8,
    ) {
        let mut header = case.header.encode();
        header[byte] ^= 1 << bit;
        let mut value = case.ciphertext.clone();
        let result = open_bytes(&case.key, &header, &case.topic, case.binding.as_binding(), &mut value);
        prop_assert!(result.is_err(), "flip of header byte {} bit {} opened", byte, bit);
        prop_assert_eq!(value, case.ciphertext);
    }

    #[test]
    fn a_compressed_record_cut_or_extended_fails(
        case in sealed_case_with(
            "[a-z.]{1,40}",
            binding(),
            sealing(),
            proptest::collection::vec(prop::sample::select(b"ab".to_vec()), 64..1024),
        ),
        zeros in 1usize..16,
    ) {
        // The broker adds or strips zero padding: the marker is still found,
        // but the value's length is bound into the AAD.
        prop_assume!(case.header.compression() != Compression::None);
        let mut longer = case.ciphertext.clone();
        longer.resize(longer.len() + zeros, 0);
        let err = open_bytes(&case.key, &case.header.encode(), &case.topic, case.binding.as_binding(), &mut longer);
        prop_assert_eq!(err, Err(FormatError::Authentication));
        let mut shorter = case.ciphertext.clone();
        if shorter.ends_with(&[0]) {
            shorter.pop();
            let err = open_bytes(&case.key, &case.header.encode(), &case.topic, case.binding.as_binding(), &mut shorter);
            prop_assert_eq!(err, Err(FormatError::Authentication));
        }
    }

    #[test]
    fn opening_any_bytes_under_any_flags_never_panics(
        mut header in any::<[u8; HEADER_LEN]>(),
        flags in prop::sample::select(valid_flags()),
        mut value in proptest::collection::vec(any::<u8>(), 0..300),
        key in any::<[u8; 32]>(),
    ) {
        header[0] = VERSION;
        header[1] = flags;
        let binding = match flags & 3 { 0 => KeyBinding::Unbound, 1 => KeyBinding::Bytes(b"k"), _ => KeyBinding::Null };
        let before = value.clone();
        let result = open_bytes(&DataKey::from_bytes(key), &header, "t", binding, &mut value);
        prop_assert_eq!(result, Err(FormatError::Authentication));
        prop_assert_eq!(value, before);
    }

    #[test]
    fn decode_never_panics_and_accepts_only_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        if let Ok(header) = RecordHeader::decode(&bytes) {
            let encoded = header.encode();
            prop_assert_eq!(encoded.as_slice(), bytes.as_slice());
        }
    }

    #[test]
    fn decode_never_panics_near_valid(mut bytes in any::<[u8; HEADER_LEN]>(), flags in 0u8..4) {
        bytes[0] = VERSION;
        bytes[1] = flags;
        let header = RecordHeader::decode(&bytes);
        if flags == FLAG_KEY_NULL {
            prop_assert_eq!(header, Err(FormatError::KeyNullWithoutKeyBound));
        } else {
            prop_assert_eq!(header.unwrap().encode(), bytes);
        }
    }
}

fn valid_header_bytes() -> [u8; HEADER_LEN] {
    RecordHeader {
        version: VERSION,
        flags: FLAG_KEY_BOUND,
        key_id: KeyId {
            producer: InstanceId(*b"producer"),
            epoch: 3,
        },
        counter: 9,
        tag: [0x77; 16],
    }
    .encode()
}

#[test]
fn decode_rejects_every_wrong_length() {
    let long = [valid_header_bytes().as_slice(), &[0u8; 100]].concat();
    for len in 0..long.len() {
        let result = RecordHeader::decode(&long[..len]);
        if len == HEADER_LEN {
            assert!(result.is_ok());
        } else {
            assert_eq!(result, Err(FormatError::HeaderLength { actual: len }));
        }
    }
}

#[test]
fn decode_rejects_every_other_version() {
    let mut bytes = valid_header_bytes();
    for version in 0..=u8::MAX {
        bytes[0] = version;
        let result = RecordHeader::decode(&bytes);
        if version == VERSION {
            assert!(result.is_ok());
        } else {
            assert_eq!(result, Err(FormatError::UnsupportedVersion(version)));
        }
    }
}

/// Every flags byte a header may carry: a key binding (0x00, 0x01, 0x03),
/// optionally AES-256-GCM (0x08), and no, zstd (0x10) or lz4 (0x20)
/// compression.
fn valid_flags() -> Vec<u8> {
    let mut out = Vec::new();
    for binding in [0x00, FLAG_KEY_BOUND, FLAG_KEY_BOUND | FLAG_KEY_NULL] {
        for cipher in [0x00, FLAG_AES_256_GCM] {
            for compression in [0x00, 0x10, 0x20] {
                for headers in [0x00, FLAG_HEADERS] {
                    for token in [0x00, FLAG_TOKEN_KEY] {
                        out.push(binding | cipher | compression | headers | token);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn decode_checks_every_flags_byte() {
    let mut bytes = valid_header_bytes();
    let valid = valid_flags();
    assert_eq!(valid.len(), 72);
    for flags in 0..=u8::MAX {
        bytes[1] = flags;
        let result = RecordHeader::decode(&bytes);
        if valid.contains(&flags) {
            assert_eq!(result.unwrap().flags, flags);
        } else if flags & 0b0000_0100 != 0 || flags & COMPRESSION_MASK == COMPRESSION_MASK {
            assert_eq!(result, Err(FormatError::ReservedFlags(flags)));
        } else {
            assert_eq!(flags & 3, FLAG_KEY_NULL, "{flags:#04x}");
            assert_eq!(result, Err(FormatError::KeyNullWithoutKeyBound));
        }
    }
}

#[test]
fn open_revalidates_hand_built_headers() {
    let key = DataKey::from_bytes([3; 32]);
    let mut header = RecordHeader::decode(&valid_header_bytes()).unwrap();
    for reserved in [0x04, 0x44] {
        header.flags = reserved;
        let mut value = vec![1, 2, 3];
        assert_eq!(
            open_in_place(&key, &header, "t", KeyBinding::Unbound, &mut value),
            Err(FormatError::ReservedFlags(reserved))
        );
    }
    let mut value = vec![1, 2, 3];
    header.flags = 0;
    header.version = 2;
    assert_eq!(
        open_in_place(&key, &header, "t", KeyBinding::Unbound, &mut value),
        Err(FormatError::UnsupportedVersion(2))
    );
    assert_eq!(value, [1, 2, 3]);
}

#[test]
fn opening_twice_fails_and_leaves_plaintext() {
    // Hooks that may run twice (librdkafka on_consume) must remember what they
    // opened: a second open sees plaintext, fails, and changes nothing.
    let key = DataKey::from_bytes([5; 32]);
    let id = KeyId {
        producer: InstanceId([1; 8]),
        epoch: 1,
    };
    let mut value = b"payload".to_vec();
    let header = seal_in_place(&key, id, 7, "t", KeyBinding::Null, &mut value).unwrap();
    open_in_place(&key, &header, "t", KeyBinding::Null, &mut value).unwrap();
    assert_eq!(
        open_in_place(&key, &header, "t", KeyBinding::Null, &mut value),
        Err(FormatError::Authentication)
    );
    assert_eq!(value, b"payload");
}

#[test]
fn errors_are_explanatory_and_carry_no_bytes() {
    let auth = FormatError::Authentication.to_string();
    assert!(auth.contains("tampered"));
    assert!(auth.contains("another topic"));
    assert!(auth.contains("another key"));
    let err: Box<dyn std::error::Error> = Box::new(FormatError::HeaderLength { actual: 3 });
    assert_eq!(
        err.to_string(),
        "e2ee record header has 3 bytes, expected exactly 34"
    );
}

//! Golden vectors for record format v1: tests/vectors/format-v1.json.
//!
//! The file was generated once by `bless_vectors` and is committed; every
//! test run re-verifies it in both directions (sealing reproduces header and
//! ciphertext, opening recovers the plaintext, negative vectors fail with the
//! named error). The Java and C tests read the same file.
//!
//! Regenerate (only when the format changes, which means a new version):
//! `KAFKA_E2EE_BLESS=1 cargo test -p kafka-e2ee-core --test format_vectors -- --ignored`
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::fmt::Write as _;
use std::path::PathBuf;

use kafka_e2ee_core::format::{
    decode_header_list, encode_header_list, open_in_place, open_record, open_record_parts,
    seal_in_place_with, seal_record, seal_record_parts, AppHeader, Cipher, Compression, DataKey,
    EpochSecret, FormatError, InstanceId, KeyBinding, KeyId, RecordExtras, RecordHeader, Sealing,
    TokenSecret, TokenizedKey, FLAG_HEADERS, FLAG_TOKEN_KEY,
};
use serde_json::Value;

fn vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/format-v1.json")
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        write!(s, "{b:02x}").unwrap();
    }
    s
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
    assert!(
        s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
        "hex must be lowercase: {s}"
    );
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The error kind names used in the vectors file (documented in docs/FORMAT.md).
fn error_kind(e: &FormatError) -> &'static str {
    match e {
        FormatError::HeaderLength { .. } => "header_length",
        FormatError::UnsupportedVersion(_) => "unsupported_version",
        FormatError::ReservedFlags(_) => "reserved_flags",
        FormatError::KeyNullWithoutKeyBound => "key_null_without_key_bound",
        FormatError::TopicTooLong { .. } => "topic_too_long",
        FormatError::KeyTooLong { .. } => "key_too_long",
        FormatError::ValueTooLong { .. } => "value_too_long",
        FormatError::KeyBindingMismatch { .. } => "key_binding_mismatch",
        FormatError::Authentication => "authentication",
        FormatError::Decompression => "decompression",
        FormatError::SealedHeadersMissing => "sealed_headers_missing",
        FormatError::SealedHeadersUnexpected => "sealed_headers_unexpected",
        FormatError::SealedHeadersDuplicate => "sealed_headers_duplicate",
        FormatError::HeaderList => "header_list",
        FormatError::ClearHeadersMismatch => "clear_headers_mismatch",
        FormatError::KeyNotTokenizable { .. } => "key_not_tokenizable",
        FormatError::SealedKeyMissing => "sealed_key_missing",
        FormatError::SealedKeyUnexpected => "sealed_key_unexpected",
        FormatError::SealedKeyDuplicate => "sealed_key_duplicate",
        FormatError::SealedKeyLength => "sealed_key_length",
        other => panic!("no vector name for {other:?}"),
    }
}

#[derive(Clone)]
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
    fn to_json(&self) -> String {
        match self {
            Binding::Unbound => "unbound".into(),
            Binding::Null => "null".into(),
            Binding::Bytes(b) => hex(b),
        }
    }
    fn from_json(s: &str) -> Binding {
        match s {
            "unbound" => Binding::Unbound,
            "null" => Binding::Null,
            hexed => Binding::Bytes(unhex(hexed)),
        }
    }
}

// ---------------------------------------------------------------- generator

struct Positive {
    description: &'static str,
    epoch_secret: [u8; 32],
    producer: [u8; 8],
    epoch: u32,
    counter: u32,
    topic: &'static str,
    binding: Binding,
    plaintext: Vec<u8>,
    sealing: Sealing,
}

const CHACHA: Sealing = Sealing {
    cipher: Cipher::ChaCha20Poly1305,
    compression: Compression::None,
};

fn sealing(cipher: Cipher, compression: Compression) -> Sealing {
    Sealing {
        cipher,
        compression,
    }
}

/// A compressible value: JSON-like records, `len` bytes.
fn json_like(len: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < len {
        out.extend_from_slice(
            format!(
                "{{\"order\":{},\"status\":\"PAID\",\"amount\":\"{}.95\"}},",
                1000 + i,
                i % 97
            )
            .as_bytes(),
        );
        i += 1;
    }
    out.truncate(len);
    out
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn positives() -> Vec<Positive> {
    let secret_a: [u8; 32] = core::array::from_fn(|i| i as u8);
    let secret_b: [u8; 32] = core::array::from_fn(|i| 0xff - (i as u8) * 3);
    let producer_a = *b"prod-001";
    let producer_b = [0xde, 0xad, 0xbe, 0xef, 0x00, 0x11, 0x22, 0x33];
    vec![
        Positive {
            description: "empty value, key unbound",
            epoch_secret: secret_a,
            producer: producer_a,
            epoch: 1,
            counter: 0,
            topic: "orders",
            binding: Binding::Unbound,
            plaintext: vec![],
            sealing: CHACHA,
        },
        Positive {
            description: "1-byte value, key bound",
            epoch_secret: secret_a,
            producer: producer_a,
            epoch: 1,
            counter: 1,
            topic: "orders",
            binding: Binding::Bytes(b"customer-42".to_vec()),
            plaintext: vec![0x2a],
            sealing: CHACHA,
        },
        Positive {
            description: "text value, key bound and null",
            epoch_secret: secret_a,
            producer: producer_a,
            epoch: 1,
            counter: 2,
            topic: "orders",
            binding: Binding::Null,
            plaintext: b"{\"order\":1234,\"amount\":\"99.95\"}".to_vec(),
            sealing: CHACHA,
        },
        Positive {
            description: "text value, key bound with zero bytes (not null)",
            epoch_secret: secret_a,
            producer: producer_a,
            epoch: 1,
            counter: 3,
            topic: "orders",
            binding: Binding::Bytes(vec![]),
            plaintext: b"{\"order\":1234,\"amount\":\"99.95\"}".to_vec(),
            sealing: CHACHA,
        },
        Positive {
            description: "1 KiB value, key bound",
            epoch_secret: secret_b,
            producer: producer_b,
            epoch: 77,
            counter: 1000,
            topic: "payments.v2",
            binding: Binding::Bytes(pattern(16, 5)),
            plaintext: pattern(1024, 1),
            sealing: CHACHA,
        },
        Positive {
            description: "unicode topic, key bound",
            epoch_secret: secret_b,
            producer: producer_b,
            epoch: 77,
            counter: 1001,
            topic: "zahlungen-\u{20ac}-\u{65e5}\u{672c}",
            binding: Binding::Bytes(b"k".to_vec()),
            plaintext: b"hello".to_vec(),
            sealing: CHACHA,
        },
        Positive {
            description: "maximum counter and epoch, key unbound",
            epoch_secret: secret_b,
            producer: producer_b,
            epoch: u32::MAX,
            counter: u32::MAX,
            topic: "orders",
            binding: Binding::Unbound,
            plaintext: pattern(100, 9),
            sealing: CHACHA,
        },
        // AES-256-GCM (flags bit 3), under the data key's derived AES key.
        Positive {
            description: "AES-256-GCM: empty value, key unbound",
            epoch_secret: secret_a,
            producer: producer_a,
            epoch: 2,
            counter: 0,
            topic: "orders",
            binding: Binding::Unbound,
            plaintext: vec![],
            sealing: sealing(Cipher::Aes256Gcm, Compression::None),
        },
        Positive {
            description: "AES-256-GCM: text value, key bound",
            epoch_secret: secret_a,
            producer: producer_a,
            epoch: 2,
            counter: 1,
            topic: "orders",
            binding: Binding::Bytes(b"customer-42".to_vec()),
            plaintext: b"{\"order\":1234,\"amount\":\"99.95\"}".to_vec(),
            sealing: sealing(Cipher::Aes256Gcm, Compression::None),
        },
        Positive {
            description: "AES-256-GCM: 1 KiB value, key bound and null, maximum counter",
            epoch_secret: secret_b,
            producer: producer_b,
            epoch: 78,
            counter: u32::MAX,
            topic: "payments.v2",
            binding: Binding::Null,
            plaintext: pattern(1024, 3),
            sealing: sealing(Cipher::Aes256Gcm, Compression::None),
        },
        // Compressed (flags bits 4-5): sealed prefix, 0x80, zero padding.
        Positive {
            description: "ChaCha20-Poly1305 + zstd: 1 KiB JSON-like value, key bound",
            epoch_secret: secret_b,
            producer: producer_b,
            epoch: 79,
            counter: 5,
            topic: "payments.v2",
            binding: Binding::Bytes(b"customer-7".to_vec()),
            plaintext: json_like(1024),
            sealing: sealing(Cipher::ChaCha20Poly1305, Compression::Zstd),
        },
        Positive {
            description: "ChaCha20-Poly1305 + lz4: 300-byte JSON-like value, key unbound",
            epoch_secret: secret_a,
            producer: producer_a,
            epoch: 3,
            counter: 9,
            topic: "orders",
            binding: Binding::Unbound,
            plaintext: json_like(300),
            sealing: sealing(Cipher::ChaCha20Poly1305, Compression::Lz4),
        },
        Positive {
            description: "AES-256-GCM + zstd: 1 KiB JSON-like value, key null",
            epoch_secret: secret_a,
            producer: producer_a,
            epoch: 4,
            counter: 10,
            topic: "orders",
            binding: Binding::Null,
            plaintext: json_like(1024),
            sealing: sealing(Cipher::Aes256Gcm, Compression::Zstd),
        },
        Positive {
            description: "AES-256-GCM + lz4: 4 KiB JSON-like value, key bound",
            epoch_secret: secret_b,
            producer: producer_b,
            epoch: 80,
            counter: 0,
            topic: "zahlungen-\u{20ac}",
            binding: Binding::Bytes(vec![0; 3]),
            plaintext: json_like(4096),
            sealing: sealing(Cipher::Aes256Gcm, Compression::Lz4),
        },
    ]
}

/// What a compressed vector's sealed part decrypts to: the compressed value
/// (for implementations whose compressor gives other bytes: they check that
/// this decompresses to the plaintext, and seal these bytes).
fn compressed_form(compression: Compression, plaintext: &[u8]) -> Vec<u8> {
    match compression {
        Compression::Zstd => zstd::bulk::compress(plaintext, 3).unwrap(),
        Compression::Lz4 => lz4_flex::block::compress(plaintext),
        _ => unreachable!(),
    }
}

struct Negative {
    description: &'static str,
    data_key: [u8; 32],
    topic: String,
    binding: Binding,
    header: Vec<u8>,
    ciphertext: Vec<u8>,
    expected_error: &'static str,
}

/// A positive vector with its data key, encoded header and ciphertext.
type Sealed = (Positive, [u8; 32], Vec<u8>, Vec<u8>);

fn negatives(sealed: &[Sealed]) -> Vec<Negative> {
    // Base: the 1-byte bound-key record and the text null-key record.
    let (p, key, header, ct) = &sealed[1];
    let base = |description, expected_error| Negative {
        description,
        data_key: *key,
        topic: p.topic.to_string(),
        binding: p.binding.clone(),
        header: header.clone(),
        ciphertext: ct.clone(),
        expected_error,
    };
    let mut out = Vec::new();

    let mut n = base("value bit 0 flipped", "authentication");
    n.ciphertext[0] ^= 0x01;
    out.push(n);

    let mut n = base("tag byte 33 flipped", "authentication");
    n.header[33] ^= 0x80;
    out.push(n);

    let mut n = base("counter changed (header splice)", "authentication");
    n.header[17] ^= 0x01;
    out.push(n);

    let mut n = base("epoch changed", "authentication");
    n.header[13] ^= 0x01;
    out.push(n);

    let mut n = base("moved to another topic", "authentication");
    n.topic = "orders-archive".into();
    out.push(n);

    let mut n = base("record key changed", "authentication");
    n.binding = Binding::Bytes(b"customer-43".to_vec());
    out.push(n);

    let mut n = base(
        "KEY_BOUND in header, opened unbound",
        "key_binding_mismatch",
    );
    n.binding = Binding::Unbound;
    out.push(n);

    let mut n = base(
        "KEY_BOUND cleared in header, opened unbound",
        "authentication",
    );
    n.header[1] = 0x00;
    n.binding = Binding::Unbound;
    out.push(n);

    let mut n = base("wrong data key", "authentication");
    n.data_key[0] ^= 0x01;
    out.push(n);

    let mut n = base("version 2", "unsupported_version");
    n.header[0] = 2;
    out.push(n);

    let mut n = base("reserved flag bit 2 set", "reserved_flags");
    n.header[1] |= 0x04;
    out.push(n);

    let mut n = base("KEY_NULL without KEY_BOUND", "key_null_without_key_bound");
    n.header[1] = 0x02;
    out.push(n);

    let mut n = base("header truncated to 33 bytes", "header_length");
    n.header.truncate(33);
    out.push(n);

    let (p, key, header, ct) = &sealed[2];
    out.push(Negative {
        description: "null key in header, opened with key bytes",
        data_key: *key,
        topic: p.topic.to_string(),
        binding: Binding::Bytes(vec![]),
        header: header.clone(),
        ciphertext: ct.clone(),
        expected_error: "key_binding_mismatch",
    });

    // Bit 6 was reserved until FORMAT.md section 13 gave it to TOKEN_KEY:
    // set on a record sealed without it, the value no longer authenticates.
    let mut n = base(
        "flag bit 6 (TOKEN_KEY) set on a record sealed without it",
        "authentication",
    );
    n.header[1] |= 0x40;
    out.push(n);

    let mut n = base("compression field 3 (reserved value)", "reserved_flags");
    n.header[1] |= 0x30;
    out.push(n);

    let mut n = base(
        "ChaCha20-Poly1305 record with the AES-256-GCM flag set",
        "authentication",
    );
    n.header[1] |= 0x08;
    out.push(n);

    let find = |description: &str| {
        sealed
            .iter()
            .find(|s| s.0.description == description)
            .unwrap()
    };
    let from = |(p, key, header, ct): &Sealed, description, expected_error| Negative {
        description,
        data_key: *key,
        topic: p.topic.to_string(),
        binding: p.binding.clone(),
        header: header.clone(),
        ciphertext: ct.clone(),
        expected_error,
    };
    let aes = find("AES-256-GCM: text value, key bound");
    let mut n = from(
        aes,
        "AES-256-GCM record with its flag cleared",
        "authentication",
    );
    n.header[1] &= !0x08;
    out.push(n);
    let mut n = from(aes, "AES-256-GCM: value bit 0 flipped", "authentication");
    n.ciphertext[0] ^= 0x01;
    out.push(n);
    let mut n = from(aes, "AES-256-GCM: wrong data key", "authentication");
    n.data_key[31] ^= 0x01;
    out.push(n);

    let zstd = find("ChaCha20-Poly1305 + zstd: 1 KiB JSON-like value, key bound");
    let marker = zstd.3.iter().rposition(|&b| b != 0).unwrap();
    let mut n = from(zstd, "compressed: a padding byte set", "authentication");
    *n.ciphertext.last_mut().unwrap() = 0x01;
    out.push(n);
    let mut n = from(
        zstd,
        "compressed: marker moved one byte later",
        "authentication",
    );
    n.ciphertext[marker] = 0x00;
    n.ciphertext[marker + 1] = 0x80;
    out.push(n);
    let mut n = from(zstd, "compressed: marker cleared", "authentication");
    n.ciphertext[marker] = 0x00;
    out.push(n);
    let mut n = from(zstd, "compressed: zero padding appended", "authentication");
    n.ciphertext.extend_from_slice(&[0; 4]);
    out.push(n);
    let mut n = from(zstd, "compressed: zero padding stripped", "authentication");
    n.ciphertext.truncate(n.ciphertext.len() - 1);
    out.push(n);
    let mut n = from(
        zstd,
        "compressed: compression flag cleared",
        "authentication",
    );
    n.header[1] &= !0x30;
    out.push(n);
    let mut n = from(
        zstd,
        "compressed: zstd flag changed to lz4",
        "authentication",
    );
    n.header[1] ^= 0x30;
    out.push(n);
    let mut n = from(
        zstd,
        "compressed: sealed part bit flipped",
        "authentication",
    );
    n.ciphertext[marker / 2] ^= 0x10;
    out.push(n);
    out
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

#[test]
#[ignore = "regenerates tests/vectors/format-v1.json; needs KAFKA_E2EE_BLESS=1"]
fn bless_vectors() {
    if std::env::var("KAFKA_E2EE_BLESS").as_deref() != Ok("1") {
        eprintln!("KAFKA_E2EE_BLESS=1 not set; not regenerating vectors");
        return;
    }
    let mut sealed = Vec::new();
    for p in positives() {
        let key_id = KeyId {
            producer: InstanceId(p.producer),
            epoch: p.epoch,
        };
        let key = DataKey::derive(&EpochSecret::from_bytes(p.epoch_secret), key_id, p.topic);
        let mut ct = p.plaintext.clone();
        let header = seal_in_place_with(
            &key,
            key_id,
            p.counter,
            p.topic,
            p.binding.as_binding(),
            p.sealing,
            &mut ct,
        )
        .unwrap();
        assert_eq!(header.cipher(), p.sealing.cipher, "{}", p.description);
        assert_eq!(
            header.compression(),
            p.sealing.compression,
            "{}",
            p.description
        );
        sealed.push((p, *key.as_bytes(), header.encode().to_vec(), ct));
    }
    let negs = negatives(&sealed);

    let mut objects = Vec::new();
    for (p, key, header, ct) in &sealed {
        let mut fields = vec![
            ("description", json_str(p.description)),
            ("epoch_secret", json_str(&hex(&p.epoch_secret))),
            ("producer", json_str(&hex(&p.producer))),
            ("epoch", p.epoch.to_string()),
            ("counter", p.counter.to_string()),
            ("topic", json_str(p.topic)),
            ("topic_hex", json_str(&hex(p.topic.as_bytes()))),
            ("key_binding", json_str(&p.binding.to_json())),
            ("plaintext", json_str(&hex(&p.plaintext))),
            ("data_key", json_str(&hex(key))),
            ("header", json_str(&hex(header))),
            ("ciphertext", json_str(&hex(ct))),
        ];
        // Only in vectors added with the cipher and compression settings: the
        // original ChaCha20-Poly1305 vectors stay byte for byte as they were.
        if p.sealing != CHACHA {
            let k = DataKey::from_bytes(*key);
            fields.push(("cipher", json_str(p.sealing.cipher.name())));
            fields.push((
                "cipher_key",
                json_str(&hex(&*k.cipher_key(p.sealing.cipher))),
            ));
            fields.push(("compression", json_str(p.sealing.compression.name())));
        }
        if p.sealing.compression != Compression::None {
            let packed = compressed_form(p.sealing.compression, &p.plaintext);
            fields.push(("compressed", json_str(&hex(&packed))));
        }
        objects.push(fields);
    }
    for n in &negs {
        let fields = [
            (
                "description",
                json_str(&format!("NEGATIVE: {}", n.description)),
            ),
            ("data_key", json_str(&hex(&n.data_key))),
            ("topic", json_str(&n.topic)),
            ("topic_hex", json_str(&hex(n.topic.as_bytes()))),
            ("key_binding", json_str(&n.binding.to_json())),
            ("header", json_str(&hex(&n.header))),
            ("ciphertext", json_str(&hex(&n.ciphertext))),
            ("expected_error", json_str(n.expected_error)),
        ];
        objects.push(fields.to_vec());
    }
    let mut out = String::from("[\n");
    for (i, fields) in objects.iter().enumerate() {
        out.push_str("  {\n");
        for (j, (name, value)) in fields.iter().enumerate() {
            let comma = if j + 1 < fields.len() { "," } else { "" };
            writeln!(out, "    \"{name}\": {value}{comma}").unwrap();
        }
        out.push_str(if i + 1 < objects.len() {
            "  },\n"
        } else {
            "  }\n"
        });
    }
    out.push_str("]\n");
    // Must parse as JSON before it is written.
    let _: Value = serde_json::from_str(&out).unwrap();
    let path = vectors_path();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, out).unwrap();
    bless_headers_vectors();
}

// ----------------------------------------------------------------- verifier

fn field<'a>(v: &'a Value, name: &str) -> &'a str {
    v.get(name)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("vector lacks string field {name}: {v}"))
}

fn num(v: &Value, name: &str) -> u32 {
    let n = v
        .get(name)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("vector lacks number field {name}: {v}"));
    u32::try_from(n).unwrap()
}

fn topic_of(v: &Value) -> String {
    let topic = field(v, "topic");
    assert_eq!(hex(topic.as_bytes()), field(v, "topic_hex"), "{v}");
    topic.to_string()
}

fn load() -> Vec<Value> {
    let text = std::fs::read_to_string(vectors_path()).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Array(items) => items,
        other => panic!("vectors file is not an array: {other}"),
    }
}

#[test]
fn positive_vectors_seal_and_open() {
    let vectors = load();
    let mut checked = 0;
    for v in vectors.iter().filter(|v| v.get("expected_error").is_none()) {
        let what = field(v, "description");
        let secret: [u8; 32] = unhex(field(v, "epoch_secret")).try_into().unwrap();
        let producer: [u8; 8] = unhex(field(v, "producer")).try_into().unwrap();
        let key_id = KeyId {
            producer: InstanceId(producer),
            epoch: num(v, "epoch"),
        };
        let counter = num(v, "counter");
        let topic = topic_of(v);
        let binding = Binding::from_json(field(v, "key_binding"));
        let plaintext = unhex(field(v, "plaintext"));
        let expected_header = unhex(field(v, "header"));
        let expected_ct = unhex(field(v, "ciphertext"));

        let key = DataKey::derive(&EpochSecret::from_bytes(secret), key_id, &topic);
        assert_eq!(
            hex(key.as_bytes()),
            field(v, "data_key"),
            "{what}: data key"
        );

        let cipher = v.get("cipher").map_or(Cipher::ChaCha20Poly1305, |_| {
            Cipher::from_name(field(v, "cipher")).unwrap()
        });
        let compression = v.get("compression").map_or(Compression::None, |_| {
            Compression::from_name(field(v, "compression")).unwrap()
        });
        if v.get("cipher").is_some() {
            assert_eq!(
                hex(&*key.cipher_key(cipher)),
                field(v, "cipher_key"),
                "{what}: cipher key"
            );
        }
        if compression != Compression::None {
            // The compressed form this file records decompresses to the value.
            let packed = unhex(field(v, "compressed"));
            assert_eq!(
                compressed_form(compression, &plaintext),
                packed,
                "{what}: compressed"
            );
            assert!(packed.len() < plaintext.len(), "{what}");
            let marker = expected_ct.iter().rposition(|&b| b != 0).unwrap();
            assert_eq!(marker, packed.len(), "{what}: marker after the sealed part");
            assert_eq!(expected_ct[marker], 0x80, "{what}: marker");
        }

        let mut buf = plaintext.clone();
        let header = seal_in_place_with(
            &key,
            key_id,
            counter,
            &topic,
            binding.as_binding(),
            Sealing {
                cipher,
                compression,
            },
            &mut buf,
        )
        .unwrap();
        assert_eq!(
            (header.cipher(), header.compression()),
            (cipher, compression),
            "{what}"
        );
        assert_eq!(header.encode().to_vec(), expected_header, "{what}: header");
        assert_eq!(buf, expected_ct, "{what}: ciphertext");
        assert_eq!(buf.len(), plaintext.len(), "{what}: length preserved");

        let decoded = RecordHeader::decode(&expected_header).unwrap();
        assert_eq!(decoded, header, "{what}: decode");
        let mut buf = expected_ct.clone();
        open_in_place(&key, &decoded, &topic, binding.as_binding(), &mut buf).unwrap();
        assert_eq!(buf, plaintext, "{what}: open");
        checked += 1;
    }
    assert!(checked >= 14, "only {checked} positive vectors");
}

#[test]
fn negative_vectors_fail_as_named() {
    let vectors = load();
    let mut checked = 0;
    for v in vectors.iter().filter(|v| v.get("expected_error").is_some()) {
        let what = field(v, "description");
        let expected = field(v, "expected_error");
        let key = DataKey::from_bytes(unhex(field(v, "data_key")).try_into().unwrap());
        let topic = topic_of(v);
        let binding = Binding::from_json(field(v, "key_binding"));
        let ciphertext = unhex(field(v, "ciphertext"));
        let mut buf = ciphertext.clone();
        let result = RecordHeader::decode(&unhex(field(v, "header"))).and_then(|header| {
            open_in_place(&key, &header, &topic, binding.as_binding(), &mut buf)
        });
        let err = result.expect_err(what);
        assert_eq!(error_kind(&err), expected, "{what}: {err}");
        assert_eq!(
            buf, ciphertext,
            "{what}: value must be unchanged on failure"
        );
        checked += 1;
    }
    assert!(checked >= 25, "only {checked} negative vectors");
}

// ------------------------------------------- sealed headers (FORMAT.md s. 12)

fn headers_vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/format-v1-headers.json")
}

/// One application header of a vector: (name, value or null, clear).
type Hdr = (&'static str, Option<&'static [u8]>, bool);

fn app(list: &[Hdr]) -> Vec<AppHeader<'static>> {
    list.iter()
        .map(|&(name, value, clear)| AppHeader { name, value, clear })
        .collect()
}

fn headers_json(list: &[AppHeader<'_>]) -> String {
    let items: Vec<String> = list
        .iter()
        .map(|h| {
            format!(
                "{{\"name\": {}, \"value\": {}, \"clear\": {}}}",
                json_str(h.name),
                h.value.map_or("null".to_owned(), |v| json_str(&hex(v))),
                h.clear
            )
        })
        .collect();
    format!("[{}]", items.join(", "))
}

/// The headers of a vector, owned: (name, value, clear).
fn headers_from_json(v: &Value) -> Vec<(String, Option<Vec<u8>>, bool)> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap().to_owned(),
                h["value"].as_str().map(unhex),
                h["clear"].as_bool().unwrap(),
            )
        })
        .collect()
}

fn borrow_headers(list: &[(String, Option<Vec<u8>>, bool)]) -> Vec<AppHeader<'_>> {
    list.iter()
        .map(|(name, value, clear)| AppHeader {
            name,
            value: value.as_deref(),
            clear: *clear,
        })
        .collect()
}

struct HeadersPositive {
    base: Positive,
    headers: Vec<Hdr>,
}

fn headers_positives() -> Vec<HeadersPositive> {
    let secret: [u8; 32] = core::array::from_fn(|i| (i as u8).wrapping_mul(7) ^ 0x5c);
    let producer = *b"hdrs-001";
    let p = |description, epoch, counter, topic, binding, plaintext: &[u8], sealing| Positive {
        description,
        epoch_secret: secret,
        producer,
        epoch,
        counter,
        topic,
        binding,
        plaintext: plaintext.to_vec(),
        sealing,
    };
    vec![
        HeadersPositive {
            base: p(
                "headers: duplicates in order, a null and an empty value (ChaCha20-Poly1305)",
                7,
                0,
                "orders",
                Binding::Unbound,
                b"{\"order\":1001}",
                CHACHA,
            ),
            headers: vec![
                ("tenant", Some(b"acme"), false),
                ("trace-id", None, false),
                ("tenant", Some(b"globex"), false),
                ("empty", Some(b""), false),
            ],
        },
        HeadersPositive {
            base: p(
                "headers: clear headers between sealed ones (AES-256-GCM, key bound)",
                7,
                1,
                "orders",
                Binding::Bytes(b"customer-42".to_vec()),
                b"paid",
                sealing(Cipher::Aes256Gcm, Compression::None),
            ),
            headers: vec![
                ("route", Some(b"eu-west"), true),
                ("user", Some(b"alice"), false),
                ("route", Some(b"eu-central"), true),
                ("traceparent", None, true),
            ],
        },
        HeadersPositive {
            base: p(
                "headers: the empty list (hosts never seal one; readers accept it), empty value",
                8,
                u32::MAX,
                "orders",
                Binding::Null,
                b"",
                CHACHA,
            ),
            headers: vec![],
        },
        HeadersPositive {
            base: p(
                "headers: unicode names, zstd-compressed value (ChaCha20-Poly1305)",
                9,
                3,
                "zahlungen-\u{20ac}",
                Binding::Unbound,
                &json_like(512),
                sealing(Cipher::ChaCha20Poly1305, Compression::Zstd),
            ),
            headers: vec![
                ("gr\u{f6}\u{df}e", Some(b"\xff\x00\x01"), false),
                ("\u{20ac}", Some(b"euro"), true),
            ],
        },
    ]
}

/// A headers vector sealed: data key, header, ciphertext, encoded list, e2ee.h value.
struct HeadersSealed {
    p: HeadersPositive,
    key: [u8; 32],
    header: Vec<u8>,
    ct: Vec<u8>,
    list: Vec<u8>,
    sealed: Vec<u8>,
}

fn seal_headers_vector(p: HeadersPositive) -> HeadersSealed {
    let key_id = KeyId {
        producer: InstanceId(p.base.producer),
        epoch: p.base.epoch,
    };
    let key = DataKey::derive(
        &EpochSecret::from_bytes(p.base.epoch_secret),
        key_id,
        p.base.topic,
    );
    let list = encode_header_list(&app(&p.headers)).unwrap().to_vec();
    let mut ct = p.base.plaintext.clone();
    let (header, sealed) = seal_record(
        &key,
        key_id,
        p.base.counter,
        p.base.topic,
        p.base.binding.as_binding(),
        p.base.sealing,
        &mut ct,
        Some(&list),
    )
    .unwrap();
    assert_eq!(header.compression(), p.base.sealing.compression);
    HeadersSealed {
        key: *key.as_bytes(),
        header: header.encode().to_vec(),
        ct,
        list,
        sealed: sealed.unwrap(),
        p,
    }
}

struct HeadersNegative {
    description: String,
    key: [u8; 32],
    topic: String,
    binding: Binding,
    header: Vec<u8>,
    ct: Vec<u8>,
    sealed: Vec<Vec<u8>>,
    visible: Vec<AppHeader<'static>>,
    expected_error: &'static str,
}

fn headers_negatives(all: &[HeadersSealed]) -> Vec<HeadersNegative> {
    let from = |s: &HeadersSealed, description: &str, expected_error| HeadersNegative {
        description: description.to_owned(),
        key: s.key,
        topic: s.p.base.topic.to_owned(),
        binding: s.p.base.binding.clone(),
        header: s.header.clone(),
        ct: s.ct.clone(),
        sealed: vec![s.sealed.clone()],
        visible: app(&s.p.headers).into_iter().filter(|h| h.clear).collect(),
        expected_error,
    };
    let (a, b) = (&all[0], &all[1]);
    let mut out = Vec::new();
    let mut n = from(a, "headers: list bit flipped", "authentication");
    n.sealed[0][5] ^= 0x01;
    out.push(n);
    let mut n = from(a, "headers: tag bit flipped", "authentication");
    let last = n.sealed[0].len() - 1;
    n.sealed[0][last] ^= 0x80;
    out.push(n);
    let mut n = from(a, "headers: e2ee.h truncated to 15 bytes", "authentication");
    n.sealed[0].truncate(15);
    out.push(n);
    let mut n = from(a, "headers: e2ee.h stripped", "sealed_headers_missing");
    n.sealed.clear();
    out.push(n);
    let mut n = from(a, "headers: e2ee.h duplicated", "sealed_headers_duplicate");
    n.sealed.push(a.sealed.clone());
    out.push(n);
    let mut n = from(
        a,
        "headers: HEADERS flag stripped, e2ee.h kept",
        "sealed_headers_unexpected",
    );
    n.header[1] &= !FLAG_HEADERS;
    out.push(n);
    let mut n = from(
        a,
        "headers: HEADERS flag and e2ee.h stripped",
        "authentication",
    );
    n.header[1] &= !FLAG_HEADERS;
    n.sealed.clear();
    out.push(n);
    let mut n = from(
        a,
        "headers: e2ee.h of another record (counter 1) spliced in",
        "authentication",
    );
    // Same data key and topic, another counter: b's list under b's nonce.
    let other = {
        let key_id = KeyId {
            producer: InstanceId(a.p.base.producer),
            epoch: a.p.base.epoch,
        };
        let key = DataKey::from_bytes(a.key);
        let mut v = a.p.base.plaintext.clone();
        let list = encode_header_list(&app(&a.p.headers)).unwrap();
        seal_record(
            &key,
            key_id,
            1,
            a.p.base.topic,
            KeyBinding::Unbound,
            CHACHA,
            &mut v,
            Some(&list),
        )
        .unwrap()
        .1
        .unwrap()
    };
    n.sealed = vec![other];
    out.push(n);
    let mut n = from(
        b,
        "headers: a clear copy changed on the way",
        "clear_headers_mismatch",
    );
    n.visible[0].value = Some(b"us-east");
    out.push(n);
    let mut n = from(
        b,
        "headers: a clear copy removed on the way",
        "clear_headers_mismatch",
    );
    n.visible.remove(1);
    out.push(n);
    let mut n = from(
        b,
        "headers: clear copies reordered on the way",
        "clear_headers_mismatch",
    );
    n.visible.swap(0, 1);
    out.push(n);
    let mut n = from(
        b,
        "headers: a header added under a clear name",
        "clear_headers_mismatch",
    );
    n.visible.push(AppHeader {
        name: "route",
        value: Some(b"eu-west"),
        clear: false,
    });
    out.push(n);
    let mut n = from(
        b,
        "headers: flipped HEADERS flag under a bound key",
        "sealed_headers_unexpected",
    );
    n.header[1] &= !FLAG_HEADERS;
    out.push(n);
    out
}

fn bless_headers_vectors() {
    let sealed: Vec<HeadersSealed> = headers_positives()
        .into_iter()
        .map(seal_headers_vector)
        .collect();
    let negs = headers_negatives(&sealed);
    let mut objects: Vec<Vec<(&str, String)>> = Vec::new();
    for s in &sealed {
        let p = &s.p.base;
        let k = DataKey::from_bytes(s.key);
        let mut fields = vec![
            ("description", json_str(p.description)),
            ("epoch_secret", json_str(&hex(&p.epoch_secret))),
            ("producer", json_str(&hex(&p.producer))),
            ("epoch", p.epoch.to_string()),
            ("counter", p.counter.to_string()),
            ("topic", json_str(p.topic)),
            ("topic_hex", json_str(&hex(p.topic.as_bytes()))),
            ("key_binding", json_str(&p.binding.to_json())),
            ("plaintext", json_str(&hex(&p.plaintext))),
            ("data_key", json_str(&hex(&s.key))),
            ("header", json_str(&hex(&s.header))),
            ("ciphertext", json_str(&hex(&s.ct))),
            ("cipher", json_str(p.sealing.cipher.name())),
            (
                "cipher_key",
                json_str(&hex(&*k.cipher_key(p.sealing.cipher))),
            ),
            ("compression", json_str(p.sealing.compression.name())),
        ];
        if p.sealing.compression != Compression::None {
            let packed = compressed_form(p.sealing.compression, &p.plaintext);
            fields.push(("compressed", json_str(&hex(&packed))));
        }
        fields.push(("headers", headers_json(&app(&s.p.headers))));
        fields.push(("header_list", json_str(&hex(&s.list))));
        fields.push((
            "headers_key",
            json_str(&hex(&*k.headers_key(p.sealing.cipher))),
        ));
        fields.push(("sealed_headers", json_str(&hex(&s.sealed))));
        objects.push(fields);
    }
    for n in &negs {
        let sealed: Vec<String> = n.sealed.iter().map(|v| json_str(&hex(v))).collect();
        objects.push(vec![
            (
                "description",
                json_str(&format!("NEGATIVE: {}", n.description)),
            ),
            ("data_key", json_str(&hex(&n.key))),
            ("topic", json_str(&n.topic)),
            ("topic_hex", json_str(&hex(n.topic.as_bytes()))),
            ("key_binding", json_str(&n.binding.to_json())),
            ("header", json_str(&hex(&n.header))),
            ("ciphertext", json_str(&hex(&n.ct))),
            ("sealed_headers", format!("[{}]", sealed.join(", "))),
            ("visible_headers", headers_json(&n.visible)),
            ("expected_error", json_str(n.expected_error)),
        ]);
    }
    let mut out = String::from("[\n");
    for (i, fields) in objects.iter().enumerate() {
        out.push_str("  {\n");
        for (j, (name, value)) in fields.iter().enumerate() {
            let comma = if j + 1 < fields.len() { "," } else { "" };
            writeln!(out, "    \"{name}\": {value}{comma}").unwrap();
        }
        out.push_str(if i + 1 < objects.len() {
            "  },\n"
        } else {
            "  }\n"
        });
    }
    out.push_str("]\n");
    let _: Value = serde_json::from_str(&out).unwrap();
    std::fs::write(headers_vectors_path(), out).unwrap();
}

fn load_headers() -> Vec<Value> {
    let text = std::fs::read_to_string(headers_vectors_path()).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Array(items) => items,
        other => panic!("vectors file is not an array: {other}"),
    }
}

#[test]
fn headers_positive_vectors_seal_and_open() {
    let mut checked = 0;
    for v in load_headers()
        .iter()
        .filter(|v| v.get("expected_error").is_none())
    {
        let what = field(v, "description");
        let secret: [u8; 32] = unhex(field(v, "epoch_secret")).try_into().unwrap();
        let producer: [u8; 8] = unhex(field(v, "producer")).try_into().unwrap();
        let key_id = KeyId {
            producer: InstanceId(producer),
            epoch: num(v, "epoch"),
        };
        let topic = topic_of(v);
        let binding = Binding::from_json(field(v, "key_binding"));
        let plaintext = unhex(field(v, "plaintext"));
        let cipher = Cipher::from_name(field(v, "cipher")).unwrap();
        let compression = Compression::from_name(field(v, "compression")).unwrap();
        let key = DataKey::derive(&EpochSecret::from_bytes(secret), key_id, &topic);
        assert_eq!(hex(key.as_bytes()), field(v, "data_key"), "{what}");
        assert_eq!(
            hex(&*key.headers_key(cipher)),
            field(v, "headers_key"),
            "{what}: headers key"
        );
        let headers = headers_from_json(&v["headers"]);
        let list = encode_header_list(&borrow_headers(&headers)).unwrap();
        assert_eq!(hex(&list), field(v, "header_list"), "{what}: list");
        assert_eq!(
            decode_header_list(&list).unwrap(),
            borrow_headers(&headers),
            "{what}"
        );
        let mut buf = plaintext.clone();
        let (header, sealed) = seal_record(
            &key,
            key_id,
            num(v, "counter"),
            &topic,
            binding.as_binding(),
            Sealing {
                cipher,
                compression,
            },
            &mut buf,
            Some(&list),
        )
        .unwrap();
        let sealed = sealed.unwrap();
        assert_eq!(hex(&header.encode()), field(v, "header"), "{what}: header");
        assert_eq!(hex(&buf), field(v, "ciphertext"), "{what}: ciphertext");
        assert_eq!(
            hex(&sealed),
            field(v, "sealed_headers"),
            "{what}: sealed headers"
        );
        let visible: Vec<AppHeader<'_>> = borrow_headers(&headers)
            .into_iter()
            .filter(|h| h.clear)
            .collect();
        let opened = open_record(
            &key,
            &header,
            &topic,
            binding.as_binding(),
            &mut buf,
            &[&sealed],
            &visible,
        )
        .unwrap();
        assert_eq!(buf, plaintext, "{what}: open");
        assert_eq!(opened.as_deref().map(Vec::as_slice), Some(&list[..]));
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} positive headers vectors");
}

#[test]
fn headers_negative_vectors_fail_as_named() {
    let mut checked = 0;
    for v in load_headers()
        .iter()
        .filter(|v| v.get("expected_error").is_some())
    {
        let what = field(v, "description");
        let key = DataKey::from_bytes(unhex(field(v, "data_key")).try_into().unwrap());
        let topic = topic_of(v);
        let binding = Binding::from_json(field(v, "key_binding"));
        let ciphertext = unhex(field(v, "ciphertext"));
        let sealed: Vec<Vec<u8>> = v["sealed_headers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| unhex(s.as_str().unwrap()))
            .collect();
        let sealed: Vec<&[u8]> = sealed.iter().map(Vec::as_slice).collect();
        let visible = headers_from_json(&v["visible_headers"]);
        let mut buf = ciphertext.clone();
        let result = RecordHeader::decode(&unhex(field(v, "header"))).and_then(|header| {
            open_record(
                &key,
                &header,
                &topic,
                binding.as_binding(),
                &mut buf,
                &sealed,
                &borrow_headers(&visible),
            )
        });
        let err = result.expect_err(what);
        assert_eq!(
            error_kind(&err),
            field(v, "expected_error"),
            "{what}: {err}"
        );
        assert_eq!(buf, ciphertext, "{what}: value must be unchanged");
        checked += 1;
    }
    assert!(checked >= 13, "only {checked} negative headers vectors");
}

// ------------------------------------------------ tokenized keys (section 13)

fn keys_vectors_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/format-v1-keys.json")
}

const KEYS_TOPIC: &str = "customers";

fn token_secret() -> [u8; 32] {
    core::array::from_fn(|i| (i as u8).wrapping_mul(13) ^ 0xa7)
}

/// Keys of every regime: empty, FF1 (3..=15 bytes), PRF (16 and more).
fn token_keys() -> Vec<Vec<u8>> {
    vec![
        b"".to_vec(),
        b"abc".to_vec(),
        42u32.to_be_bytes().to_vec(),
        1_000_042u64.to_be_bytes().to_vec(),
        b"customer-000042".to_vec(),
        b"alice@example.com".to_vec(),
        pattern(16, 3),
        pattern(300, 9),
    ]
}

/// One record sealed with a tokenized key: (description, key id, counter,
/// sealing, real key, plaintext, headers list).
#[allow(clippy::type_complexity)]
fn keyed_records() -> Vec<(
    &'static str,
    u32,
    u32,
    Sealing,
    Vec<u8>,
    Vec<u8>,
    Option<Vec<u8>>,
    bool,
)> {
    let hdrs = encode_header_list(&[AppHeader {
        name: "tenant",
        value: Some(b"acme"),
        clear: false,
    }])
    .unwrap()
    .to_vec();
    vec![
        (
            "tokenized key, ChaCha20-Poly1305, key not bound",
            3,
            0,
            CHACHA,
            b"alice@example.com".to_vec(),
            b"{\"balance\":10}".to_vec(),
            None,
            false,
        ),
        (
            "tokenized 8-byte key (FF1), AES-256-GCM, the token bound into the value's AAD",
            3,
            1,
            sealing(Cipher::Aes256Gcm, Compression::None),
            1_000_042u64.to_be_bytes().to_vec(),
            b"paid".to_vec(),
            None,
            true,
        ),
        (
            "tokenized key with sealed headers, zstd",
            4,
            7,
            sealing(Cipher::ChaCha20Poly1305, Compression::Zstd),
            b"customer-000042".to_vec(),
            json_like(400),
            Some(hdrs),
            false,
        ),
        (
            "tokenized empty key, tombstone-like empty value",
            4,
            8,
            CHACHA,
            Vec::new(),
            Vec::new(),
            None,
            true,
        ),
    ]
}

struct KeyedSealed {
    description: &'static str,
    epoch: u32,
    counter: u32,
    sealing: Sealing,
    key: Vec<u8>,
    token: Vec<u8>,
    bound: bool,
    plaintext: Vec<u8>,
    list: Option<Vec<u8>>,
    data_key: [u8; 32],
    header: Vec<u8>,
    ct: Vec<u8>,
    sealed_headers: Option<Vec<u8>>,
    sealed_key: Vec<u8>,
}

const KEYS_PRODUCER: [u8; 8] = *b"keys-001";

fn keys_data_key(epoch: u32) -> (KeyId, DataKey) {
    let key_id = KeyId {
        producer: InstanceId(KEYS_PRODUCER),
        epoch,
    };
    let secret = EpochSecret::from_bytes(core::array::from_fn(|i| i as u8 ^ 0x3c));
    (key_id, DataKey::derive(&secret, key_id, KEYS_TOPIC))
}

fn binding_of(bound: bool, token: &[u8]) -> KeyBinding<'_> {
    if bound {
        KeyBinding::Bytes(token)
    } else {
        KeyBinding::Unbound
    }
}

fn seal_keyed() -> Vec<KeyedSealed> {
    let ts = TokenSecret::from_bytes(token_secret());
    keyed_records()
        .into_iter()
        .map(
            |(description, epoch, counter, sealing, key, plaintext, list, bound)| {
                let (key_id, dk) = keys_data_key(epoch);
                let token = ts.token(KEYS_TOPIC, &key).unwrap().to_vec();
                let mut ct = plaintext.clone();
                let r = seal_record_parts(
                    &dk,
                    key_id,
                    counter,
                    KEYS_TOPIC,
                    binding_of(bound, &token),
                    sealing,
                    &mut ct,
                    list.as_deref(),
                    Some(TokenizedKey {
                        token: &token,
                        key: &key,
                    }),
                )
                .unwrap();
                assert!(r.header.has_token_key());
                KeyedSealed {
                    description,
                    epoch,
                    counter,
                    sealing,
                    key,
                    token,
                    bound,
                    plaintext,
                    list,
                    data_key: *dk.as_bytes(),
                    header: r.header.encode().to_vec(),
                    ct,
                    sealed_headers: r.sealed_headers,
                    sealed_key: r.sealed_key.unwrap(),
                }
            },
        )
        .collect()
}

/// (description, record index, e2ee.k values, key on the wire, header, expected error)
#[allow(clippy::type_complexity)]
fn keyed_negatives(
    all: &[KeyedSealed],
) -> Vec<(
    String,
    usize,
    Vec<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<u8>,
    &'static str,
)> {
    let mut out = Vec::new();
    let mut neg = |d: &str,
                   i: usize,
                   f: &dyn Fn(&mut Vec<Vec<u8>>, &mut Option<Vec<u8>>, &mut Vec<u8>),
                   e| {
        let s: &KeyedSealed = &all[i];
        let (mut sealed, mut wire, mut header) = (
            vec![s.sealed_key.clone()],
            Some(s.token.clone()),
            s.header.clone(),
        );
        f(&mut sealed, &mut wire, &mut header);
        out.push((d.to_owned(), i, sealed, wire, header, e));
    };
    neg(
        "e2ee.k bit flipped",
        0,
        &|s, _, _| s[0][0] ^= 1,
        "authentication",
    );
    neg(
        "e2ee.k tag bit flipped",
        0,
        &|s, _, _| *s[0].last_mut().unwrap() ^= 0x80,
        "authentication",
    );
    neg(
        "e2ee.k truncated to 15 bytes",
        0,
        &|s, _, _| s[0].truncate(15),
        "authentication",
    );
    neg(
        "e2ee.k stripped",
        0,
        &|s, _, _| s.clear(),
        "sealed_key_missing",
    );
    neg(
        "e2ee.k duplicated",
        0,
        &|s, _, _| s.push(s[0].clone()),
        "sealed_key_duplicate",
    );
    neg(
        "TOKEN_KEY flag stripped, e2ee.k kept",
        0,
        &|_, _, h| h[1] &= !FLAG_TOKEN_KEY,
        "sealed_key_unexpected",
    );
    neg(
        "TOKEN_KEY flag and e2ee.k stripped",
        0,
        &|s, _, h| {
            h[1] &= !FLAG_TOKEN_KEY;
            s.clear();
        },
        "authentication",
    );
    neg(
        "the token on the wire changed (same length)",
        0,
        &|_, w, _| {
            w.as_mut().unwrap()[0] ^= 1;
        },
        "authentication",
    );
    neg(
        "the token on the wire replaced by a null key",
        0,
        &|_, w, _| *w = None,
        "sealed_key_unexpected",
    );
    neg(
        "e2ee.k of another record (counter 1) spliced in",
        1,
        &|s, _, _| {
            s[0] = all[0].sealed_key.clone();
        },
        "authentication",
    );
    neg(
        "the token on the wire changed under a bound key",
        1,
        &|_, w, _| {
            w.as_mut().unwrap()[7] ^= 0x10;
        },
        "authentication",
    );
    out
}

fn keys_token_json() -> Vec<Value> {
    let ts = TokenSecret::from_bytes(token_secret());
    token_keys()
        .iter()
        .map(|k| {
            serde_json::json!({
                "description": format!("token of a {}-byte key", k.len()),
                "token_secret": hex(&token_secret()),
                "topic": KEYS_TOPIC,
                "key": hex(k),
                "token": hex(&ts.token(KEYS_TOPIC, k).unwrap()),
            })
        })
        .collect()
}

#[test]
#[ignore = "regenerates tests/vectors/format-v1-keys.json; needs KAFKA_E2EE_BLESS=1"]
fn bless_keys_vectors() {
    assert_eq!(std::env::var("KAFKA_E2EE_BLESS").as_deref(), Ok("1"));
    let sealed = seal_keyed();
    let mut out = keys_token_json();
    for s in &sealed {
        let dk = DataKey::from_bytes(s.data_key);
        let mut v = serde_json::json!({
            "description": s.description,
            "token_secret": hex(&token_secret()),
            "producer": hex(&KEYS_PRODUCER),
            "epoch": s.epoch,
            "counter": s.counter,
            "topic": KEYS_TOPIC,
            "key": hex(&s.key),
            "token": hex(&s.token),
            "key_bound": s.bound,
            "plaintext": hex(&s.plaintext),
            "cipher": s.sealing.cipher.name(),
            "compression": s.sealing.compression.name(),
            "data_key": hex(&s.data_key),
            "record_key_key": hex(&*dk.record_key_key(s.sealing.cipher)),
            "header": hex(&s.header),
            "ciphertext": hex(&s.ct),
            "sealed_key": hex(&s.sealed_key),
        });
        if let (Some(l), Some(h)) = (&s.list, &s.sealed_headers) {
            v["header_list"] = Value::String(hex(l));
            v["sealed_headers"] = Value::String(hex(h));
        }
        out.push(v);
    }
    for (d, i, sealed_keys, wire, header, e) in keyed_negatives(&sealed) {
        let s = &sealed[i];
        let mut v = serde_json::json!({
            "description": format!("NEGATIVE: {d}"),
            "data_key": hex(&s.data_key),
            "topic": KEYS_TOPIC,
            "key_bound": s.bound,
            "header": hex(&header),
            "ciphertext": hex(&s.ct),
            "sealed_keys": sealed_keys.iter().map(|k| hex(k)).collect::<Vec<_>>(),
            "wire_key": wire.as_deref().map(hex),
            "expected_error": e,
        });
        if let Some(h) = &s.sealed_headers {
            v["sealed_headers"] = Value::String(hex(h));
        }
        out.push(v);
    }
    let text = serde_json::to_string_pretty(&Value::Array(out)).unwrap() + "\n";
    std::fs::write(keys_vectors_path(), text).unwrap();
}

fn load_keys() -> Vec<Value> {
    let text = std::fs::read_to_string(keys_vectors_path()).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Array(items) => items,
        other => panic!("vectors file is not an array: {other}"),
    }
}

fn opt_hex(v: &Value, name: &str) -> Option<Vec<u8>> {
    v.get(name).and_then(Value::as_str).map(unhex)
}

#[test]
fn keys_vectors_tokens_seal_and_open() {
    let (mut tokens, mut records) = (0, 0);
    for v in load_keys()
        .iter()
        .filter(|v| v.get("expected_error").is_none())
    {
        let what = field(v, "description");
        let ts = TokenSecret::from_bytes(unhex(field(v, "token_secret")).try_into().unwrap());
        let topic = field(v, "topic");
        let key = unhex(field(v, "key"));
        let token = ts.token(topic, &key).unwrap();
        assert_eq!(hex(&token), field(v, "token"), "{what}: token");
        assert_eq!(token.len(), key.len(), "{what}: length-preserving");
        let Some(epoch) = v.get("epoch") else {
            tokens += 1;
            continue;
        };
        let (key_id, dk) = keys_data_key(u32::try_from(epoch.as_u64().unwrap()).unwrap());
        assert_eq!(hex(dk.as_bytes()), field(v, "data_key"), "{what}");
        let cipher = Cipher::from_name(field(v, "cipher")).unwrap();
        let compression = Compression::from_name(field(v, "compression")).unwrap();
        assert_eq!(
            hex(&*dk.record_key_key(cipher)),
            field(v, "record_key_key"),
            "{what}"
        );
        let bound = v["key_bound"].as_bool().unwrap();
        let list = opt_hex(v, "header_list");
        let plaintext = unhex(field(v, "plaintext"));
        let mut buf = plaintext.clone();
        let r = seal_record_parts(
            &dk,
            key_id,
            num(v, "counter"),
            topic,
            binding_of(bound, &token),
            Sealing {
                cipher,
                compression,
            },
            &mut buf,
            list.as_deref(),
            Some(TokenizedKey {
                token: &token,
                key: &key,
            }),
        )
        .unwrap();
        assert_eq!(
            hex(&r.header.encode()),
            field(v, "header"),
            "{what}: header"
        );
        assert_eq!(hex(&buf), field(v, "ciphertext"), "{what}: ciphertext");
        let sealed_key = r.sealed_key.unwrap();
        assert_eq!(
            hex(&sealed_key),
            field(v, "sealed_key"),
            "{what}: sealed key"
        );
        assert_eq!(
            r.sealed_headers.as_deref().map(hex),
            opt_hex(v, "sealed_headers").as_deref().map(hex)
        );
        let sh: Vec<&[u8]> = r.sealed_headers.iter().map(Vec::as_slice).collect();
        let opened = open_record_parts(
            &dk,
            &r.header,
            topic,
            binding_of(bound, &token),
            &mut buf,
            RecordExtras {
                sealed_headers: &sh,
                wire_key: Some(&token),
                sealed_keys: &[&sealed_key],
                ..RecordExtras::default()
            },
        )
        .unwrap();
        assert_eq!(buf, plaintext, "{what}: value");
        assert_eq!(
            opened.key.as_deref().map(Vec::as_slice),
            Some(&key[..]),
            "{what}: key"
        );
        assert_eq!(
            opened.headers.as_deref().map(Vec::as_slice),
            list.as_deref()
        );
        records += 1;
    }
    assert!(
        tokens >= 8 && records >= 4,
        "{tokens} token and {records} record vectors"
    );
}

#[test]
fn keys_negative_vectors_fail_as_named() {
    let mut checked = 0;
    for v in load_keys()
        .iter()
        .filter(|v| v.get("expected_error").is_some())
    {
        let what = field(v, "description");
        let dk = DataKey::from_bytes(unhex(field(v, "data_key")).try_into().unwrap());
        let wire = v["wire_key"].as_str().map(unhex);
        let sealed_keys: Vec<Vec<u8>> = v["sealed_keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| unhex(s.as_str().unwrap()))
            .collect();
        let sealed_keys: Vec<&[u8]> = sealed_keys.iter().map(Vec::as_slice).collect();
        let sh = opt_hex(v, "sealed_headers");
        let sh: Vec<&[u8]> = sh.iter().map(Vec::as_slice).collect();
        let ciphertext = unhex(field(v, "ciphertext"));
        let mut buf = ciphertext.clone();
        let bound = v["key_bound"].as_bool().unwrap();
        let binding = match (&wire, bound) {
            (_, false) => KeyBinding::Unbound,
            (Some(w), true) => KeyBinding::Bytes(w),
            (None, true) => KeyBinding::Null,
        };
        let err = RecordHeader::decode(&unhex(field(v, "header")))
            .and_then(|header| {
                open_record_parts(
                    &dk,
                    &header,
                    field(v, "topic"),
                    binding,
                    &mut buf,
                    RecordExtras {
                        sealed_headers: &sh,
                        wire_key: wire.as_deref(),
                        sealed_keys: &sealed_keys,
                        ..RecordExtras::default()
                    },
                )
            })
            .expect_err(what);
        assert_eq!(
            error_kind(&err),
            field(v, "expected_error"),
            "{what}: {err}"
        );
        assert_eq!(buf, ciphertext, "{what}: value must be unchanged");
        checked += 1;
    }
    assert!(checked >= 11, "only {checked} negative keys vectors");
}

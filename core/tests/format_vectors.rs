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
    decode_header_list, encode_header_list, open_in_place, open_record, seal_in_place_with,
    seal_record, AppHeader, Cipher, Compression, DataKey, EpochSecret, FormatError, InstanceId,
    KeyBinding, KeyId, RecordHeader, Sealing, FLAG_HEADERS,
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

    let mut n = base("reserved flag bit 6 set", "reserved_flags");
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

//! Seal and open next to the raw ring ChaCha20-Poly1305 they are built on, on the
//! same buffers in the same run. After criterion's groups, prints the ratio
//! (seal + open) / (raw encrypt + raw decrypt) per size from its own timing
//! loop. Target: at most 1.3 at 1 KiB.
//!
//! The same for AES-256-GCM (`e2ee.cipher=aes-256-gcm`), raw and through
//! seal/open and the engine, with its time against ChaCha20-Poly1305's in
//! the same loop; and the cost of `e2ee.compression` on a 1 KiB JSON-like
//! value.
//!
//! The "raw+same AAD" column runs the raw AEAD with an AAD as long as seal's,
//! isolating what the format adds (AAD assembly, header, the copy kept to
//! restore a value whose tag fails) from the AEAD's own work on the AAD.
//!
//! And the cost of sealed application headers (`e2ee.headers=encrypt`,
//! docs/FORMAT.md section 12) per record, against the same record without
//! headers (`SEAL_OPEN_HEADERS=1` runs only that table).
//!
//! cargo bench -p kafka-e2ee-core --bench seal_open -- --warm-up-time 1 --measurement-time 2
//!
//! The data key is derived once, outside the loops: the key layer caches
//! derived keys per topic, so HKDF is not on the per-record path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use kafka_e2ee_core::format::{
    decode_header_list, encode_header_list, open_in_place, open_record, seal_in_place,
    seal_in_place_with, seal_record, AppHeader, Cipher, Compression, DataKey, EpochSecret,
    InstanceId, KeyBinding, KeyId, RecordHeader, Sealing,
};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

const SIZES: [(usize, &str); 4] = [
    (100, "100 B"),
    (1024, "1 KiB"),
    (16 * 1024, "16 KiB"),
    (1024 * 1024, "1 MiB"),
];
const TOPIC: &str = "payments.card-authorizations";
const RECORD_KEY: &[u8] = b"customer-00004217";

struct Fixture {
    key: DataKey,
    key_id: KeyId,
    raw: LessSafeKey,
    raw_aes: LessSafeKey,
    nonce: [u8; 12],
}

const AES: Sealing = Sealing {
    cipher: Cipher::Aes256Gcm,
    compression: Compression::None,
};

fn seal_with(f: &Fixture, sealing: Sealing, buf: &mut [u8]) -> RecordHeader {
    seal_in_place_with(
        &f.key,
        f.key_id,
        1,
        TOPIC,
        KeyBinding::Bytes(RECORD_KEY),
        sealing,
        buf,
    )
    .unwrap()
}

fn open(f: &Fixture, header: &RecordHeader, buf: &mut [u8]) {
    open_in_place(&f.key, header, TOPIC, KeyBinding::Bytes(RECORD_KEY), buf).unwrap()
}

fn fixture() -> Fixture {
    let key_id = KeyId {
        producer: InstanceId(*b"bench-01"),
        epoch: 7,
    };
    let key = DataKey::derive(&EpochSecret::from_bytes([0x42; 32]), key_id, TOPIC);
    let ring_key = |alg, bytes: &[u8]| LessSafeKey::new(UnboundKey::new(alg, bytes).unwrap());
    let raw = ring_key(&CHACHA20_POLY1305, key.as_bytes());
    let raw_aes = ring_key(&AES_256_GCM, &*key.cipher_key(Cipher::Aes256Gcm));
    Fixture {
        key,
        key_id,
        raw,
        raw_aes,
        nonce: [0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1],
    }
}

/// Raw AEAD encrypt then decrypt, in place.
fn raw_aead_round_trip(key: &LessSafeKey, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) {
    let tag = raw_encrypt(key, nonce, aad, buf);
    key.open_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        tag,
        black_box(buf),
        0..,
    )
    .unwrap();
}

fn raw_encrypt(key: &LessSafeKey, nonce: [u8; 12], aad: &[u8], buf: &mut [u8]) -> ring::aead::Tag {
    key.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        black_box(buf),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let f = fixture();
    for (size, label) in SIZES {
        let mut group = c.benchmark_group(format!("record {label}"));
        group.throughput(Throughput::Bytes(size as u64));
        let batch = if size >= 64 * 1024 {
            BatchSize::LargeInput
        } else {
            BatchSize::SmallInput
        };
        let mut buf = vec![0xa5u8; size];

        group.bench_function(BenchmarkId::new("raw_encrypt", size), |b| {
            b.iter(|| raw_encrypt(&f.raw, f.nonce, b"", &mut buf))
        });
        group.bench_function(BenchmarkId::new("seal", size), |b| {
            b.iter(|| {
                seal_in_place(
                    &f.key,
                    f.key_id,
                    1,
                    TOPIC,
                    KeyBinding::Bytes(RECORD_KEY),
                    black_box(&mut buf),
                )
            })
        });

        let mut raw_ct = vec![0xa5u8; size];
        let raw_tag = raw_encrypt(&f.raw, f.nonce, b"", &mut raw_ct);
        group.bench_function(BenchmarkId::new("raw_decrypt", size), |b| {
            b.iter_batched_ref(
                || raw_ct.clone(),
                |ct| {
                    f.raw
                        .open_in_place_separate_tag(
                            Nonce::assume_unique_for_key(f.nonce),
                            Aad::empty(),
                            raw_tag,
                            ct,
                            0..,
                        )
                        .unwrap();
                },
                batch,
            )
        });

        let mut sealed = vec![0xa5u8; size];
        let header = seal_in_place(
            &f.key,
            f.key_id,
            1,
            TOPIC,
            KeyBinding::Bytes(RECORD_KEY),
            &mut sealed,
        )
        .unwrap();
        group.bench_function(BenchmarkId::new("open", size), |b| {
            b.iter_batched_ref(
                || sealed.clone(),
                |ct| {
                    open_in_place(&f.key, &header, TOPIC, KeyBinding::Bytes(RECORD_KEY), ct)
                        .unwrap()
                },
                batch,
            )
        });

        group.bench_function(BenchmarkId::new("raw_aes_encrypt", size), |b| {
            b.iter(|| raw_encrypt(&f.raw_aes, f.nonce, b"", &mut buf))
        });
        group.bench_function(BenchmarkId::new("seal_aes", size), |b| {
            b.iter(|| seal_with(&f, AES, black_box(&mut buf)))
        });
        let mut sealed_aes = vec![0xa5u8; size];
        let header_aes = seal_with(&f, AES, &mut sealed_aes);
        group.bench_function(BenchmarkId::new("open_aes", size), |b| {
            b.iter_batched_ref(|| sealed_aes.clone(), |ct| open(&f, &header_aes, ct), batch)
        });
        group.finish();
    }
}

/// Average time of one round trip over `iters` iterations, best of `rounds`
/// (the minimum is the least disturbed by other load on the machine).
fn best_of(rounds: usize, iters: usize, mut round_trip: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                round_trip();
            }
            start.elapsed() / iters as u32
        })
        .min()
        .unwrap()
}

/// Raw AES-256-GCM encrypt then decrypt, in place.
fn raw_aes_round_trip(f: &Fixture, buf: &mut [u8]) {
    raw_aead_round_trip(&f.raw_aes, f.nonce, b"", buf);
}

/// The baseline: raw ChaCha20-Poly1305 encrypt then decrypt, in place.
fn raw_round_trip(f: &Fixture, aad: &[u8], buf: &mut [u8]) {
    raw_aead_round_trip(&f.raw, f.nonce, aad, buf);
}

fn print_ratios() {
    let f = fixture();
    println!();
    println!("seal+open vs raw ChaCha20-Poly1305 encrypt+decrypt (same buffer, same run, best of 7 rounds)");
    println!(
        "{:>8}  {:>14}  {:>14}  {:>14}  {:>7}",
        "size", "raw enc+dec", "raw+same AAD", "seal+open", "ratio"
    );
    for (size, label) in SIZES {
        let iters = (64 * 1024 * 1024 / size).clamp(20, 200_000);
        let mut buf = vec![0x5au8; size];
        let (mut raw_time, mut ours_time) = (Duration::MAX, Duration::MAX);
        // Raw AEAD with an AAD as long as seal's: isolates what the format
        // adds (AAD assembly, header) from Poly1305's own work on the AAD.
        let same_aad = vec![7u8; 13 + 2 + TOPIC.len() + 18 + 4 + RECORD_KEY.len()];
        let mut same_aad_time = Duration::MAX;
        // Alternate the two so drift in machine load hits both alike.
        for _ in 0..7 {
            raw_time = raw_time.min(best_of(1, iters, || raw_round_trip(&f, b"", &mut buf)));
            same_aad_time = same_aad_time.min(best_of(1, iters, || {
                raw_round_trip(&f, &same_aad, &mut buf)
            }));
            ours_time = ours_time.min(best_of(1, iters, || {
                let header = seal_in_place(
                    &f.key,
                    f.key_id,
                    1,
                    TOPIC,
                    KeyBinding::Bytes(RECORD_KEY),
                    black_box(&mut buf),
                )
                .unwrap();
                open_in_place(
                    &f.key,
                    &header,
                    TOPIC,
                    KeyBinding::Bytes(RECORD_KEY),
                    black_box(&mut buf),
                )
                .unwrap();
            }));
        }
        println!(
            "{label:>8}  {:>14?}  {:>14?}  {:>14?}  {:>6.3}x",
            raw_time,
            same_aad_time,
            ours_time,
            ours_time.as_secs_f64() / raw_time.as_secs_f64()
        );
    }
    print_cipher_ratios(&f);
    print_compression_cost(&f);
}

/// AES-256-GCM against ChaCha20-Poly1305, raw and through seal+open, in one
/// alternating loop per size.
fn print_cipher_ratios(f: &Fixture) {
    println!();
    println!("AES-256-GCM vs ChaCha20-Poly1305 (same buffer, same run, best of 7 rounds)");
    println!(
        "{:>8}  {:>14}  {:>14}  {:>16}  {:>16}  {:>9}",
        "size", "raw ChaCha", "raw AES-GCM", "seal+open ChaCha", "seal+open AES", "AES/ChaCha"
    );
    for (size, label) in SIZES {
        let iters = (64 * 1024 * 1024 / size).clamp(20, 200_000);
        let mut buf = vec![0x5au8; size];
        let mut t = [Duration::MAX; 4];
        for _ in 0..7 {
            t[0] = t[0].min(best_of(1, iters, || raw_round_trip(f, b"", &mut buf)));
            t[1] = t[1].min(best_of(1, iters, || raw_aes_round_trip(f, &mut buf)));
            t[2] = t[2].min(best_of(1, iters, || {
                let h = seal_with(f, Sealing::default(), black_box(&mut buf));
                open(f, &h, black_box(&mut buf));
            }));
            t[3] = t[3].min(best_of(1, iters, || {
                let h = seal_with(f, AES, black_box(&mut buf));
                open(f, &h, black_box(&mut buf));
            }));
        }
        println!(
            "{label:>8}  {:>14?}  {:>14?}  {:>16?}  {:>16?}  {:>8.3}x",
            t[0],
            t[1],
            t[2],
            t[3],
            t[3].as_secs_f64() / t[2].as_secs_f64()
        );
    }
}

/// A 1 KiB JSON-like record (the kind the disk-size measurement uses).
fn json_like_record(i: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    let mut n = 0;
    while out.len() < 1024 {
        out.extend_from_slice(
            format!(
                "{{\"order_id\":{},\"customer\":\"customer-{:05}\",\"status\":\"{}\",\"amount\":{}.{:02},\"currency\":\"EUR\"}},",
                i * 10 + n,
                (i * 7 + n) % 50_000,
                ["PENDING", "PAID", "SHIPPED"][n % 3],
                (i * 31 + n) % 1000,
                n % 100
            )
            .as_bytes(),
        );
        n += 1;
    }
    out.truncate(1024);
    out
}

/// What `e2ee.compression` adds to seal+open of a 1 KiB JSON-like value,
/// and how many bytes the sealed part takes (the rest is zero padding).
fn print_compression_cost(f: &Fixture) {
    println!();
    println!("e2ee.compression on a 1 KiB JSON-like value, seal+open (ChaCha20-Poly1305), best of 7 rounds");
    println!(
        "{:>8}  {:>14}  {:>12}  {:>8}",
        "setting", "seal+open", "sealed bytes", "ratio"
    );
    let record = json_like_record(1);
    let mut times = Vec::new();
    for compression in Compression::ALL {
        let sealing = Sealing {
            cipher: Cipher::ChaCha20Poly1305,
            compression,
        };
        let mut buf = record.clone();
        let mut best = Duration::MAX;
        for _ in 0..7 {
            best = best.min(best_of(1, 20_000, || {
                let h = seal_with(f, sealing, black_box(&mut buf));
                open(f, &h, black_box(&mut buf));
            }));
        }
        let h = seal_with(f, sealing, &mut buf);
        let sealed = buf.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
        let sealed = if h.compression() == Compression::None {
            buf.len()
        } else {
            sealed - 1
        };
        open(f, &h, &mut buf);
        assert_eq!(buf, record);
        times.push((compression, best, sealed));
    }
    let base = times[0].1;
    for (compression, t, sealed) in times {
        println!(
            "{:>8}  {:>14?}  {:>12}  {:>7.2}x",
            compression.name(),
            t,
            sealed,
            t.as_secs_f64() / base.as_secs_f64()
        );
    }
}

/// The path hosts call: `Engine::seal` and `Engine::open` (key lookup,
/// counter, locks) on a producer and a consumer that exchanged keys, at 1 KiB,
/// against the raw AEAD in the same run.
fn print_engine_ratio() {
    use kafka_e2ee_core::trust::{Authority, Identity, TopicPattern, TrustAnchor};
    use kafka_e2ee_core::{Engine, EngineConfig};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    let now = 1_790_000_000_000;
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let authority = Authority::generate(&mut rng);
    let trust = TrustAnchor::from_authorities(vec![authority.public_key()]);
    let t = || vec![TopicPattern::parse(TOPIC).unwrap()];
    let mut engine = |produce, consume, sealing| {
        let id = Identity::generate(
            "bench",
            produce,
            consume,
            now - 1,
            now + 1_000_000_000,
            &authority,
            &mut rng,
        );
        let r = Box::new(ChaCha20Rng::seed_from_u64(rand_core::RngCore::next_u64(
            &mut rng,
        )));
        let config = EngineConfig {
            sealing,
            ..EngineConfig::default()
        };
        Engine::new(config, id, trust.clone(), now, r, None).unwrap()
    };
    let chacha = Sealing::default();
    let (p, c) = (engine(t(), vec![], chacha), engine(vec![], t(), chacha));
    let (pa, ca) = (engine(t(), vec![], AES), engine(vec![], t(), AES));
    let f = fixture();
    let (mut b1, mut b2) = (vec![0x5au8; 1024], vec![0x5au8; 1024]);
    if std::env::var_os("SEAL_OPEN_PROFILE_AES").is_some() {
        // Only the AES-256-GCM engine round trips, for a profiler
        // (docs/PERFORMANCE.md, "Where the rest goes").
        for _ in 0..20 {
            engine_round_trips(&pa, &ca, now, || {});
        }
        return;
    }
    let engine_time = engine_round_trips(&p, &c, now, || raw_round_trip(&f, b"", &mut b1));
    let aes_time = engine_round_trips(&pa, &ca, now, || raw_aes_round_trip(&f, &mut b2));
    println!();
    println!("Engine::seal + Engine::open vs raw encrypt+decrypt, 1 KiB, best of 7 rounds");
    for (name, (raw, ours)) in [
        ("ChaCha20-Poly1305", engine_time),
        ("AES-256-GCM", aes_time),
    ] {
        println!(
            "  {name:>17}  {:>14?}  {:>14?}  {:>6.3}x",
            raw,
            ours,
            ours.as_secs_f64() / raw.as_secs_f64()
        );
    }
    println!(
        "  engine AES-256-GCM / engine ChaCha20-Poly1305: {:.3}x",
        aes_time.1.as_secs_f64() / engine_time.1.as_secs_f64()
    );
}

/// Exchanges keys between `p` and `c`, then times `raw` against
/// seal on `p` + open on `c` at 1 KiB, alternating. (raw, engine) per round trip.
fn engine_round_trips(
    p: &kafka_e2ee_core::Engine,
    c: &kafka_e2ee_core::Engine,
    now: u64,
    mut raw: impl FnMut(),
) -> (Duration, Duration) {
    let mut buf = vec![0x5au8; 1024];
    let h = p
        .seal(TOPIC, KeyBinding::Bytes(RECORD_KEY), &mut buf)
        .unwrap();
    let _ = c.open(
        TOPIC,
        Some(&h),
        KeyBinding::Bytes(RECORD_KEY),
        &mut buf.clone(),
    );
    c.handle_timeout(now).unwrap();
    for _ in 0..10 {
        for (from, to) in [(p, c), (c, p)] {
            while let Some(m) = from.poll_transmit() {
                let _ = to.handle_control(now, &m.payload);
            }
        }
    }
    c.open(TOPIC, Some(&h), KeyBinding::Bytes(RECORD_KEY), &mut buf)
        .unwrap();
    let iters = 50_000;
    let (mut raw_time, mut engine_time) = (Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        raw_time = raw_time.min(best_of(1, iters, &mut raw));
        engine_time = engine_time.min(best_of(1, iters, || {
            let h = p
                .seal(TOPIC, KeyBinding::Bytes(RECORD_KEY), black_box(&mut buf))
                .unwrap();
            c.open(
                TOPIC,
                Some(&h),
                KeyBinding::Bytes(RECORD_KEY),
                black_box(&mut buf),
            )
            .unwrap();
        }));
    }
    (raw_time, engine_time)
}

/// What sealed application headers add per record: seal+open of a 1 KiB
/// value with three typical headers (a W3C traceparent, a tenant id and a
/// content type: 109 bytes of names and values), done as the hosts do it
/// (encode the list, seal value and list, open both, decode the list),
/// against the same value without headers, per cipher.
fn print_headers_cost(f: &Fixture) {
    println!();
    println!(
        "e2ee.headers=encrypt: 1 KiB value with 3 headers (109 bytes), seal+open, best of 7 rounds"
    );
    println!(
        "{:>18}  {:>12}  {:>14}  {:>8}",
        "cipher", "no headers", "3 headers", "ratio"
    );
    let headers = [
        AppHeader {
            name: "traceparent",
            value: Some(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            clear: false,
        },
        AppHeader {
            name: "tenant",
            value: Some(b"acme-eu-1"),
            clear: false,
        },
        AppHeader {
            name: "content-type",
            value: Some(b"application/json"),
            clear: false,
        },
    ];
    let record = vec![0x5a; 1024];
    for cipher in Cipher::ALL {
        let sealing = Sealing {
            cipher,
            compression: Compression::None,
        };
        let mut buf = record.clone();
        let mut plain = Duration::MAX;
        let mut with = Duration::MAX;
        for _ in 0..7 {
            plain = plain.min(best_of(1, 20_000, || {
                let h = seal_with(f, sealing, black_box(&mut buf));
                open(f, &h, black_box(&mut buf));
            }));
            with = with.min(best_of(1, 20_000, || {
                let list = encode_header_list(black_box(&headers)).unwrap();
                let (h, sealed) = seal_record(
                    &f.key,
                    f.key_id,
                    1,
                    TOPIC,
                    KeyBinding::Bytes(RECORD_KEY),
                    sealing,
                    black_box(&mut buf),
                    Some(&list),
                )
                .unwrap();
                let sealed = sealed.unwrap();
                let opened = open_record(
                    &f.key,
                    &h,
                    TOPIC,
                    KeyBinding::Bytes(RECORD_KEY),
                    black_box(&mut buf),
                    &[&sealed],
                    &[],
                )
                .unwrap()
                .unwrap();
                black_box(decode_header_list(&opened).unwrap());
            }));
        }
        assert_eq!(buf, record);
        println!(
            "{:>18}  {:>12?}  {:>14?}  {:>7.2}x",
            cipher.name(),
            plain,
            with,
            with.as_secs_f64() / plain.as_secs_f64()
        );
    }
}

/// What `e2ee.keys=tokenize` adds to a record (docs/FORMAT.md section 13):
/// the token of the key (FF1 for an 8-byte key, the HKDF PRF for a 24-byte
/// one) and the real key sealed in `e2ee.k` and opened again, done as the
/// hosts do it, against the same 1 KiB value with the key bound in clear.
fn print_keys_cost(f: &Fixture) {
    use kafka_e2ee_core::format::{
        open_record_parts, seal_record_parts, RecordExtras, TokenSecret, TokenizedKey,
    };
    println!();
    println!("e2ee.keys=tokenize: 1 KiB value, seal+open with the key's token, best of 7 rounds");
    println!(
        "{:>18}  {:>10}  {:>12}  {:>12}  {:>14}  {:>8}",
        "cipher", "key", "token only", "clear key", "tokenized", "ratio"
    );
    let secret = TokenSecret::from_bytes([0x42; 32]);
    let record = vec![0x5a; 1024];
    for cipher in Cipher::ALL {
        let sealing = Sealing {
            cipher,
            compression: Compression::None,
        };
        for key in [
            &b"\x00\x00\x00\x00\x00\x0f\x42\x40"[..],
            b"customer-0000042@acme.io",
        ] {
            let label = format!("{} bytes", key.len());
            let mut buf = record.clone();
            let (mut tok, mut plain, mut with) = (Duration::MAX, Duration::MAX, Duration::MAX);
            for _ in 0..7 {
                tok = tok.min(best_of(1, 20_000, || {
                    black_box(secret.token(TOPIC, black_box(key)).unwrap());
                }));
                plain = plain.min(best_of(1, 20_000, || {
                    let (h, _) = seal_record(
                        &f.key,
                        f.key_id,
                        1,
                        TOPIC,
                        KeyBinding::Bytes(key),
                        sealing,
                        black_box(&mut buf),
                        None,
                    )
                    .unwrap();
                    open_record(
                        &f.key,
                        &h,
                        TOPIC,
                        KeyBinding::Bytes(key),
                        black_box(&mut buf),
                        &[],
                        &[],
                    )
                    .unwrap();
                }));
                with = with.min(best_of(1, 20_000, || {
                    let token = secret.token(TOPIC, black_box(key)).unwrap();
                    let r = seal_record_parts(
                        &f.key,
                        f.key_id,
                        1,
                        TOPIC,
                        KeyBinding::Bytes(&token),
                        sealing,
                        black_box(&mut buf),
                        None,
                        Some(TokenizedKey { token: &token, key }),
                    )
                    .unwrap();
                    let sealed_key = r.sealed_key.unwrap();
                    let opened = open_record_parts(
                        &f.key,
                        &r.header,
                        TOPIC,
                        KeyBinding::Bytes(&token),
                        black_box(&mut buf),
                        RecordExtras {
                            wire_key: Some(&token),
                            sealed_keys: &[&sealed_key],
                            ..RecordExtras::default()
                        },
                    )
                    .unwrap();
                    black_box(opened.key.unwrap());
                }));
            }
            assert_eq!(buf, record);
            println!(
                "{:>18}  {:>10}  {:>12?}  {:>12?}  {:>14?}  {:>7.2}x",
                cipher.name(),
                label,
                tok,
                plain,
                with,
                with.as_secs_f64() / plain.as_secs_f64()
            );
        }
    }
}

criterion_group!(benches, bench);

fn main() {
    if std::env::var_os("SEAL_OPEN_HEADERS").is_some() {
        print_headers_cost(&fixture());
        return;
    }
    if std::env::var_os("SEAL_OPEN_KEYS").is_some() {
        print_keys_cost(&fixture());
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench`, not when the bench is smoke-run as a test.
    if std::env::var_os("SEAL_OPEN_PROFILE_AES").is_some() {
        print_engine_ratio();
        return;
    }
    if std::env::args().any(|a| a == "--bench") {
        print_ratios();
        print_headers_cost(&fixture());
        print_keys_cost(&fixture());
        print_engine_ratio();
    }
}

//! Seal and open next to the raw ChaCha20-Poly1305 they are built on, on the
//! same buffers in the same run. After criterion's groups, prints the ratio
//! (seal + open) / (raw encrypt + raw decrypt) per size from its own timing
//! loop. Target: at most 1.3 at 1 KiB.
//!
//! The "raw+same AAD" column runs the raw AEAD with an AAD as long as seal's.
//! Measured here: poly1305 0.8's AVX2 backend hashes a long value ~16% slower
//! when the padded AAD is not a multiple of 64 bytes (4 blocks), so most of
//! the large-value gap is that, not the format's own work.
//!
//! cargo bench -p kafka-e2ee-core --bench seal_open -- --warm-up-time 1 --measurement-time 2
//!
//! The data key is derived once, outside the loops: the key layer caches
//! derived keys per topic, so HKDF is not on the per-record path.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit, Nonce};
use criterion::{criterion_group, BatchSize, BenchmarkId, Criterion, Throughput};
use kafka_e2ee_core::format::{
    open_in_place, seal_in_place, DataKey, EpochSecret, InstanceId, KeyBinding, KeyId,
};

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
    raw: ChaCha20Poly1305,
    nonce: Nonce,
}

fn fixture() -> Fixture {
    let key_id = KeyId {
        producer: InstanceId(*b"bench-01"),
        epoch: 7,
    };
    let key = DataKey::derive(&EpochSecret::from_bytes([0x42; 32]), key_id, TOPIC);
    let raw = ChaCha20Poly1305::new(key.as_bytes().into());
    Fixture {
        key,
        key_id,
        raw,
        nonce: Nonce::from([0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1]),
    }
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
            b.iter(|| {
                f.raw
                    .encrypt_in_place_detached(&f.nonce, b"", black_box(&mut buf))
            })
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
        let raw_tag = f
            .raw
            .encrypt_in_place_detached(&f.nonce, b"", &mut raw_ct)
            .unwrap();
        group.bench_function(BenchmarkId::new("raw_decrypt", size), |b| {
            b.iter_batched_ref(
                || raw_ct.clone(),
                |ct| {
                    f.raw
                        .decrypt_in_place_detached(&f.nonce, b"", ct, &raw_tag)
                        .unwrap()
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

/// The baseline: raw ChaCha20-Poly1305 encrypt then decrypt, in place.
fn raw_round_trip(f: &Fixture, aad: &[u8], buf: &mut [u8]) {
    let tag = f
        .raw
        .encrypt_in_place_detached(&f.nonce, aad, black_box(&mut *buf))
        .unwrap();
    f.raw
        .decrypt_in_place_detached(&f.nonce, aad, black_box(buf), &tag)
        .unwrap();
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
    let mut engine = |produce, consume| {
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
        Engine::new(EngineConfig::default(), id, trust.clone(), now, r, None).unwrap()
    };
    let (p, c) = (engine(t(), vec![]), engine(vec![], t()));
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
        for (from, to) in [(&p, &c), (&c, &p)] {
            while let Some(m) = from.poll_transmit() {
                let _ = to.handle_control(now, &m.payload);
            }
        }
    }
    c.open(TOPIC, Some(&h), KeyBinding::Bytes(RECORD_KEY), &mut buf)
        .unwrap();
    let f = fixture();
    let iters = 50_000;
    let (mut raw_time, mut engine_time) = (Duration::MAX, Duration::MAX);
    for _ in 0..7 {
        raw_time = raw_time.min(best_of(1, iters, || raw_round_trip(&f, b"", &mut buf)));
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
    println!();
    println!("Engine::seal + Engine::open vs raw encrypt+decrypt, 1 KiB, best of 7 rounds");
    println!(
        "   1 KiB  {:>14?}  {:>14?}  {:>6.3}x",
        raw_time,
        engine_time,
        engine_time.as_secs_f64() / raw_time.as_secs_f64()
    );
}

criterion_group!(benches, bench);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // Only under `cargo bench`, not when the bench is smoke-run as a test.
    if std::env::args().any(|a| a == "--bench") {
        print_ratios();
        print_engine_ratio();
    }
}

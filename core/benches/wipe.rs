//! The cost of the wiping allocator (core/src/wipe.rs), which the native
//! hosts install: the same work with it and with the plain system allocator,
//! in the same run, alternating per round (best of 11), so that load drift
//! hits both alike.
//!
//! cargo bench -p kafka-e2ee-core --bench wipe
//!
//! - the record path: `Engine::seal` + `Engine::open` of 1 KiB (it allocates
//!   nothing, tests/no_alloc.rs, so it should cost nothing), next to the raw
//!   AEAD for the ratio docs/PERFORMANCE.md tracks;
//! - one allocation and free of 64 B, 1 KiB, 64 KiB and 1 MiB (what a host
//!   that allocated per record would pay);
//! - the control path: a consumer that starts, handshakes with a producer
//!   over Noise and receives a key; and a state save.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use kafka_e2ee_core::format::{Cipher, Compression, KeyBinding, Sealing};
use kafka_e2ee_core::state::MemoryStorage as Mem;
use kafka_e2ee_core::trust::{Authority, Identity, TopicPattern, TrustAnchor};
use kafka_e2ee_core::wipe::Wiping;
use kafka_e2ee_core::{Engine, EngineConfig, Storage};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore, SeedableRng};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};

static WIPE: AtomicBool = AtomicBool::new(false);
/// Blocks freed (or moved by `realloc`) so far, in either mode.
static FREES: AtomicUsize = AtomicUsize::new(0);

/// The hosts' allocator (`Wiping::SYSTEM`) while `WIPE` is set, else `System`.
struct Switch;

// SAFETY: both allocate from `System`; each call goes whole to one of them.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        FREES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract.
        unsafe {
            if WIPE.load(Ordering::Relaxed) {
                Wiping::SYSTEM.dealloc(ptr, layout)
            } else {
                System.dealloc(ptr, layout)
            }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        FREES.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller's contract.
        unsafe {
            if WIPE.load(Ordering::Relaxed) {
                Wiping::SYSTEM.realloc(ptr, layout, new_size)
            } else {
                System.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Switch = Switch;

const TOPIC: &str = "payments.card-authorizations";
const RECORD_KEY: &[u8] = b"customer-00004217";
const NOW: u64 = 1_790_000_000_000;
const ROUNDS: usize = 11;

/// Time per call of `f`, best of `ROUNDS` rounds of `iters` calls, for the
/// plain and the wiping allocator, alternating.
fn compare(iters: u32, mut f: impl FnMut()) -> (Duration, Duration) {
    let mut best = [Duration::MAX; 2];
    for _ in 0..ROUNDS {
        for (i, wipe) in [false, true].into_iter().enumerate() {
            WIPE.store(wipe, Ordering::Relaxed);
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            best[i] = best[i].min(start.elapsed() / iters);
        }
    }
    WIPE.store(false, Ordering::Relaxed);
    (best[0], best[1])
}

fn line(what: &str, (plain, wiping): (Duration, Duration)) {
    println!(
        "  {what:<44} {:>11.3?} {:>11.3?} {:>+7.1}%",
        plain,
        wiping,
        (wiping.as_secs_f64() / plain.as_secs_f64() - 1.0) * 100.0
    );
}

struct World {
    authority: Authority,
    trust: TrustAnchor,
    rng: ChaCha20Rng,
}

impl World {
    fn engine(&mut self, produce: bool, sealing: Sealing, storage: Option<Mem>) -> Engine {
        let t = vec![TopicPattern::parse(TOPIC).unwrap()];
        let (produce, consume) = if produce { (t, vec![]) } else { (vec![], t) };
        let id = Identity::generate(
            "bench",
            produce,
            consume,
            NOW - 1,
            NOW + 1_000_000_000,
            &self.authority,
            &mut self.rng,
        );
        let r = Box::new(ChaCha20Rng::seed_from_u64(self.rng.next_u64()));
        let config = EngineConfig {
            sealing,
            // Hundreds of consumers handshake at the same instant here.
            handshakes_per_sec: 1_000_000,
            ..EngineConfig::default()
        };
        let storage = storage.map(|s| Box::new(s) as Box<dyn Storage>);
        Engine::new(config, id, self.trust.clone(), NOW, r, storage).unwrap()
    }
}

fn pump(a: &Engine, b: &Engine) {
    for _ in 0..20 {
        let mut moved = false;
        for (from, to) in [(a, b), (b, a)] {
            while let Some(m) = from.poll_transmit() {
                moved = true;
                let _ = to.handle_control(NOW, &m.payload);
            }
        }
        if !moved {
            return;
        }
    }
}

/// A consumer that starts, asks for the key of `header`, handshakes with
/// `p` and opens `record`.
fn receive(w: &mut World, p: &Engine, header: &[u8], record: &[u8]) {
    let c = w.engine(false, Sealing::default(), None);
    let mut v = record.to_vec();
    let _ = c.open(TOPIC, Some(header), KeyBinding::Bytes(RECORD_KEY), &mut v);
    c.handle_timeout(NOW).unwrap();
    pump(p, &c);
    c.open(TOPIC, Some(header), KeyBinding::Bytes(RECORD_KEY), &mut v)
        .unwrap();
}

fn main() {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let authority = Authority::generate(&mut rng);
    let trust = TrustAnchor::from_authorities(vec![authority.public_key()]);
    let mut w = World {
        authority,
        trust,
        rng,
    };
    println!("wiping allocator against the plain system allocator, best of {ROUNDS} rounds");
    println!(
        "  {:<44} {:>11} {:>11} {:>8}",
        "", "System", "Wiping", "cost"
    );

    // The record path.
    let aes = Sealing {
        cipher: Cipher::Aes256Gcm,
        compression: Compression::None,
    };
    for (name, sealing, alg) in [
        ("ChaCha20-Poly1305", Sealing::default(), &CHACHA20_POLY1305),
        ("AES-256-GCM", aes, &AES_256_GCM),
    ] {
        let p = w.engine(true, sealing, None);
        let c = w.engine(false, sealing, None);
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
        c.handle_timeout(NOW).unwrap();
        pump(&p, &c);
        c.open(TOPIC, Some(&h), KeyBinding::Bytes(RECORD_KEY), &mut buf)
            .unwrap();
        let frees = FREES.load(Ordering::Relaxed);
        let engine = compare(50_000, || {
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
        });
        let raw_key = LessSafeKey::new(UnboundKey::new(alg, &[7; 32]).unwrap());
        let raw = compare(50_000, || {
            let n = || Nonce::assume_unique_for_key([1; 12]);
            let tag = raw_key
                .seal_in_place_separate_tag(n(), Aad::empty(), black_box(&mut buf))
                .unwrap();
            buf.extend_from_slice(tag.as_ref());
            raw_key
                .open_in_place(n(), Aad::empty(), black_box(&mut buf))
                .unwrap();
            buf.truncate(1024);
        });
        let frees = FREES.load(Ordering::Relaxed) - frees;
        line(&format!("seal+open 1 KiB, {name}"), engine);
        println!(
            "  {:<44} {frees}",
            "  blocks freed in all those round trips"
        );
        println!(
            "  {:<44} {:>10.3}x {:>10.3}x",
            "  against the raw AEAD",
            engine.0.as_secs_f64() / raw.0.as_secs_f64(),
            engine.1.as_secs_f64() / raw.1.as_secs_f64()
        );
    }

    // One allocation and free.
    for (size, name) in [
        (64, "64 B"),
        (1024, "1 KiB"),
        (64 * 1024, "64 KiB"),
        (1 << 20, "1 MiB"),
    ] {
        let iters = if size >= 1 << 20 { 500 } else { 50_000 };
        line(
            &format!("allocate, write, free {name}"),
            compare(iters, || {
                let v = black_box(vec![1u8; size]);
                drop(v);
            }),
        );
    }

    // The control path.
    let p = w.engine(true, Sealing::default(), None);
    let mut record = vec![0x5au8; 1024];
    let header = p
        .seal(TOPIC, KeyBinding::Bytes(RECORD_KEY), &mut record)
        .unwrap();
    line(
        "consumer start, Noise handshake, key receive",
        compare(20, || receive(&mut w, &p, &header, &record)),
    );
    let store = Mem::default();
    let c = w.engine(false, Sealing::default(), Some(store));
    let mut v = record.clone();
    let _ = c.open(TOPIC, Some(&header), KeyBinding::Bytes(RECORD_KEY), &mut v);
    c.handle_timeout(NOW).unwrap();
    pump(&p, &c);
    line(
        "state save (Engine::shred, nothing to shred)",
        compare(200, || {
            c.shred(0).unwrap();
        }),
    );
}

//! The data path allocates nothing per record: sealing and opening run in
//! the caller's buffer, with cached topic keys and a stack-built AAD.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{pump, World, T0};
use kafka_e2ee_core::format::{Cipher, Compression, KeyBinding, RecordHeader, Sealing};
use kafka_e2ee_core::EngineConfig;

struct Counting;

// Only this test thread's allocations count: the data path runs entirely on
// the caller's thread (the engine has no threads), and other threads of the
// test harness must not make the count flaky.
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(Cell::get) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn seal_and_open_allocate_nothing_per_record() {
    assert_no_allocations_per_record(Cipher::ChaCha20Poly1305);
}

#[test]
fn aes_256_gcm_seal_and_open_allocate_nothing_per_record() {
    // The AES key schedule is built once per data key, on its first record.
    assert_no_allocations_per_record(Cipher::Aes256Gcm);
}

fn assert_no_allocations_per_record(cipher: Cipher) {
    let mut w = World::new(1);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let config = EngineConfig {
        sealing: Sealing {
            cipher,
            compression: Compression::None,
        },
        ..EngineConfig::default()
    };
    let (p, c) = (w.engine_with(config, p, None, T0), w.engine(c, None));
    let mut value = vec![7u8; 1024];
    let header = p
        .seal("orders", KeyBinding::Bytes(b"key"), &mut value)
        .unwrap();
    let _ = c.open(
        "orders",
        Some(&header),
        KeyBinding::Bytes(b"key"),
        &mut value.clone(),
    );
    c.handle_timeout(T0).unwrap();
    pump(&[&p, &c], T0);
    let mut opened = value.clone();
    c.open(
        "orders",
        Some(&header),
        KeyBinding::Bytes(b"key"),
        &mut opened,
    )
    .unwrap();

    let mut buffers: Vec<(Vec<u8>, [u8; 34])> =
        (0..1000).map(|_| (vec![1u8; 1024], [0u8; 34])).collect();
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    for (buf, h) in buffers.iter_mut() {
        *h = p.seal("orders", KeyBinding::Bytes(b"key"), buf).unwrap();
    }
    for (buf, h) in buffers.iter_mut() {
        c.open("orders", Some(h), KeyBinding::Bytes(b"key"), buf)
            .unwrap();
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCATIONS.load(Ordering::Relaxed),
        0,
        "allocations on 1000 seals + 1000 opens"
    );
    assert!(buffers.iter().all(|(b, _)| b.iter().all(|&x| x == 1)));
    assert!(buffers
        .iter()
        .all(|(_, h)| RecordHeader::decode(h).unwrap().cipher() == cipher));
}

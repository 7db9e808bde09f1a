//! No freed block holds a secret (issue 14, item 5).
//!
//! This binary's global allocator is the production one,
//! `kafka_e2ee_core::wipe::Wiping`, exactly as `libkafka_e2ee.so` and the
//! `kafka-e2ee` binary install it (ffi/src/lib.rs), but over a scanning
//! allocator instead of `System`: the scanner sees each block when the wipe
//! has run and just before it goes back to `System`, as `free` would, and
//! looks in it for every secret the scenario made. The scenario is a real
//! engine pair: a consumer receives a topic key from a producer over Noise,
//! both save their state, sessions end by lifetime and by dropping the
//! engines.
//!
//! The secrets (needles): every 32 bytes the engines drew from their RNG
//! (epoch secrets, mailbox seeds, Noise ephemeral private keys), the topic
//! keys derived from them for the records sealed, each credential's private
//! key (snow copies it into its own key-pair box for every handshake) and
//! state key.
//!
//! Beyond the needles, the wiped run asserts that every freed block is all
//! zeros, which covers what this test cannot name: snow's transport and
//! handshake keys and chaining key, which no public API exposes.
//!
//! The control case runs the same scenario on the same scanner with the
//! wipe bypassed (frees and reallocs go straight to the scanner, as with
//! `System` alone): it must find secrets, which proves the scanner sees
//! them and this test fails without the wiping allocator.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;

use common::{pump, MemStorage, World, T0};
use kafka_e2ee_core::format::{DataKey, EpochSecret, KeyBinding, RecordHeader};
use kafka_e2ee_core::wipe::Wiping;
use kafka_e2ee_core::{Engine, EngineConfig, Opened, Storage};
use rand_chacha::ChaCha20Rng;
use rand_core::{CryptoRng, RngCore, SeedableRng};

// ---- the needles -----------------------------------------------------------

const RANDOM: usize = 0;
const TOPIC_KEY: usize = 1;
const PRIVATE_KEY: usize = 2;
const STATE_KEY: usize = 3;
const KINDS: [&str; 4] = [
    "drawn secret (epoch secret, seed, ephemeral key)",
    "topic key",
    "credential private key",
    "state key",
];
const MAX_NEEDLES: usize = 4096;

/// A fixed table, so that the allocator never allocates while it scans.
struct Needles {
    n: usize,
    key: [[u8; 32]; MAX_NEEDLES],
    kind: [usize; MAX_NEEDLES],
}

static NEEDLES: Mutex<Needles> = Mutex::new(Needles {
    n: 0,
    key: [[0; 32]; MAX_NEEDLES],
    kind: [0; MAX_NEEDLES],
});

fn add_needle(kind: usize, key: &[u8; 32]) {
    let mut t = NEEDLES.lock().unwrap();
    if t.key[..t.n].contains(key) {
        return;
    }
    let n = t.n;
    assert!(n < MAX_NEEDLES, "needle table full");
    t.key[n] = *key;
    t.kind[n] = kind;
    t.n = n + 1;
}

// ---- the scanning allocator ------------------------------------------------

const OFF: u8 = 0;
const WIPED: u8 = 1;
const PLAIN: u8 = 2;

// Per thread: tests run in parallel, and each counts only its own frees.
thread_local! {
    static MODE: Cell<u8> = const { Cell::new(OFF) };
    static SEEN: Cell<usize> = const { Cell::new(0) };
    static NONZERO: Cell<usize> = const { Cell::new(0) };
    static HITS: [Cell<usize>; 4] = const { [const { Cell::new(0) }; 4] };
}

fn mode() -> u8 {
    MODE.try_with(Cell::get).unwrap_or(OFF)
}

/// The block at `ptr`, about to go back to `System`: counts it, whether it
/// holds anything but zeros, and each secret in it.
///
/// # Safety
/// `ptr` is valid for reads of `len` bytes.
unsafe fn scan(ptr: *const u8, len: usize) {
    if mode() == OFF || len == 0 {
        return;
    }
    // SAFETY: the caller's.
    let block = unsafe { std::slice::from_raw_parts(ptr, len) };
    let _ = SEEN.try_with(|s| s.set(s.get() + 1));
    if block.iter().any(|&b| b != 0) {
        let _ = NONZERO.try_with(|s| s.set(s.get() + 1));
    } else {
        return;
    }
    if len < 32 {
        return;
    }
    // try_lock: a free inside `add_needle` (none happens) must not deadlock.
    let Ok(t) = NEEDLES.try_lock() else {
        return;
    };
    for window in block.windows(32) {
        if window[..8] == [0; 8] {
            continue;
        }
        for i in 0..t.n {
            if t.key[i] == window {
                let _ = HITS.try_with(|h| h[t.kind[i]].set(h[t.kind[i]].get() + 1));
            }
        }
    }
}

/// `System`, scanning every block it is given back.
struct Scanner;

// SAFETY: forwards to `System` with the caller's arguments; reads a block
// only while the caller still owns it.
unsafe impl GlobalAlloc for Scanner {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the block is live until `System.dealloc`.
        unsafe {
            scan(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // `System.realloc` may move the bytes and free the old block as it
        // is: scanned as a free. (The wiping allocator never calls this.)
        // SAFETY: the block is live until `System.realloc`.
        unsafe {
            scan(ptr, layout.size());
            System.realloc(ptr, layout, new_size)
        }
    }
}

/// The production allocator, over the scanner instead of `System`.
static WIPING: Wiping<Scanner> = Wiping::new(Scanner);

/// The global allocator: `WIPING`, or in the control case the scanner alone.
struct Switch;

// SAFETY: each call goes whole to one of two allocators that both allocate
// from `System`, so a block from either may be freed through the other.
unsafe impl GlobalAlloc for Switch {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { WIPING.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe { WIPING.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract.
        unsafe {
            if mode() == PLAIN {
                Scanner.dealloc(ptr, layout)
            } else {
                WIPING.dealloc(ptr, layout)
            }
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract.
        unsafe {
            if mode() == PLAIN {
                Scanner.realloc(ptr, layout, new_size)
            } else {
                WIPING.realloc(ptr, layout, new_size)
            }
        }
    }
}

#[global_allocator]
static GLOBAL: Switch = Switch;

// ---- the scenario ------------------------------------------------------------

/// The engine's randomness, with every draw of 32 bytes or more taken as
/// secret (the shorter ones are salts, ids and nonces, which are public).
struct Recording(ChaCha20Rng);

impl RngCore for Recording {
    fn next_u32(&mut self) -> u32 {
        self.0.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
        for chunk in dest.chunks_exact(32) {
            add_needle(RANDOM, chunk.try_into().unwrap());
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for Recording {}

/// The topic keys of `header`'s epoch, from every drawn secret (the epoch
/// secret is one of them).
fn add_topic_keys(header: &[u8], topic: &str) {
    let key_id = RecordHeader::decode(header).unwrap().key_id;
    // One needle at a time, on the stack: a heap copy would be found too.
    let n = NEEDLES.lock().unwrap().n;
    for i in 0..n {
        let (kind, secret) = {
            let t = NEEDLES.lock().unwrap();
            (t.kind[i], t.key[i])
        };
        if kind == RANDOM {
            let key = DataKey::derive(&EpochSecret::from_bytes(secret), key_id, topic);
            add_needle(TOPIC_KEY, key.as_bytes());
        }
    }
}

fn scenario(seed: u64) {
    let mut w = World::new(seed);
    let p_id = w.identity("p", &["orders"], &[]);
    let c_id = w.identity("c", &[], &["orders"]);
    for id in [&p_id, &c_id] {
        add_needle(PRIVATE_KEY, &id.private_key_bytes());
        add_needle(STATE_KEY, &id.state_key());
    }
    let config = EngineConfig {
        session_lifetime_ms: 60_000,
        ..EngineConfig::default()
    };
    let (p_store, c_store) = (MemStorage::default(), MemStorage::default());
    let engine = |w: &mut World, id, store: &MemStorage, n: u64| {
        let rng = Recording(ChaCha20Rng::seed_from_u64(seed * 10 + n));
        let store = Box::new(store.clone()) as Box<dyn Storage>;
        Engine::new(
            config.clone(),
            id,
            w.trust.clone(),
            T0,
            Box::new(rng),
            Some(store),
        )
        .unwrap()
    };
    let p = engine(&mut w, p_id, &p_store, 1);
    let c = engine(&mut w, c_id, &c_store, 2);

    // A key receive: the consumer asks, a Noise session opens, the key comes.
    let mut value = b"a record of the orders topic".to_vec();
    let header = p
        .seal("orders", KeyBinding::Bytes(b"k"), &mut value)
        .unwrap();
    add_topic_keys(&header, "orders");
    let mut opened = value.clone();
    assert!(c
        .open(
            "orders",
            Some(&header),
            KeyBinding::Bytes(b"k"),
            &mut opened
        )
        .is_err());
    c.handle_timeout(T0).unwrap();
    pump(&[&p, &c], T0);
    assert_eq!(
        c.open(
            "orders",
            Some(&header),
            KeyBinding::Bytes(b"k"),
            &mut opened
        )
        .unwrap(),
        Opened::Decrypted
    );
    assert!(c.keys_held() > 0);

    // A save: both state directories hold the keys now.
    c.handle_timeout(T0 + 1).unwrap();
    p.handle_timeout(T0 + 1).unwrap();
    assert!(c_store.blob().is_some());
    assert!(p_store.blob().is_some());

    // Session ends: past the session lifetime the sessions are replaced, the
    // producer rotates and the next epoch's key is delivered on the new one.
    let later = T0 + 2 * 60_000 + 1;
    p.handle_timeout(later).unwrap();
    c.handle_timeout(later).unwrap();
    pump(&[&p, &c], later);
    let mut value2 = b"a later record".to_vec();
    let header2 = p
        .seal("orders", KeyBinding::Bytes(b"k"), &mut value2)
        .unwrap();
    add_topic_keys(&header2, "orders");
    pump(&[&p, &c], later);
    let _ = c.open(
        "orders",
        Some(&header2),
        KeyBinding::Bytes(b"k"),
        &mut value2,
    );
    // Shredding deletes keys here and on disk, and saves again.
    c.shred(T0 + 1).unwrap();

    // Every session and key ends with the engines.
    drop(p);
    drop(c);
}

/// Runs the scenario with frees in `m`; returns (blocks seen, blocks not
/// all zeros, hits per kind).
fn run(m: u8, seed: u64) -> (usize, usize, [usize; 4]) {
    MODE.with(|c| c.set(m));
    scenario(seed);
    MODE.with(|c| c.set(OFF));
    let hits = HITS.with(|h| {
        let v = [h[0].get(), h[1].get(), h[2].get(), h[3].get()];
        h.iter().for_each(|c| c.set(0));
        v
    });
    let seen = SEEN.with(|s| s.replace(0));
    let nonzero = NONZERO.with(|s| s.replace(0));
    (seen, nonzero, hits)
}

fn report(what: &str, (seen, nonzero, hits): (usize, usize, [usize; 4])) {
    println!("{what}: {seen} blocks freed, {nonzero} not all zeros");
    for (kind, n) in KINDS.iter().zip(hits) {
        println!("  {kind}: {n} freed blocks held it");
    }
}

#[test]
fn no_freed_block_holds_a_key_after_a_receive_a_save_and_a_session_end() {
    let wiped = run(WIPED, 1);
    report("wiping allocator", wiped);
    let (seen, nonzero, hits) = wiped;
    assert!(seen > 500, "the scanner saw only {seen} blocks");
    assert_eq!(hits, [0; 4], "secrets in freed blocks");
    assert_eq!(nonzero, 0, "freed blocks not wiped");
}

#[test]
fn without_the_wipe_freed_blocks_hold_keys() {
    let plain = run(PLAIN, 1);
    report("without the wipe", plain);
    let (seen, nonzero, hits) = plain;
    assert!(seen > 500, "the scanner saw only {seen} blocks");
    assert!(nonzero > 0);
    assert!(hits[RANDOM] > 0, "no drawn secret found: {hits:?}");
    assert!(hits[TOPIC_KEY] > 0, "no topic key found: {hits:?}");
    assert!(hits[PRIVATE_KEY] > 0, "no private key found: {hits:?}");
}

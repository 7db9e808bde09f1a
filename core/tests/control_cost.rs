//! What a message on the control topic can cost its readers. Anyone who may
//! write to the control topic can send anything under any name, and every
//! instance reads the whole topic, so forged messages must be cheap to
//! reject: no allocation driven by a length field, no work for messages
//! addressed to someone else, and a bounded number of handshakes answered.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use common::{pump, World, T0};
use kafka_e2ee_core::exchange::wire::decode_batch;
use kafka_e2ee_core::exchange::{hybrid, session};
use kafka_e2ee_core::format::InstanceId;
use kafka_e2ee_core::format::KeyBinding;
use kafka_e2ee_core::{ControlError, Engine, EngineConfig, Error, Opened};
use zeroize::Zeroizing;

struct Counting;

// Per thread, so other test threads cannot disturb a count.
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // `try_with`: thread-local storage may be gone while a thread exits.
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                let _ = ALLOCATED.try_with(|n| n.set(n.get() + layout.size()));
            }
        });
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

/// Bytes allocated on this thread while `f` runs.
fn allocated_by<R>(f: impl FnOnce() -> R) -> usize {
    ALLOCATED.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let result = f();
    COUNTING.with(|on| on.set(false));
    drop(result);
    ALLOCATED.with(Cell::get)
}

/// Envelope layout (docs/PROTOCOL.md): magic 4, version 1, kind 1, from 8,
/// to 8, then for handshake messages the session id 8.
const KIND: usize = 5;
const FROM: std::ops::Range<usize> = 6..14;
const TO: std::ops::Range<usize> = 14..22;
const SESSION: std::ops::Range<usize> = 22..30;
const HELLO: u8 = 1;
const HELLO_REPLY: u8 = 2;
/// The hybrid Hello and its reply (issue 17), what engines send by default.
const HYBRID_HELLO: u8 = 9;
const HYBRID_REPLY: u8 = 10;
const SEALED: u8 = 4;

#[test]
fn batch_count_cannot_drive_a_large_allocation() {
    // One byte claiming 255 inner messages: nothing to reserve.
    let bytes = allocated_by(|| decode_batch(&[255]));
    assert_eq!(bytes, 0, "a one-byte batch allocated {bytes} bytes");
    // 255 claimed, one real one (17 bytes): room for that one, not 255.
    let mut one = vec![255u8, 1];
    one.extend_from_slice(&[7; 12]); // key id
    one.extend_from_slice(&[0, 1, b't']); // topic "t"
    let bytes = allocated_by(|| decode_batch(&one));
    assert!(
        bytes <= 256,
        "a 17-byte batch allocated {bytes} bytes (room for 255 messages?)"
    );
}

/// A producer and a consumer whose key request is pending, and the
/// consumer's first Hello (taken off its outbox, not delivered).
fn producer_and_hello(seed: u64) -> (Engine, Engine, [u8; 34], Vec<u8>, Vec<u8>) {
    let mut w = World::new(seed);
    let p = w.identity("p", &["orders"], &[]);
    let c = w.identity("c", &[], &["orders"]);
    let (p, c) = (w.engine(p, None), w.engine(c, None));
    let mut value = b"the record".to_vec();
    let header = p
        .seal("orders", KeyBinding::Bytes(b"k"), &mut value)
        .unwrap();
    let mut probe = value.clone();
    assert!(c
        .open("orders", Some(&header), KeyBinding::Bytes(b"k"), &mut probe)
        .is_err());
    c.handle_timeout(T0).unwrap();
    // (Past the consumer's prekeys, which go to the keys topic.)
    let hello = std::iter::from_fn(|| c.poll_transmit())
        .find(|m| m.channel == kafka_e2ee_core::Channel::Control)
        .expect("the consumer says Hello")
        .payload;
    assert!([HELLO, HYBRID_HELLO].contains(&hello[KIND]));
    (p, c, header, value, hello)
}

#[test]
fn messages_for_other_instances_cost_no_allocation() {
    let (p, _c, _, _, hello) = producer_and_hello(11);
    // A large transport message addressed to somebody else: skipped
    // before its body is decoded or copied.
    let mut sealed = hello[..SESSION.start].to_vec();
    sealed[KIND] = SEALED;
    sealed[TO].copy_from_slice(&[9; 8]);
    sealed.extend_from_slice(&[1; 8]); // session
    sealed.extend_from_slice(&[0; 8]); // nonce
    sealed.extend_from_slice(&[0xAB; 60_000]);
    let bytes = allocated_by(|| p.handle_control(T0, &sealed));
    assert_eq!(
        bytes, 0,
        "a message for another instance allocated {bytes} bytes"
    );
}

#[test]
fn forged_hellos_cost_at_most_the_handshake_budget() {
    let (p, c, header, ciphertext, hello) = producer_and_hello(12);
    let budget = EngineConfig::default().handshakes_per_sec as usize;
    assert!(budget > 0);
    // Forged Hellos: a well-formed Noise message 1 (any 32 bytes are an
    // ephemeral key; a hybrid one, an ML-KEM key too, which costs the
    // responder an encapsulation) under ever new sender names and session
    // ids.
    let kem = hybrid::KemKey::from_seed(&[5; 64]);
    let forged = |i: usize| {
        let mut m = hello.clone();
        let n = u32::try_from(i).unwrap() + 1;
        m[FROM][..4].copy_from_slice(&n.to_be_bytes());
        m[SESSION][..4].copy_from_slice(&n.to_be_bytes());
        if m[KIND] == HYBRID_HELLO {
            // Message 1 of XXpsk3 is encrypted under a key of the prologue,
            // which names the sender: made anew for each name (with the
            // same KEM key each time, as a cheap attacker would).
            let from = InstanceId(m[FROM].try_into().unwrap());
            let to = InstanceId(m[TO].try_into().unwrap());
            let mut hs =
                session::new_handshake(true, true, &[1; 32], from, to, Zeroizing::new([2; 64]))
                    .unwrap();
            let mut buf = vec![0u8; 2048];
            let len = hs.write_message(&kem.public(), &mut buf).unwrap();
            m.truncate(SESSION.end);
            m.extend_from_slice(&buf[..len]);
        }
        m
    };
    let flood = |now: u64, range: std::ops::Range<usize>| {
        let mut busy = 0;
        for i in range {
            match p.handle_control(now, &forged(i)) {
                Ok(()) => {}
                Err(Error::Control(ControlError::Busy)) => busy += 1,
                Err(e) => panic!("forged Hello {i}: unexpected {e}"),
            }
        }
        let mut replies = 0;
        while let Some(m) = p.poll_transmit() {
            if [HELLO_REPLY, HYBRID_REPLY].contains(&m.payload[KIND]) {
                replies += 1;
            }
        }
        (replies, busy)
    };
    // Ten times the budget at one instant: only the budget is answered.
    assert_eq!(flood(T0, 0..10 * budget), (budget, 9 * budget));
    // Half a second later, half the budget has come back; a second later, all of it
    // (never more: the bucket holds one second's worth).
    assert_eq!(
        flood(T0 + 500, 10 * budget..20 * budget),
        (budget / 2, 10 * budget - budget / 2)
    );
    assert_eq!(
        flood(T0 + 60_000, 20 * budget..30 * budget),
        (budget, 9 * budget)
    );
    // The honest consumer, whose Hello was lost in the flood, retries and
    // gets its key once the flood is over.
    let mut now = T0 + 60_000;
    let opened = loop {
        now += 1000;
        pump(&[&p, &c], now);
        let mut v = ciphertext.clone();
        if c.open("orders", Some(&header), KeyBinding::Bytes(b"k"), &mut v)
            .is_ok_and(|o| o == Opened::Decrypted)
        {
            assert_eq!(v, b"the record");
            break true;
        }
        if now > T0 + 10 * 60_000 {
            break false;
        }
    };
    assert!(
        opened,
        "the honest consumer never got its key after a flood"
    );
}

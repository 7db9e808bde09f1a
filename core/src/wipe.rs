//! A global allocator that leaves no secret behind in freed memory.
//!
//! [`Wiping`] wraps another allocator (the hosts use
//! [`std::alloc::System`]) and overwrites every block with zeros before it
//! goes back to the inner allocator, and it implements `realloc` as
//! allocate, copy, wipe, free, so a growing or shrinking buffer never leaves
//! its old copy behind in a block the inner allocator may have moved away
//! from. The native hosts install it process-wide for their Rust code
//! (`libkafka_e2ee.so` and the `kafka-e2ee` binary, `ffi/src/lib.rs`):
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: kafka_e2ee_core::wipe::Wiping = kafka_e2ee_core::wipe::Wiping::SYSTEM;
//! ```
//!
//! Why an allocator and not only `Zeroizing` wrappers: snow (the Noise
//! implementation, `exchange/session.rs`) zeroizes nothing. Its cipher
//! states (transport and handshake keys), its Diffie-Hellman key pairs
//! (the ephemeral and the static private key) and its hash states live in
//! boxes it owns and frees, and its chaining key lives inline in the
//! handshake state, which this crate keeps in map nodes. A wrapper cannot
//! reach into snow's boxes; the allocator sees every one of them freed. The
//! same holds for any dependency, for vectors that grew by `realloc`, and
//! for values moved out of a heap block before it was freed. What it cannot
//! wipe: copies on the stack (a value moved through a function's frame),
//! registers, and memory that is not allocated through Rust's global
//! allocator (the JVM's heap, librdkafka's buffers, the plugin's own
//! `malloc`ed payload copies, which `ffi/src/rdkafka/record.rs` scrubs
//! itself). docs/PROTOCOL.md (threat model) says what follows from that.
//!
//! Cost: one `memset` per freed block (zeroize's, with an optimization
//! barrier so the compiler cannot drop it as a dead store before `free`),
//! and a copy instead of an in-place `realloc`. The record path allocates
//! nothing (`tests/no_alloc.rs`), so records pay nothing;
//! docs/PERFORMANCE.md has the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::mem::MaybeUninit;

use zeroize::Zeroize;

/// A [`GlobalAlloc`] that zeroizes every block before freeing it (see the
/// module documentation). `A` is the allocator underneath.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wiping<A = System>(A);

impl Wiping<System> {
    /// Over the system allocator: what the hosts install.
    pub const SYSTEM: Wiping<System> = Wiping(System);
}

impl<A> Wiping<A> {
    /// Over `inner` (a test wraps a scanning allocator this way, so that it
    /// sees each block after the wipe, as the system allocator would).
    pub const fn new(inner: A) -> Wiping<A> {
        Wiping(inner)
    }
}

/// Overwrites `len` bytes at `ptr` with zeros, in a way the optimizer keeps.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes, exclusively.
#[allow(unsafe_code)]
unsafe fn wipe(ptr: *mut u8, len: usize) {
    if len == 0 {
        return;
    }
    // SAFETY: the caller gives exclusive access to `len` writable bytes;
    // `MaybeUninit<u8>` accepts any contents, initialised or not.
    let block = unsafe { std::slice::from_raw_parts_mut(ptr.cast::<MaybeUninit<u8>>(), len) };
    // zeroize: `memset`, then an assembly optimization barrier that reads
    // the slice, so the writes are not dead stores before `free`.
    block.zeroize();
}

// SAFETY: every method forwards to `A` with the caller's own pointer and
// layout (or, in `realloc`, with a fresh allocation of the new layout made
// by `A`), so `A`'s guarantees carry over; the wipe only writes within the
// block being freed, while the caller still owns it.
#[allow(unsafe_code)]
unsafe impl<A: GlobalAlloc> GlobalAlloc for Wiping<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `A`'s.
        unsafe { self.0.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller passes a block it owns of `layout.size()` bytes
        // and gives it up here, so it may be written first.
        unsafe {
            wipe(ptr, layout.size());
            self.0.dealloc(ptr, layout);
        }
    }

    /// Never the inner allocator's `realloc`: it may move the bytes and free
    /// the old block as it is, secrets included. Allocate, copy, wipe, free.
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `GlobalAlloc::realloc`'s contract makes this layout valid
        // (non-zero size, no overflow when rounded to the alignment).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: valid non-zero layout, as above.
        let new = unsafe { self.0.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live, distinct, and at least this long;
            // then the old block is the caller's to give up, as in `dealloc`.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        // On failure the old block stays allocated and untouched, as
        // `realloc` requires.
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn realloc_keeps_the_contents_and_moves() {
        let w = Wiping::SYSTEM;
        let layout = Layout::from_size_align(64, 8).unwrap();
        #[allow(unsafe_code)]
        unsafe {
            let p = w.alloc(layout);
            assert!(!p.is_null());
            for i in 0..64 {
                p.add(i).write(i as u8);
            }
            let q = w.realloc(p, layout, 4096);
            assert!(!q.is_null());
            for i in 0..64 {
                assert_eq!(q.add(i).read(), i as u8);
            }
            let r = w.realloc(q, Layout::from_size_align(4096, 8).unwrap(), 16);
            for i in 0..16 {
                assert_eq!(r.add(i).read(), i as u8);
            }
            w.dealloc(r, Layout::from_size_align(16, 8).unwrap());
        }
    }
}

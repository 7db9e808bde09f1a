//! Opt-in compression before sealing, within the length-preserving format.
//!
//! A compressed record's value is `sealed || 0x80 || 00 ... 00`, exactly as
//! long as the plaintext: `sealed` is the compressed plaintext encrypted in
//! place, and the tail is padding in the clear, which the client's batch
//! compression (compression.type) squeezes away on the wire and on disk.
//! The padding is unambiguous: the last non-zero byte of the value is the
//! marker, whatever the ciphertext before it holds. Any change to the
//! boundary changes the ciphertext's length, which the tag covers; the
//! value's length is bound into the AAD as well.

use std::cell::RefCell;

use zeroize::Zeroizing;

use super::Compression;

thread_local! {
    // zstd contexts are large (their tables) and slow to set up: making one
    // per record cost ~15x the sealing itself at 1 KiB. One per thread keeps
    // the data path allocation-free after the first record; each holds at
    // most the last value's window of this thread's plaintext, as the
    // caller's own buffers do.
    static ZSTD_COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
    static ZSTD_DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

fn zstd_compress(plain: &[u8], out: &mut [u8]) -> Option<usize> {
    ZSTD_COMPRESSOR.with_borrow_mut(|cached| {
        if cached.is_none() {
            *cached = zstd::bulk::Compressor::new(ZSTD_LEVEL).ok();
        }
        cached.as_mut()?.compress_to_buffer(plain, out).ok()
    })
}

fn zstd_decompress(compressed: &[u8], out: &mut [u8]) -> Option<usize> {
    ZSTD_DECOMPRESSOR.with_borrow_mut(|cached| {
        if cached.is_none() {
            *cached = zstd::bulk::Decompressor::new().ok();
        }
        cached.as_mut()?.decompress_to_buffer(compressed, out).ok()
    })
}

/// The byte that ends the sealed part of a compressed value.
pub(crate) const PADDING_MARKER: u8 = 0x80;

/// zstd's default level: a good ratio at a few hundred MB/s.
const ZSTD_LEVEL: i32 = 3;

/// Compresses `plain` if that leaves room for the padding marker: returns
/// the compressed bytes, shorter than `plain`, or `None` when the value does
/// not shrink (or compression is off), in which case the record is sealed
/// uncompressed.
pub(crate) fn compress(compression: Compression, plain: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    // The marker takes one byte of the record.
    let room = plain.len().checked_sub(1).filter(|&room| room > 0)?;
    let out_len = match compression {
        Compression::None => return None,
        // zstd stops with an error once the output would exceed `room`,
        // which here just means "does not shrink".
        Compression::Zstd => room,
        // lz4_flex wants room for the worst case up front.
        Compression::Lz4 => lz4_flex::block::get_maximum_output_size(plain.len()),
    };
    // The output is plaintext too (compressed): wiped on drop.
    let mut out = Zeroizing::new(vec![0u8; out_len]);
    let len = match compression {
        Compression::None => return None,
        Compression::Zstd => zstd_compress(plain, &mut out[..])?,
        Compression::Lz4 => lz4_flex::block::compress_into(plain, &mut out[..]).ok()?,
    };
    out.truncate(len);
    (len <= room).then_some(out)
}

/// Decompresses `compressed` into `out`, which it must fill exactly: the
/// output can never outgrow the record (no decompression bombs).
pub(crate) fn decompress_exact(
    compression: Compression,
    compressed: &[u8],
    out: &mut [u8],
) -> Result<(), ()> {
    let written = match compression {
        Compression::None => return Err(()),
        Compression::Zstd => zstd_decompress(compressed, out).ok_or(())?,
        Compression::Lz4 => lz4_flex::block::decompress_into(compressed, out).map_err(|_| ())?,
    };
    if written == out.len() {
        Ok(())
    } else {
        Err(())
    }
}

/// Writes the padding after the first `sealed_len` bytes of `value`: the
/// marker, then zeros. Requires `sealed_len < value.len()`.
pub(crate) fn pad(value: &mut [u8], sealed_len: usize) {
    if let Some((marker, zeros)) = value
        .get_mut(sealed_len..)
        .and_then(<[u8]>::split_first_mut)
    {
        *marker = PADDING_MARKER;
        zeros.fill(0);
    }
}

/// The length of the sealed part of a padded value: the position of its last
/// non-zero byte, which must be the marker. `None` if the value is malformed
/// (all zeros, or its last non-zero byte is not the marker).
pub(crate) fn sealed_len(value: &[u8]) -> Option<usize> {
    let marker = value.iter().rposition(|&b| b != 0)?;
    (value.get(marker) == Some(&PADDING_MARKER)).then_some(marker)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn padding_layout() {
        let mut v = [0xffu8; 8];
        pad(&mut v, 3);
        assert_eq!(v, [0xff, 0xff, 0xff, 0x80, 0, 0, 0, 0]);
        assert_eq!(sealed_len(&v), Some(3));
        // The sealed part may end in zeros or in the marker byte itself.
        let mut v = [0u8, 0x80, 0, 0];
        pad(&mut v, 2);
        assert_eq!(v, [0, 0x80, 0x80, 0]);
        assert_eq!(sealed_len(&v), Some(2));
        assert_eq!(sealed_len(&[0, 0, 0]), None);
        assert_eq!(sealed_len(&[]), None);
        assert_eq!(sealed_len(&[1, 0x81, 0]), None);
        assert_eq!(sealed_len(&[0x80]), Some(0));
    }

    #[test]
    fn incompressible_or_tiny_values_are_not_compressed() {
        for c in [Compression::Zstd, Compression::Lz4] {
            assert!(compress(c, b"").is_none());
            assert!(compress(c, b"a").is_none());
            assert!(compress(c, b"ab").is_none());
            let mut random = vec![0u8; 4096];
            rand_core::RngCore::fill_bytes(
                &mut <rand_chacha::ChaCha20Rng as rand_core::SeedableRng>::seed_from_u64(7),
                &mut random,
            );
            assert!(compress(c, &random).is_none(), "{c:?}");
        }
        assert!(compress(Compression::None, &[b'a'; 1000]).is_none());
    }

    #[test]
    fn decompression_is_capped_at_the_output_length() {
        for c in [Compression::Zstd, Compression::Lz4] {
            let plain = vec![b'x'; 100_000];
            let packed = compress(c, &plain).unwrap();
            let mut out = vec![0u8; 100_000];
            decompress_exact(c, &packed, &mut out).unwrap();
            assert_eq!(out, plain);
            // A shorter or longer output buffer fails: never more than the record.
            assert!(decompress_exact(c, &packed, &mut [0u8; 99_999]).is_err());
            assert!(decompress_exact(c, &packed, &mut vec![0u8; 100_001]).is_err());
        }
    }

    proptest! {
        #[test]
        fn pad_then_sealed_len_round_trips(
            sealed in proptest::collection::vec(any::<u8>(), 0..64),
            tail in 1usize..64,
        ) {
            let mut v = sealed.clone();
            v.resize(sealed.len() + tail, 0xaa);
            pad(&mut v, sealed.len());
            prop_assert_eq!(sealed_len(&v), Some(sealed.len()));
            prop_assert_eq!(&v[..sealed.len()], &sealed[..]);
        }

        #[test]
        fn sealed_len_never_panics(v in proptest::collection::vec(any::<u8>(), 0..128)) {
            if let Some(n) = sealed_len(&v) {
                prop_assert_eq!(v[n], PADDING_MARKER);
                prop_assert!(v[n + 1..].iter().all(|&b| b == 0));
            }
        }

        #[test]
        fn decompress_never_panics_on_any_input(
            input in proptest::collection::vec(any::<u8>(), 0..256),
            out_len in 0usize..512,
        ) {
            for c in Compression::ALL {
                let mut out = vec![0u8; out_len];
                let _ = decompress_exact(c, &input, &mut out);
            }
        }

        #[test]
        fn compress_round_trips(
            plain in proptest::collection::vec(prop_oneof![Just(b'a'), Just(b'b'), any::<u8>()], 0..2048),
        ) {
            for c in [Compression::Zstd, Compression::Lz4] {
                if let Some(packed) = compress(c, &plain) {
                    prop_assert!(packed.len() < plain.len());
                    let mut out = vec![0u8; plain.len()];
                    decompress_exact(c, &packed, &mut out).unwrap();
                    prop_assert_eq!(&out, &plain);
                }
            }
        }
    }
}

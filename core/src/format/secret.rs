//! Epoch secrets and the per-topic data keys derived from them.

use core::fmt;
use std::mem::MaybeUninit;
use std::sync::OnceLock;

use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use ring::aead::{LessSafeKey, UnboundKey, AES_256_GCM, CHACHA20_POLY1305};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Cipher, KeyId};

/// HKDF salt of the data key derivation (format v1).
pub const DATA_KEY_SALT: &[u8] = b"kafka-e2ee/v1/data-key";

/// HKDF salt of the per-cipher key derivation from a data key (format v1).
pub const CIPHER_KEY_SALT: &[u8] = b"kafka-e2ee/v1/cipher-key";

/// HKDF salt of the sealed-headers key derivation from a data key (format
/// v1, docs/FORMAT.md section 12).
pub const HEADERS_KEY_SALT: &[u8] = b"kafka-e2ee/v1/headers-key";

/// HKDF salt of the sealed-record-key key derivation from a data key
/// (format v1, docs/FORMAT.md section 13).
pub const RECORD_KEY_KEY_SALT: &[u8] = b"kafka-e2ee/v1/record-key-key";

const SECRET_LEN: usize = 32;

// HKDF-SHA256 can expand to at most 255 * 32 bytes; one 32-byte key is far
// below that, so the expand in `DataKey::derive` cannot fail.
const _: () = assert!(SECRET_LEN <= 255 * 32);

/// The random secret of one producer epoch. Everything sealed in the epoch is
/// under keys derived from it. Zeroized on drop; `Debug` is redacted.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EpochSecret([u8; SECRET_LEN]);

impl EpochSecret {
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> EpochSecret {
        EpochSecret(bytes)
    }

    /// A fresh secret from the given random source (randomness is an input:
    /// the core never reaches for global randomness).
    pub fn generate(rng: &mut impl CryptoRngCore) -> EpochSecret {
        let mut bytes = [0u8; SECRET_LEN];
        rng.fill_bytes(&mut bytes);
        EpochSecret(bytes)
    }

    /// The secret bytes, for the key layer to store and deliver. Never log them.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochSecret(<redacted>)")
    }
}

/// The key for one (producer, epoch, topic). ChaCha20-Poly1305 uses it as it
/// is (as format v1 always did); AES-256-GCM uses a key derived from it (see
/// [`DataKey::cipher_key`]), so no key is ever used with two algorithms.
/// Zeroized on drop; `Debug` is redacted.
pub struct DataKey {
    bytes: [u8; SECRET_LEN],
    /// The ring key of each cipher, built on first use: for AES-256-GCM the
    /// HKDF and the key schedule cost more than sealing a small record, and
    /// data keys are cached per epoch and topic.
    chacha20_poly1305: OnceLock<AeadKey>,
    aes_256_gcm: OnceLock<AeadKey>,
    /// The keys that seal a record's application headers, one per cipher
    /// (see [`DataKey::headers_key`]), built on first use.
    headers_chacha20_poly1305: OnceLock<AeadKey>,
    headers_aes_256_gcm: OnceLock<AeadKey>,
    /// The keys that seal a tokenized record's real key (see
    /// [`DataKey::record_key_key`]), built on first use.
    record_key_chacha20_poly1305: OnceLock<AeadKey>,
    record_key_aes_256_gcm: OnceLock<AeadKey>,
}

impl Clone for DataKey {
    fn clone(&self) -> Self {
        DataKey::from_bytes(self.bytes)
    }
}

impl Drop for DataKey {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

impl ZeroizeOnDrop for DataKey {}

impl DataKey {
    /// HKDF-SHA256(salt = [`DATA_KEY_SALT`], ikm = epoch secret,
    /// info = producer (8) || epoch u32 BE || topic UTF-8), 32 bytes.
    ///
    /// Per-topic keys mean a consumer authorized for one topic never holds a
    /// key that opens another topic's records. This is not on the per-record
    /// path: the key layer caches derived keys per topic.
    pub fn derive(epoch_secret: &EpochSecret, key_id: KeyId, topic: &str) -> DataKey {
        let hkdf = Hkdf::<Sha256>::new(Some(DATA_KEY_SALT), epoch_secret.as_bytes());
        let mut okm = [0u8; SECRET_LEN];
        let epoch = key_id.epoch.to_be_bytes();
        let info: [&[u8]; 3] = [&key_id.producer.0, &epoch, topic.as_bytes()];
        match hkdf.expand_multi_info(&info, &mut okm) {
            Ok(()) => DataKey::from_bytes(okm),
            // Statically impossible (see the const assertion above); a zero or
            // partial key must never be returned, so do not continue.
            Err(_) => unreachable!("HKDF-SHA256 expand of 32 bytes cannot fail"),
        }
    }

    /// A data key from raw bytes, for hosts and tests that hold one already.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> DataKey {
        DataKey {
            bytes,
            chacha20_poly1305: OnceLock::new(),
            aes_256_gcm: OnceLock::new(),
            headers_chacha20_poly1305: OnceLock::new(),
            headers_aes_256_gcm: OnceLock::new(),
            record_key_chacha20_poly1305: OnceLock::new(),
            record_key_aes_256_gcm: OnceLock::new(),
        }
    }

    /// The key bytes, for the key layer and test vectors. Never log them.
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.bytes
    }

    /// The key `cipher` seals with. ChaCha20-Poly1305: the data key itself.
    /// Any other cipher: HKDF-SHA256(salt = [`CIPHER_KEY_SALT`], ikm = data
    /// key, info = the cipher's name, e.g. `aes-256-gcm`), 32 bytes. The data
    /// key enters HKDF only as input keying material (an HMAC message, not an
    /// HMAC key), so it is a key of exactly one algorithm. For test vectors;
    /// never log it.
    pub fn cipher_key(&self, cipher: Cipher) -> Zeroizing<[u8; SECRET_LEN]> {
        let mut okm = Zeroizing::new([0u8; SECRET_LEN]);
        match cipher {
            Cipher::ChaCha20Poly1305 => okm.copy_from_slice(&self.bytes),
            Cipher::Aes256Gcm => {
                let hkdf = Hkdf::<Sha256>::new(Some(CIPHER_KEY_SALT), &self.bytes);
                if hkdf.expand(cipher.name().as_bytes(), &mut okm[..]).is_err() {
                    // Statically impossible, as in `derive`.
                    unreachable!("HKDF-SHA256 expand of 32 bytes cannot fail");
                }
            }
        }
        okm
    }

    /// The key `cipher` seals a record's application headers with:
    /// HKDF-SHA256(salt = [`HEADERS_KEY_SALT`], ikm = data key, info = the
    /// cipher's name), 32 bytes, for either cipher. The headers share the
    /// value's nonce, so they need a key of their own: the value's key
    /// never seals two messages under one nonce. For test vectors; never
    /// log it.
    pub fn headers_key(&self, cipher: Cipher) -> Zeroizing<[u8; SECRET_LEN]> {
        let mut okm = Zeroizing::new([0u8; SECRET_LEN]);
        let hkdf = Hkdf::<Sha256>::new(Some(HEADERS_KEY_SALT), &self.bytes);
        if hkdf.expand(cipher.name().as_bytes(), &mut okm[..]).is_err() {
            // Statically impossible, as in `derive`.
            unreachable!("HKDF-SHA256 expand of 32 bytes cannot fail");
        }
        okm
    }

    /// The key that seals a tokenized record's real key under `cipher`:
    /// HKDF-SHA256(salt = [`RECORD_KEY_KEY_SALT`], ikm = data key, info =
    /// the cipher's name), 32 bytes, independent of every other key made
    /// from the data key. For test vectors; never log it.
    pub fn record_key_key(&self, cipher: Cipher) -> Zeroizing<[u8; SECRET_LEN]> {
        let mut okm = Zeroizing::new([0u8; SECRET_LEN]);
        let hkdf = Hkdf::<Sha256>::new(Some(RECORD_KEY_KEY_SALT), &self.bytes);
        if hkdf.expand(cipher.name().as_bytes(), &mut okm[..]).is_err() {
            unreachable!("HKDF-SHA256 expand of 32 bytes cannot fail");
        }
        okm
    }

    /// The AEAD key `cipher` seals and opens real record keys with, made once.
    pub(super) fn record_key_aead(&self, cipher: Cipher) -> &LessSafeKey {
        let cell = match cipher {
            Cipher::ChaCha20Poly1305 => &self.record_key_chacha20_poly1305,
            Cipher::Aes256Gcm => &self.record_key_aes_256_gcm,
        };
        cell.get_or_init(|| AeadKey::new(cipher, &self.record_key_key(cipher)))
            .get()
    }

    /// The AEAD key `cipher` seals and opens application headers with, made once.
    pub(super) fn headers_aead(&self, cipher: Cipher) -> &LessSafeKey {
        let cell = match cipher {
            Cipher::ChaCha20Poly1305 => &self.headers_chacha20_poly1305,
            Cipher::Aes256Gcm => &self.headers_aes_256_gcm,
        };
        cell.get_or_init(|| AeadKey::new(cipher, &self.headers_key(cipher)))
            .get()
    }

    /// The AEAD key `cipher` seals and opens with, made once.
    pub(super) fn aead(&self, cipher: Cipher) -> &LessSafeKey {
        let cell = match cipher {
            Cipher::ChaCha20Poly1305 => &self.chacha20_poly1305,
            Cipher::Aes256Gcm => &self.aes_256_gcm,
        };
        cell.get_or_init(|| AeadKey::new(cipher, &self.cipher_key(cipher)))
            .get()
    }
}

/// A ring AEAD key, wiped when dropped.
///
/// ring (chosen for its assembly AES-GCM and ChaCha20-Poly1305: 4.6x and
/// 3.3x faster than RustCrypto's for 1 KiB here, docs/PERFORMANCE.md) keeps
/// a key's schedule (AES round keys, the GHASH key) inline, with no heap
/// parts, and does not wipe it. So it lives in a box of `MaybeUninit`, whose
/// bytes this type overwrites with zeros on drop. The key is built on the
/// stack and moved into the box, as with any Rust value; that stack copy is
/// not wiped.
struct AeadKey(Box<MaybeUninit<LessSafeKey>>);

impl AeadKey {
    fn new(cipher: Cipher, key: &[u8; SECRET_LEN]) -> AeadKey {
        let algorithm = match cipher {
            Cipher::ChaCha20Poly1305 => &CHACHA20_POLY1305,
            Cipher::Aes256Gcm => &AES_256_GCM,
        };
        match UnboundKey::new(algorithm, key) {
            Ok(key) => AeadKey(Box::new(MaybeUninit::new(LessSafeKey::new(key)))),
            // Both algorithms take 32-byte keys, which is all this gets.
            Err(_) => unreachable!("ring rejected a 32-byte key"),
        }
    }

    fn get(&self) -> &LessSafeKey {
        // SAFETY: initialised in `new`; only `drop` de-initialises it.
        #[allow(unsafe_code)]
        unsafe {
            self.0.assume_init_ref()
        }
    }
}

impl Drop for AeadKey {
    fn drop(&mut self) {
        let slot: *mut MaybeUninit<LessSafeKey> = &mut *self.0;
        // SAFETY: the key was initialised in `new` and is dropped once, here
        // (it has no drop glue today; this stays right if it gets some). Then
        // `slot` is a valid, aligned, exclusively borrowed `MaybeUninit`,
        // which owns no heap data and is valid as all zeros, and nothing
        // reads it again: what `zeroize_flat_type` asks.
        #[allow(unsafe_code)]
        unsafe {
            (*slot).assume_init_drop();
            zeroize::zeroize_flat_type(slot);
        }
    }
}

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::InstanceId;

    #[test]
    fn debug_is_redacted() {
        let secret = EpochSecret::from_bytes([0x41; 32]);
        let key = DataKey::derive(
            &secret,
            KeyId {
                producer: InstanceId([0; 8]),
                epoch: 0,
            },
            "t",
        );
        let shown = format!("{secret:?} {key:?}");
        assert!(!shown.contains("41"), "{shown}");
        assert!(!shown.contains("65"), "{shown}");
        assert_eq!(shown, "EpochSecret(<redacted>) DataKey(<redacted>)");
    }

    #[test]
    fn keys_differ_per_topic_epoch_and_producer() {
        let secret = EpochSecret::from_bytes([7; 32]);
        let id = KeyId {
            producer: InstanceId([1; 8]),
            epoch: 5,
        };
        let base = DataKey::derive(&secret, id, "orders");
        let other_topic = DataKey::derive(&secret, id, "orders2");
        let other_epoch = DataKey::derive(&secret, KeyId { epoch: 6, ..id }, "orders");
        let other_producer = DataKey::derive(
            &secret,
            KeyId {
                producer: InstanceId([2; 8]),
                ..id
            },
            "orders",
        );
        for k in [&other_topic, &other_epoch, &other_producer] {
            assert_ne!(base.as_bytes(), k.as_bytes());
        }
    }

    #[test]
    fn each_cipher_has_its_own_key() {
        let key = DataKey::from_bytes([9; 32]);
        assert_eq!(*key.cipher_key(Cipher::ChaCha20Poly1305), [9; 32]);
        let aes = key.cipher_key(Cipher::Aes256Gcm);
        assert_ne!(*aes, [9; 32]);
        // A clone derives the same key, and a different data key another.
        assert_eq!(*key.clone().cipher_key(Cipher::Aes256Gcm), *aes);
        assert_ne!(
            *DataKey::from_bytes([8; 32]).cipher_key(Cipher::Aes256Gcm),
            *aes
        );
        // The headers keys are a third and fourth key, one per cipher.
        let h_chacha = key.headers_key(Cipher::ChaCha20Poly1305);
        let h_aes = key.headers_key(Cipher::Aes256Gcm);
        for k in [&*h_chacha, &*h_aes] {
            assert_ne!(k, &[9; 32]);
            assert_ne!(k, &*aes);
        }
        assert_ne!(*h_chacha, *h_aes);
    }
}

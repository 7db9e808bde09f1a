//! Epoch secrets and the per-topic data keys derived from them.

use core::fmt;
use std::sync::OnceLock;

use aes_gcm::{Aes256Gcm, KeyInit};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::{Cipher, KeyId};

/// HKDF salt of the data key derivation (format v1).
pub const DATA_KEY_SALT: &[u8] = b"kafka-e2ee/v1/data-key";

/// HKDF salt of the per-cipher key derivation from a data key (format v1).
pub const CIPHER_KEY_SALT: &[u8] = b"kafka-e2ee/v1/cipher-key";

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
    /// The AES-256-GCM instance (key schedule and GHASH key), built on first
    /// use: the HKDF and the key schedule cost more than sealing a small
    /// record, and data keys are cached per epoch and topic. It wipes itself
    /// on drop (the `aes` and `polyval` crates' `zeroize` features). Boxed:
    /// it is ~1 KiB, and data keys travel inside control messages.
    aes_256_gcm: OnceLock<Box<Aes256Gcm>>,
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
            aes_256_gcm: OnceLock::new(),
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

    /// The AES-256-GCM instance under this data key's AES key, made once.
    pub(super) fn aes_256_gcm(&self) -> &Aes256Gcm {
        self.aes_256_gcm.get_or_init(|| {
            let key = self.cipher_key(Cipher::Aes256Gcm);
            Box::new(Aes256Gcm::new((&*key).into()))
        })
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
    }
}

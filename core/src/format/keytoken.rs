//! Tokenized record keys (docs/FORMAT.md section 13): the broker sees a
//! deterministic token of the record key, of the key's own length, so equal
//! keys still go to one partition and compaction still keeps the newest
//! value per key; the real key travels sealed in the one record header
//! [`SEALED_KEY_NAME`] and is restored for the consumer.
//!
//! The token is keyed by the topic's token secret ([`TokenSecret`]), which
//! every authorized producer of the topic shares and which, unlike epoch
//! keys, does not rotate (a new secret would move every key to new tokens:
//! other partitions, and nothing left for compaction to replace).
//! Two constructions, by key length, both standard:
//!
//! - 3 to 15 bytes: FF1 (NIST SP 800-38G) with AES-256 over the key's bits,
//!   a keyed permutation, so two different keys never share a token (a
//!   truncated PRF would: 4-byte keys would collide after about 65,000 of
//!   them, and compaction would then delete a live key's value);
//! - 16 to [`MAX_TOKENIZED_KEY`] bytes: HKDF-SHA256 with the secret as salt
//!   (an HMAC PRF) expanded to the key's length; collisions need about 2^64
//!   keys, and the token cannot be inverted even with the secret.
//!
//! An empty key is its own token; keys of 1 or 2 bytes are refused (a
//! domain too small for FF1, whose minimum is a million values).

use core::fmt;

use aes::Aes256;
use fpe::ff1::{BinaryNumeralString, FF1};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::header::AUTHENTICATED_LEN;
use super::headers::{open_beside, seal_beside};
use super::{DataKey, FormatError, RecordHeader};

/// Name of the record header that carries a tokenized record's real key.
pub const SEALED_KEY_NAME: &str = "e2ee.k";

/// Length of the tag at the end of a sealed-key value.
pub const SEALED_KEY_TAG_LEN: usize = 16;

/// The shortest key FF1 tokenizes: 20 bits is its smallest radix-2 domain
/// (10^6 values, SP 800-38G Rev. 1), so 3 bytes.
pub const MIN_TOKENIZED_KEY: usize = 3;

/// Keys from this length on get the PRF token (see the module comment).
pub const PRF_TOKEN_FROM: usize = 16;

/// The longest key that can be tokenized: what HKDF-SHA256 can expand to.
pub const MAX_TOKENIZED_KEY: usize = 255 * 32;

/// HKDF salt that derives the FF1 and PRF keys from a token secret.
pub const TOKEN_KEY_SALT: &[u8] = b"kafka-e2ee/v1/key-token";
const FF1_INFO: &[u8] = b"ff1-aes-256";
const PRF_INFO: &[u8] = b"hkdf-sha256";
/// HKDF info of the PRF token's expansion.
const PRF_EXPAND_INFO: &[u8] = b"kafka-e2ee/v1/key-token/expand";
/// First bytes of the sealed key's AAD.
const KEY_AAD_LABEL: &[u8] = b"kafka-e2ee/v1/record-key";

/// One topic's token secret: 32 random bytes, shared by the topic's
/// producers. Holds the two keys derived from it; `Debug` is redacted and
/// everything is wiped when dropped (aes's `zeroize` feature wipes the FF1
/// key schedule).
pub struct TokenSecret {
    secret: Zeroizing<[u8; 32]>,
    prf: Zeroizing<[u8; 32]>,
    ff1: FF1<Aes256>,
}

impl fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenSecret(..)")
    }
}

impl TokenSecret {
    pub fn from_bytes(secret: [u8; 32]) -> TokenSecret {
        let secret = Zeroizing::new(secret);
        let hkdf = Hkdf::<Sha256>::new(Some(TOKEN_KEY_SALT), &secret[..]);
        let mut ff1_key = Zeroizing::new([0u8; 32]);
        let mut prf = Zeroizing::new([0u8; 32]);
        if hkdf.expand(FF1_INFO, &mut ff1_key[..]).is_err()
            || hkdf.expand(PRF_INFO, &mut prf[..]).is_err()
        {
            unreachable!("HKDF-SHA256 expand of 32 bytes cannot fail");
        }
        let Ok(ff1) = FF1::<Aes256>::new(&ff1_key[..], 2) else {
            unreachable!("radix 2 is in FF1's range");
        };
        TokenSecret { secret, prf, ff1 }
    }

    /// The secret's bytes, for the key exchange and test vectors. Never log.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.secret
    }

    /// The token of `key` on `topic`: exactly `key.len()` bytes, the same
    /// for the same (secret, topic, key) on every host. The topic is FF1's
    /// tweak and part of the PRF input, so a secret shared by mistake
    /// between topics still gives unrelated tokens.
    pub fn token(&self, topic: &str, key: &[u8]) -> Result<Zeroizing<Vec<u8>>, FormatError> {
        let topic_bytes = topic.as_bytes();
        let topic_len = u16::try_from(topic_bytes.len())
            .map_err(|_| FormatError::TopicTooLong {
                len: topic_bytes.len(),
            })?
            .to_be_bytes();
        match key.len() {
            0 => Ok(Zeroizing::new(Vec::new())),
            n if n < MIN_TOKENIZED_KEY => Err(FormatError::KeyNotTokenizable { len: n }),
            n if n < PRF_TOKEN_FROM => {
                let bits = BinaryNumeralString::from_bytes_le(key);
                let out = self
                    .ff1
                    .encrypt(topic_bytes, &bits)
                    .map_err(|_| FormatError::KeyNotTokenizable { len: n })?;
                Ok(Zeroizing::new(out.to_bytes_le()))
            }
            n if n <= MAX_TOKENIZED_KEY => {
                let mut ikm = Zeroizing::new(Vec::with_capacity(2 + topic_bytes.len() + n));
                ikm.extend_from_slice(&topic_len);
                ikm.extend_from_slice(topic_bytes);
                ikm.extend_from_slice(key);
                let hkdf = Hkdf::<Sha256>::new(Some(&self.prf[..]), &ikm);
                let mut out = Zeroizing::new(vec![0u8; n]);
                hkdf.expand(PRF_EXPAND_INFO, &mut out)
                    .map_err(|_| FormatError::KeyNotTokenizable { len: n })?;
                Ok(out)
            }
            n => Err(FormatError::KeyNotTokenizable { len: n }),
        }
    }
}

/// Which of a record's sealed-key values (every header named
/// [`SEALED_KEY_NAME`], in order) is to be opened: exactly one if the
/// record header has FLAG_TOKEN_KEY, none otherwise.
pub fn select_sealed_key<'s>(
    header: &RecordHeader,
    sealed: &[&'s [u8]],
) -> Result<Option<&'s [u8]>, FormatError> {
    match (header.has_token_key(), sealed) {
        (false, []) => Ok(None),
        (false, _) => Err(FormatError::SealedKeyUnexpected),
        (true, []) => Err(FormatError::SealedKeyMissing),
        (true, [one]) => Ok(Some(one)),
        (true, _) => Err(FormatError::SealedKeyDuplicate),
    }
}

/// Seals the real record key `key` of the record whose header is `header`
/// (which must have FLAG_TOKEN_KEY; its tag is not used) and whose key on
/// the wire is `token`: returns `ciphertext || tag`, the value of the
/// [`SEALED_KEY_NAME`] header.
pub(super) fn seal_key(
    data_key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    token: &[u8],
    key: &[u8],
) -> Result<Vec<u8>, FormatError> {
    if !header.has_token_key() {
        return Err(FormatError::SealedKeyUnexpected);
    }
    if token.len() != key.len() {
        return Err(FormatError::SealedKeyLength);
    }
    let aad = key_aad(topic, &header.encode_authenticated(), token)?;
    seal_beside(data_key.record_key_aead(header.cipher()), header, &aad, key)
        .ok_or(FormatError::KeyTooLong { len: key.len() })
}

/// Verifies and decrypts the sealed-key value of the record whose header is
/// `header` and whose key on the wire is `token`: the real key, which has
/// the token's length. `Authentication` if it does not verify (tampered,
/// another record's, or the token on the wire was changed).
pub fn open_key(
    data_key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    token: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, FormatError> {
    header.validate()?;
    if !header.has_token_key() {
        return Err(FormatError::SealedKeyUnexpected);
    }
    let aad = key_aad(topic, &header.encode_authenticated(), token)?;
    let plain = open_beside(
        data_key.record_key_aead(header.cipher()),
        header,
        &aad,
        sealed,
    )?;
    // Authenticated, so only its producer can break this; hosts that
    // restore the key in place (librdkafka) rely on it.
    if plain.len() != token.len() {
        return Err(FormatError::SealedKeyLength);
    }
    Ok(plain)
}

/// label || u16 BE topic length || topic || record header bytes 0..18 ||
/// u32 BE token length || token.
fn key_aad(
    topic: &str,
    header_authenticated: &[u8; AUTHENTICATED_LEN],
    token: &[u8],
) -> Result<Vec<u8>, FormatError> {
    let topic = topic.as_bytes();
    let topic_len = u16::try_from(topic.len())
        .map_err(|_| FormatError::TopicTooLong { len: topic.len() })?
        .to_be_bytes();
    let token_len = u32::try_from(token.len())
        .map_err(|_| FormatError::KeyTooLong { len: token.len() })?
        .to_be_bytes();
    Ok([
        KEY_AAD_LABEL,
        &topic_len,
        topic,
        header_authenticated,
        &token_len,
        token,
    ]
    .concat())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn secret(b: u8) -> TokenSecret {
        TokenSecret::from_bytes([b; 32])
    }

    #[test]
    fn tokens_keep_length_and_are_deterministic() {
        let s = secret(7);
        for n in [
            0usize,
            3,
            4,
            8,
            15,
            16,
            17,
            32,
            33,
            100,
            1000,
            MAX_TOKENIZED_KEY,
        ] {
            let key: Vec<u8> = (0..n).map(|i| (i * 31 + 5) as u8).collect();
            let t = s.token("orders", &key).unwrap();
            assert_eq!(t.len(), n);
            assert_eq!(t, s.token("orders", &key).unwrap());
            if n > 0 {
                assert_ne!(*t, key, "{n}");
                assert_ne!(t, s.token("orders2", &key).unwrap(), "{n}");
                assert_ne!(t, secret(8).token("orders", &key).unwrap(), "{n}");
            }
        }
    }

    #[test]
    fn short_keys_never_collide() {
        // Every 3-byte key with a fixed first byte: a permutation gives
        // 65,536 distinct tokens.
        let s = secret(1);
        let mut seen = HashSet::new();
        for i in 0..=u16::MAX {
            let [a, b] = i.to_be_bytes();
            assert!(seen.insert(s.token("t", &[9, a, b]).unwrap().to_vec()));
        }
    }

    #[test]
    fn keys_of_one_or_two_bytes_and_over_the_maximum_are_refused() {
        let s = secret(1);
        for n in [1usize, 2, MAX_TOKENIZED_KEY + 1] {
            assert_eq!(
                s.token("t", &vec![0u8; n]),
                Err(FormatError::KeyNotTokenizable { len: n })
            );
        }
    }

    #[test]
    fn debug_shows_no_secret() {
        assert_eq!(format!("{:?}", secret(0x41)), "TokenSecret(..)");
    }
}

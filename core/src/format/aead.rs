//! Sealing and opening a record value in place.

use std::cell::RefCell;

use ring::aead::{Aad, Nonce, Tag};
use zeroize::Zeroizing;

use super::compress::{self, compress, decompress_exact};
use super::header::AUTHENTICATED_LEN;
use super::headers::{
    check_clear_headers, decode_header_list, open_headers, seal_headers, select_sealed_headers,
    AppHeader,
};
use super::keytoken::{open_key, seal_key, select_sealed_key};
use super::{
    BindingKind, Cipher, Compression, DataKey, FormatError, KeyId, RecordHeader, Sealing,
    COMPRESSION_LZ4, COMPRESSION_ZSTD, FLAG_AES_256_GCM, FLAG_HEADERS, FLAG_KEY_BOUND,
    FLAG_KEY_NULL, FLAG_TOKEN_KEY, VERSION,
};

/// A tokenized record key, for sealing (docs/FORMAT.md section 13): the
/// token the broker sees and the real key that travels sealed. `Debug`
/// shows only the length.
#[derive(Clone, Copy)]
pub struct TokenizedKey<'a> {
    pub token: &'a [u8],
    pub key: &'a [u8],
}

impl core::fmt::Debug for TokenizedKey<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TokenizedKey({} bytes)", self.key.len())
    }
}

/// What sealing a whole record produced: its `e2ee` header, and the values
/// of its `e2ee.h` and `e2ee.k` headers if it has them.
#[derive(Debug)]
pub struct SealedRecord {
    pub header: RecordHeader,
    pub sealed_headers: Option<Vec<u8>>,
    pub sealed_key: Option<Vec<u8>>,
}

/// What a record carries besides its `e2ee` header and value, for opening
/// it whole ([`open_record_parts`]): the values of every `e2ee.h` and every
/// `e2ee.k` header, in order; its other headers (but `e2ee`), in order, for
/// the clear-header check; and its key as it came off the wire.
#[derive(Debug, Default, Clone, Copy)]
pub struct RecordExtras<'a> {
    pub sealed_headers: &'a [&'a [u8]],
    pub visible: &'a [AppHeader<'a>],
    pub wire_key: Option<&'a [u8]>,
    pub sealed_keys: &'a [&'a [u8]],
}

/// What opening a whole record restored besides its value.
#[derive(Debug, Default)]
pub struct OpenedExtras {
    /// The encoded application header list, if the record had one.
    pub headers: Option<Zeroizing<Vec<u8>>>,
    /// The real record key, if the record's key was a token.
    pub key: Option<Zeroizing<Vec<u8>>>,
}

/// First bytes of every AAD: names the format and its version, so AADs of
/// this format can never collide with another use of the same key.
const AAD_LABEL: &[u8] = b"kafka-e2ee/v1";

/// AADs up to this size are built on the stack. A Kafka topic name is at most
/// 249 bytes, so this covers every topic with a record key up to ~220 bytes;
/// longer keys fall back to one heap allocation.
const AAD_STACK_LEN: usize = 512;

/// ChaCha20 as used by the AEAD has a 32-bit block counter (block 0 keys
/// Poly1305), so len / 64 < u32::MAX (ring allows up to 64 bytes more).
const CHACHA_MAX_LEN: u64 = (u32::MAX as u64 - 1) * 64 + 63;
/// GCM's limit (NIST SP 800-38D): 2^39 - 256 bits; ring refuses more.
const GCM_MAX_LEN: u64 = (1 << 36) - 32;

/// Largest copy of a ciphertext [`decrypt`] keeps per thread between
/// records; a larger one is freed after its record.
const KEPT_CIPHERTEXT_LEN: usize = 1 << 20;

thread_local! {
    /// The ciphertext being opened on this thread, to put back if its tag
    /// does not verify. Not secret; reused so that opening allocates
    /// nothing per record.
    static CIPHERTEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// What the producer or consumer hook knows about the serialized record key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyBinding<'a> {
    /// The hook cannot see the serialized record key (e.g. a Java serializer
    /// wrapper for values); the key is not bound.
    Unbound,
    /// The hook sees the record key, and it is null.
    Null,
    /// The hook sees the record key's serialized bytes.
    Bytes(&'a [u8]),
}

impl KeyBinding<'_> {
    /// The kind of binding, without the key bytes.
    pub fn kind(&self) -> BindingKind {
        match self {
            KeyBinding::Unbound => BindingKind::Unbound,
            KeyBinding::Null => BindingKind::Null,
            KeyBinding::Bytes(_) => BindingKind::Bytes,
        }
    }

    fn flags(&self) -> u8 {
        match self {
            KeyBinding::Unbound => 0,
            KeyBinding::Null => FLAG_KEY_BOUND | FLAG_KEY_NULL,
            KeyBinding::Bytes(_) => FLAG_KEY_BOUND,
        }
    }
}

/// Encrypts `value` in place with ChaCha20-Poly1305 under `key` and returns
/// the record header to attach as [`HEADER_NAME`](super::HEADER_NAME). The
/// ciphertext has exactly the plaintext's length; a zero-length value stays
/// zero-length and is still authenticated by the tag.
///
/// The caller (the key layer) guarantees that `(key_id, counter)` is never
/// used twice with the same key: see "Nonce uniqueness" in docs/FORMAT.md.
/// A null value (tombstone) is not sealed at all; the host passes it through.
///
/// On error the value is unchanged.
pub fn seal_in_place(
    key: &DataKey,
    key_id: KeyId,
    counter: u32,
    topic: &str,
    binding: KeyBinding<'_>,
    value: &mut [u8],
) -> Result<RecordHeader, FormatError> {
    seal_in_place_with(
        key,
        key_id,
        counter,
        topic,
        binding,
        Sealing::default(),
        value,
    )
}

/// [`seal_in_place`] with a choice of cipher and compression. The value
/// keeps its length either way. With compression, a value that shrinks
/// becomes `ciphertext of the compressed value || 0x80 || zeros` (see
/// docs/FORMAT.md, "Compression"); one that does not is sealed uncompressed.
///
/// On error the value is unchanged.
pub fn seal_in_place_with(
    key: &DataKey,
    key_id: KeyId,
    counter: u32,
    topic: &str,
    binding: KeyBinding<'_>,
    sealing: Sealing,
    value: &mut [u8],
) -> Result<RecordHeader, FormatError> {
    seal_record(key, key_id, counter, topic, binding, sealing, value, None).map(|(h, _)| h)
}

/// [`seal_in_place_with`], and if `headers` is given (an encoded header
/// list, [`encode_header_list`](super::encode_header_list)), seals it too:
/// sets FLAG_HEADERS and returns the value of the
/// [`SEALED_HEADERS_NAME`](super::SEALED_HEADERS_NAME) header to attach
/// (docs/FORMAT.md section 12).
///
/// On error the value is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn seal_record(
    key: &DataKey,
    key_id: KeyId,
    counter: u32,
    topic: &str,
    binding: KeyBinding<'_>,
    sealing: Sealing,
    value: &mut [u8],
    headers: Option<&[u8]>,
) -> Result<(RecordHeader, Option<Vec<u8>>), FormatError> {
    seal_record_parts(
        key, key_id, counter, topic, binding, sealing, value, headers, None,
    )
    .map(|r| (r.header, r.sealed_headers))
}

/// [`seal_record`], and if `tokenized` is given, seals the real record key
/// too: sets FLAG_TOKEN_KEY and returns the value of the
/// [`SEALED_KEY_NAME`](super::SEALED_KEY_NAME) header to attach
/// (docs/FORMAT.md section 13). `binding` describes the key on the wire,
/// which is the token. On error the value is unchanged.
#[allow(clippy::too_many_arguments)]
pub fn seal_record_parts(
    key: &DataKey,
    key_id: KeyId,
    counter: u32,
    topic: &str,
    binding: KeyBinding<'_>,
    sealing: Sealing,
    value: &mut [u8],
    headers: Option<&[u8]>,
    tokenized: Option<TokenizedKey<'_>>,
) -> Result<SealedRecord, FormatError> {
    check_value_len(sealing.cipher, value)?;
    let compressed = compress(sealing.compression, value);
    let mut flags = binding.flags();
    if sealing.cipher == Cipher::Aes256Gcm {
        flags |= FLAG_AES_256_GCM;
    }
    if compressed.is_some() {
        flags |= match sealing.compression {
            Compression::Zstd => COMPRESSION_ZSTD,
            Compression::Lz4 => COMPRESSION_LZ4,
            Compression::None => 0,
        };
    }
    if headers.is_some() {
        flags |= FLAG_HEADERS;
    }
    if tokenized.is_some() {
        flags |= FLAG_TOKEN_KEY;
    }
    let mut header = RecordHeader {
        version: VERSION,
        flags,
        key_id,
        counter,
        tag: [0; 16],
    };
    // The headers first: they do not touch the value, so an error leaves
    // it as it was.
    let sealed_headers = match headers {
        Some(plain) => Some(seal_headers(key, &header, topic, plain)?),
        None => None,
    };
    let sealed_key = match tokenized {
        Some(t) => Some(seal_key(key, &header, topic, t.token, t.key)?),
        None => None,
    };
    let nonce = nonce(key_id.epoch, counter);
    let authenticated = header.encode_authenticated();
    let len = value.len();
    let too_long = || FormatError::ValueTooLong { len };
    header.tag = match compressed {
        None => with_aad(topic, &authenticated, None, binding, |aad| {
            encrypt(key, sealing.cipher, &nonce, aad, value)
        })?
        .ok_or_else(too_long)?,
        Some(mut packed) => {
            // Sealed in the scratch buffer first, so the value is unchanged
            // unless everything succeeded.
            let tag = with_aad(topic, &authenticated, Some(value.len()), binding, |aad| {
                encrypt(key, sealing.cipher, &nonce, aad, &mut packed)
            })?
            .ok_or_else(too_long)?;
            let (head, _) = value.split_at_mut(packed.len());
            head.copy_from_slice(&packed);
            compress::pad(value, packed.len());
            tag
        }
    };
    Ok(SealedRecord {
        header,
        sealed_headers,
        sealed_key,
    })
}

/// Opens a whole record: checks that it carries a sealed-headers value
/// exactly when its header says so (`sealed_headers`: the values of every
/// [`SEALED_HEADERS_NAME`](super::SEALED_HEADERS_NAME) header of the
/// record, in order), opens that first and checks the record's clear
/// copies against it (`visible`: the record's other headers, but `e2ee`,
/// in order; see [`check_clear_headers`]), then opens the value in place as
/// [`open_in_place`] does. Returns the encoded header list if the record
/// had one. On any error the value is unchanged.
pub fn open_record(
    key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    binding: KeyBinding<'_>,
    value: &mut [u8],
    sealed_headers: &[&[u8]],
    visible: &[AppHeader<'_>],
) -> Result<Option<Zeroizing<Vec<u8>>>, FormatError> {
    let extras = RecordExtras {
        sealed_headers,
        visible,
        ..RecordExtras::default()
    };
    open_record_parts(key, header, topic, binding, value, extras).map(|o| o.headers)
}

/// [`open_record`], and for a record whose key is a token (FLAG_TOKEN_KEY),
/// opens its one [`SEALED_KEY_NAME`](super::SEALED_KEY_NAME) value against
/// the key on the wire and returns the real key (docs/FORMAT.md section
/// 13). A record must have exactly one sealed key if its header says so
/// (and a key on the wire), and none otherwise. On any error the value is
/// unchanged.
pub fn open_record_parts(
    key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    binding: KeyBinding<'_>,
    value: &mut [u8],
    extras: RecordExtras<'_>,
) -> Result<OpenedExtras, FormatError> {
    header.validate()?;
    let (sealed, opened) = (header.binding_kind(), binding.kind());
    if sealed != opened {
        return Err(FormatError::KeyBindingMismatch { sealed, opened });
    }
    let real_key = match select_sealed_key(header, extras.sealed_keys)? {
        Some(s) => {
            let token = extras.wire_key.ok_or(FormatError::SealedKeyUnexpected)?;
            Some(open_key(key, header, topic, token, s)?)
        }
        None => None,
    };
    let (sealed_headers, visible) = (extras.sealed_headers, extras.visible);
    let headers = match select_sealed_headers(header, sealed_headers)? {
        Some(s) => {
            let plain = open_headers(key, header, topic, s)?;
            check_clear_headers(&decode_header_list(&plain)?, visible)?;
            Some(plain)
        }
        None => None,
    };
    open_in_place(key, header, topic, binding, value)?;
    Ok(OpenedExtras {
        headers,
        key: real_key,
    })
}

/// Verifies and decrypts `value` in place, whichever cipher and compression
/// the header names. On any error the value is left unchanged: the tag is
/// checked before a single byte is decrypted.
///
/// `binding` must describe the record key the same way the producer did:
/// a header that says KEY_BOUND opened with [`KeyBinding::Unbound`] (or the
/// reverse, or null against bytes) is [`FormatError::KeyBindingMismatch`].
///
/// Opening is not idempotent: a value already opened in place fails with
/// [`FormatError::Authentication`] (and stays as it is), so a host whose hook
/// may run twice on one message must remember what it opened.
pub fn open_in_place(
    key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    binding: KeyBinding<'_>,
    value: &mut [u8],
) -> Result<(), FormatError> {
    header.validate()?;
    let sealed = header.binding_kind();
    let opened = binding.kind();
    if sealed != opened {
        return Err(FormatError::KeyBindingMismatch { sealed, opened });
    }
    let cipher = header.cipher();
    check_value_len(cipher, value)?;
    let nonce = nonce(header.key_id.epoch, header.counter);
    let authenticated = header.encode_authenticated();
    let compression = header.compression();
    if compression == Compression::None {
        // `decrypt` leaves the buffer as it was unless the tag verifies.
        return with_aad(topic, &authenticated, None, binding, |aad| {
            decrypt(key, cipher, &nonce, aad, value, &header.tag)
        })?
        .ok_or(FormatError::Authentication);
    }
    // A malformed boundary cannot have been sealed: the tag would not
    // verify over any ciphertext length but the sealed one.
    let sealed_len = compress::sealed_len(value).ok_or(FormatError::Authentication)?;
    let mut packed = Zeroizing::new(value.get(..sealed_len).unwrap_or_default().to_vec());
    with_aad(topic, &authenticated, Some(value.len()), binding, |aad| {
        decrypt(key, cipher, &nonce, aad, &mut packed, &header.tag)
    })?
    .ok_or(FormatError::Authentication)?;
    // The output is exactly the record's length: no decompression bomb can
    // make it larger, and the value is untouched unless all of it succeeds.
    let mut plain = Zeroizing::new(vec![0u8; value.len()]);
    decompress_exact(compression, &packed, &mut plain).map_err(|()| FormatError::Decompression)?;
    value.copy_from_slice(&plain);
    Ok(())
}

/// Whether `plaintext` is what a record sealed under `header` held: seals a
/// copy of it under the header's key id, counter and flags and compares the
/// tag with the header's. `plaintext` itself is not changed.
///
/// For a host that opened a record in place and must later tell whether a
/// value is that record's plaintext (librdkafka may run `on_consume` twice
/// for one message; see the plugin's `e2ee.opened` marker). It costs a full
/// seal, so a host does it only on such a second run. Sealing is
/// deterministic given key, nonce and AAD, and a different plaintext gives a
/// different ciphertext and so (but with the AEAD's forgery probability) a
/// different tag. False for a compressed record (its sealing depends on the
/// producer's compressor, not reproduced here), a malformed header, a
/// binding of the other kind, or a value too long for the cipher.
pub fn reseals_to(
    key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    binding: KeyBinding<'_>,
    plaintext: &[u8],
) -> bool {
    if header.validate().is_err()
        || header.compression() != Compression::None
        || header.binding_kind() != binding.kind()
        || check_value_len(header.cipher(), plaintext).is_err()
    {
        return false;
    }
    let nonce = nonce(header.key_id.epoch, header.counter);
    let authenticated = header.encode_authenticated();
    // The copy holds plaintext until sealed (and if sealing fails): wiped.
    let mut copy = Zeroizing::new(plaintext.to_vec());
    let tag = with_aad(topic, &authenticated, None, binding, |aad| {
        encrypt(key, header.cipher(), &nonce, aad, &mut copy)
    });
    // Both tags are public (the header travels in the clear); the fold
    // only avoids an early exit out of habit.
    matches!(tag, Ok(Some(t)) if t.iter().zip(header.tag.iter()).fold(0u8, |d, (a, b)| d | (a ^ b)) == 0)
}

/// Encrypts `buf` in place; `None` only if it is too long for the cipher.
fn encrypt(
    key: &DataKey,
    cipher: Cipher,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
) -> Option<[u8; 16]> {
    let tag = key
        .aead(cipher)
        .seal_in_place_separate_tag(Nonce::assume_unique_for_key(*nonce), Aad::from(aad), buf)
        .ok()?;
    tag.as_ref().try_into().ok()
}

/// Verifies and decrypts `buf` in place; `None` if the tag does not verify,
/// and the buffer is then exactly as it was.
///
/// ring decrypts while it authenticates (one pass, for speed) and zeroes the
/// buffer when the tag does not match, so no unauthenticated plaintext ever
/// reaches the caller. Callers here are promised more: a failed open leaves
/// the value unchanged (docs/FORMAT.md, "Opening"). So the ciphertext is
/// copied first and put back on failure: one copy, which costs far less
/// than a cipher that verifies before it decrypts (two passes) would.
fn decrypt(
    key: &DataKey,
    cipher: Cipher,
    nonce: &[u8; 12],
    aad: &[u8],
    buf: &mut [u8],
    tag: &[u8; 16],
) -> Option<()> {
    let key = key.aead(cipher);
    let open_or_restore = |copy: &mut Vec<u8>, buf: &mut [u8]| {
        copy.clear();
        copy.extend_from_slice(buf);
        let opened = key
            .open_in_place_separate_tag(
                Nonce::assume_unique_for_key(*nonce),
                Aad::from(aad),
                Tag::from(*tag),
                buf,
                0..,
            )
            .is_ok();
        if !opened {
            buf.copy_from_slice(copy);
        }
        if copy.capacity() > KEPT_CIPHERTEXT_LEN {
            *copy = Vec::new();
        }
        opened
    };
    // The thread's buffer, unless the thread is exiting (its locals are
    // gone) or this is somehow re-entered: then a buffer of its own.
    let opened = CIPHERTEXT
        .try_with(|copy| {
            copy.try_borrow_mut()
                .ok()
                .map(|mut copy| open_or_restore(&mut copy, buf))
        })
        .ok()
        .flatten();
    let opened = match opened {
        Some(opened) => opened,
        None => open_or_restore(&mut Vec::new(), buf),
    };
    opened.then_some(())
}

/// 0x00000000 || epoch u32 BE || counter u32 BE. The same for both ciphers:
/// they never share a key (see `DataKey::cipher_key`).
pub(super) fn nonce(epoch: u32, counter: u32) -> [u8; 12] {
    let [e0, e1, e2, e3] = epoch.to_be_bytes();
    let [c0, c1, c2, c3] = counter.to_be_bytes();
    [0, 0, 0, 0, e0, e1, e2, e3, c0, c1, c2, c3]
}

fn check_value_len(cipher: Cipher, value: &[u8]) -> Result<(), FormatError> {
    let max = match cipher {
        Cipher::ChaCha20Poly1305 => CHACHA_MAX_LEN,
        Cipher::Aes256Gcm => GCM_MAX_LEN,
    };
    if u64::try_from(value.len()).map_or(true, |len| len > max) {
        return Err(FormatError::ValueTooLong { len: value.len() });
    }
    Ok(())
}

/// Builds the AAD and hands it to `f`:
/// label || u16 BE topic length || topic || header bytes 0..18
/// || (if compressed) u64 BE value length
/// || (if the key is bound and not null) u32 BE key length || key.
fn with_aad<R>(
    topic: &str,
    header_authenticated: &[u8; AUTHENTICATED_LEN],
    compressed_len: Option<usize>,
    binding: KeyBinding<'_>,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R, FormatError> {
    let topic = topic.as_bytes();
    let topic_len = u16::try_from(topic.len())
        .map_err(|_| FormatError::TopicTooLong { len: topic.len() })?
        .to_be_bytes();
    let key_len_be: [u8; 4];
    let (key_len, key): (&[u8], &[u8]) = match binding {
        KeyBinding::Bytes(key) => {
            key_len_be = u32::try_from(key.len())
                .map_err(|_| FormatError::KeyTooLong { len: key.len() })?
                .to_be_bytes();
            (&key_len_be, key)
        }
        KeyBinding::Unbound | KeyBinding::Null => (&[], &[]),
    };
    let value_len_be: [u8; 8];
    let value_len: &[u8] = match compressed_len {
        Some(len) => {
            value_len_be = u64::try_from(len).unwrap_or(u64::MAX).to_be_bytes();
            &value_len_be
        }
        None => &[],
    };
    let parts: [&[u8]; 7] = [
        AAD_LABEL,
        &topic_len,
        topic,
        header_authenticated,
        value_len,
        key_len,
        key,
    ];
    let mut stack = [0u8; AAD_STACK_LEN];
    if let Some(aad) = concat_into(&mut stack, &parts) {
        return Ok(f(aad));
    }
    Ok(f(&parts.concat()))
}

/// Writes `parts` one after another into `buf`; `None` if they do not fit.
fn concat_into<'b>(buf: &'b mut [u8], parts: &[&[u8]]) -> Option<&'b [u8]> {
    let mut rest = &mut *buf;
    let mut used = 0;
    for part in parts {
        let (dst, tail) = core::mem::take(&mut rest).split_at_mut_checked(part.len())?;
        dst.copy_from_slice(part);
        rest = tail;
        used += part.len();
    }
    buf.get(..used)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::InstanceId;

    fn aad_of(topic: &str, binding: KeyBinding<'_>) -> Vec<u8> {
        let header = [9u8; AUTHENTICATED_LEN];
        with_aad(topic, &header, None, binding, |aad| aad.to_vec()).unwrap()
    }

    #[test]
    fn aad_layout() {
        let aad = aad_of("ab", KeyBinding::Bytes(b"xyz"));
        let mut expected = b"kafka-e2ee/v1".to_vec();
        expected.extend_from_slice(&[0, 2, b'a', b'b']);
        expected.extend_from_slice(&[9; 18]);
        expected.extend_from_slice(&[0, 0, 0, 3, b'x', b'y', b'z']);
        assert_eq!(aad, expected);
        assert_eq!(aad_of("ab", KeyBinding::Null), expected[..4 + 13 + 18]);
        assert_eq!(aad_of("ab", KeyBinding::Unbound), expected[..4 + 13 + 18]);
        // A compressed record binds the value's length after the header.
        let header = [9u8; AUTHENTICATED_LEN];
        let aad = with_aad(
            "ab",
            &header,
            Some(0x0102),
            KeyBinding::Bytes(b"xyz"),
            |aad| aad.to_vec(),
        )
        .unwrap();
        let mut compressed = expected[..4 + 13 + 18].to_vec();
        compressed.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
        compressed.extend_from_slice(&expected[4 + 13 + 18..]);
        assert_eq!(aad, compressed);
    }

    #[test]
    fn stack_and_heap_aad_agree() {
        // Crosses AAD_STACK_LEN: the same layout whichever buffer holds it.
        let topic = "t".repeat(300);
        for key_len in [0usize, 100, 170, 171, 172, 180, 1000] {
            let key = vec![0x5a; key_len];
            let aad = aad_of(&topic, KeyBinding::Bytes(&key));
            assert_eq!(aad.len(), 13 + 2 + 300 + 18 + 4 + key_len);
            assert_eq!(&aad[aad.len() - key_len..], &key[..]);
        }
    }

    #[test]
    fn too_long_topic_is_an_error() {
        let topic = "x".repeat(usize::from(u16::MAX) + 1);
        let key = DataKey::from_bytes([1; 32]);
        let id = KeyId {
            producer: InstanceId([0; 8]),
            epoch: 0,
        };
        let mut value = *b"abc";
        assert_eq!(
            seal_in_place(&key, id, 0, &topic, KeyBinding::Unbound, &mut value),
            Err(FormatError::TopicTooLong { len: 65536 })
        );
        assert_eq!(&value, b"abc");
        let max = "x".repeat(usize::from(u16::MAX));
        let header = seal_in_place(&key, id, 0, &max, KeyBinding::Unbound, &mut value).unwrap();
        open_in_place(&key, &header, &max, KeyBinding::Unbound, &mut value).unwrap();
        assert_eq!(&value, b"abc");
    }
}

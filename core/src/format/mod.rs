//! Record format v1: the one record header that carries everything but the
//! length-preserving ciphertext. Specified byte by byte in docs/FORMAT.md.
//!
//! The value is encrypted in place with ChaCha20-Poly1305 or AES-256-GCM and
//! a detached tag, so the sealed value has exactly the plaintext's length
//! (librdkafka's queue accounting forbids changing it). Version, flags
//! (which name the cipher and any compression), key id, counter and tag
//! travel in one 34-byte record header named [`HEADER_NAME`].

use core::fmt;

mod aead;
mod compress;
mod header;
mod headers;
mod keytoken;
mod secret;

pub use aead::{
    open_in_place, open_record, open_record_parts, reseals_to, seal_in_place, seal_in_place_with,
    seal_record, seal_record_parts, KeyBinding, OpenedExtras, RecordExtras, SealedRecord,
    TokenizedKey,
};
pub use header::{
    RecordHeader, COMPRESSION_LZ4, COMPRESSION_MASK, COMPRESSION_ZSTD, FLAG_AES_256_GCM,
    FLAG_HEADERS, FLAG_KEY_BOUND, FLAG_KEY_NULL, FLAG_RESERVED, FLAG_TOKEN_KEY, HEADER_LEN,
    VERSION,
};
pub use headers::{
    check_clear_headers, decode_header_list, encode_header_list, open_headers,
    select_sealed_headers, AppHeader, SEALED_HEADERS_NAME, SEALED_HEADERS_TAG_LEN,
};
pub use keytoken::{
    open_key, select_sealed_key, TokenSecret, MAX_TOKENIZED_KEY, MIN_TOKENIZED_KEY, PRF_TOKEN_FROM,
    SEALED_KEY_NAME, SEALED_KEY_TAG_LEN, TOKEN_KEY_SALT,
};
pub use secret::{
    DataKey, EpochSecret, CIPHER_KEY_SALT, DATA_KEY_SALT, HEADERS_KEY_SALT, RECORD_KEY_KEY_SALT,
};

/// The AEAD a producer seals values with (`e2ee.cipher`). The header names
/// it, so a consumer opens either, whatever its own setting.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Cipher {
    /// ChaCha20-Poly1305 (RFC 8439), the default: fast and constant-time on
    /// every CPU, and readable by every version-1 reader.
    #[default]
    ChaCha20Poly1305,
    /// AES-256-GCM: faster where the CPU has AES and carry-less multiply
    /// instructions (AES-NI and PCLMULQDQ on x86-64).
    Aes256Gcm,
}

impl Cipher {
    pub const ALL: [Cipher; 2] = [Cipher::ChaCha20Poly1305, Cipher::Aes256Gcm];

    /// The setting's value, also the HKDF info of the cipher's key.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::ChaCha20Poly1305 => "chacha20-poly1305",
            Cipher::Aes256Gcm => "aes-256-gcm",
        }
    }

    /// Parses a setting's value (exact, lowercase).
    pub fn from_name(name: &str) -> Option<Cipher> {
        Cipher::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Cipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a producer compresses values before sealing them
/// (`e2ee.compression`). See "Compression" in docs/FORMAT.md: a compressed
/// record keeps its length, its tail becomes zero padding in the clear that
/// the client's batch compression squeezes; and compressed lengths leak
/// information about the content.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Lz4,
}

impl Compression {
    pub const ALL: [Compression; 3] = [Compression::None, Compression::Zstd, Compression::Lz4];

    /// The setting's value.
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Zstd => "zstd",
            Compression::Lz4 => "lz4",
        }
    }

    /// Parses a setting's value (exact, lowercase).
    pub fn from_name(name: &str) -> Option<Compression> {
        Compression::ALL.into_iter().find(|c| c.name() == name)
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a producer seals: its cipher and compression settings.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Sealing {
    pub cipher: Cipher,
    pub compression: Compression,
}

/// Name of the Kafka record header that carries a [`RecordHeader`].
pub const HEADER_NAME: &str = "e2ee";

/// Bytes a sealed record gains on the wire: header name plus header value.
/// (Kafka's own per-header varints are not counted.)
pub const OVERHEAD: usize = HEADER_NAME.len() + HEADER_LEN;

/// One engine instance: a process's engine for one cluster and credential.
/// A producer's instance id is part of every key id it issues, which is how a
/// consumer knows whom to ask for a key it lacks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub [u8; 8]);

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Names one producer epoch: the producer instance and its epoch number.
/// The data key of a record is derived from the epoch secret and the topic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyId {
    pub producer: InstanceId,
    pub epoch: u32,
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.producer, self.epoch)
    }
}

/// How the record key was bound into a sealed record, as recorded by the
/// header flags. Carried by [`FormatError::KeyBindingMismatch`]; it never
/// holds key bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum BindingKind {
    /// The hook could not see the serialized record key; it is not bound.
    Unbound,
    /// The record key was bound and was null.
    Null,
    /// The record key was bound and had bytes.
    Bytes,
}

impl fmt::Display for BindingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BindingKind::Unbound => "not bound",
            BindingKind::Null => "bound as null",
            BindingKind::Bytes => "bound with bytes",
        })
    }
}

/// Why a record header or record could not be decoded, sealed or opened.
///
/// No variant carries key material, plaintext or ciphertext: messages are
/// safe to log.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The header value does not have exactly [`HEADER_LEN`] bytes.
    HeaderLength { actual: usize },
    /// The header's format version is not one this build understands.
    UnsupportedVersion(u8),
    /// A reserved flag bit (bits 2, 6) is set, or the compression field
    /// holds its reserved value; `flags` is the whole flags byte.
    ReservedFlags(u8),
    /// KEY_NULL is set without KEY_BOUND.
    KeyNullWithoutKeyBound,
    /// The topic name is longer than the AAD's u16 length field allows.
    TopicTooLong { len: usize },
    /// The record key is longer than the AAD's u32 length field allows.
    KeyTooLong { len: usize },
    /// The value is longer than the cipher can encrypt under one nonce
    /// (ChaCha20: 256 GiB, AES-GCM: 64 GiB).
    ValueTooLong { len: usize },
    /// The header says the record key was bound one way, the caller supplied
    /// it another way (for example the header says KEY_BOUND but the hook
    /// cannot see the record key).
    KeyBindingMismatch {
        sealed: BindingKind,
        opened: BindingKind,
    },
    /// The authentication tag did not verify, or a compressed record's
    /// padding is malformed. The value is left unchanged.
    Authentication,
    /// An authenticated compressed record did not decompress to exactly its
    /// own length: its producer holds a valid key but sealed garbage. The
    /// value is left unchanged.
    Decompression,
    /// The header says the record's application headers are sealed, but the
    /// record has no [`SEALED_HEADERS_NAME`] header (it was stripped).
    SealedHeadersMissing,
    /// The record has a [`SEALED_HEADERS_NAME`] header but its header does
    /// not say so (added, or the flag was stripped).
    SealedHeadersUnexpected,
    /// The record has more than one [`SEALED_HEADERS_NAME`] header.
    SealedHeadersDuplicate,
    /// A header list does not encode (a name or value over 4 GiB) or, after
    /// it authenticated, does not decode: its producer sealed a malformed
    /// list.
    HeaderList,
    /// The headers the record carries in the clear (`e2ee.headers.clear`)
    /// are not the ones its producer sealed: changed, removed, added or
    /// reordered on the way.
    ClearHeadersMismatch,
    /// A record key of this length cannot be tokenized (`e2ee.keys=tokenize`):
    /// 1 or 2 bytes (too few values for FF1) or over [`MAX_TOKENIZED_KEY`].
    KeyNotTokenizable { len: usize },
    /// The header says the record key is a token, but the record has no
    /// [`SEALED_KEY_NAME`] header (stripped on the way).
    SealedKeyMissing,
    /// The record has a [`SEALED_KEY_NAME`] header but its header does not
    /// say its key is a token (added, or the flag was stripped), or a
    /// tokenized record has a null key.
    SealedKeyUnexpected,
    /// The record has more than one [`SEALED_KEY_NAME`] header.
    SealedKeyDuplicate,
    /// An authenticated sealed key does not have its token's length: its
    /// producer sealed it wrong.
    SealedKeyLength,
}

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FormatError::HeaderLength { actual } => write!(
                f,
                "e2ee record header has {actual} bytes, expected exactly {HEADER_LEN}"
            ),
            FormatError::UnsupportedVersion(v) => write!(
                f,
                "e2ee record header has format version {v}, this build understands only version {VERSION}"
            ),
            FormatError::ReservedFlags(flags) => write!(
                f,
                "e2ee record header sets reserved flag bits (flags byte {flags:#04x}): \
                 written by a newer kafka-e2ee, or corrupt; bit 2 must be zero \
                 and bits 4-5 must not both be set"
            ),
            FormatError::KeyNullWithoutKeyBound => f.write_str(
                "e2ee record header sets KEY_NULL without KEY_BOUND",
            ),
            FormatError::TopicTooLong { len } => write!(
                f,
                "topic name has {len} bytes, at most {} are supported",
                u16::MAX
            ),
            FormatError::KeyTooLong { len } => write!(
                f,
                "record key has {len} bytes, at most {} are supported",
                u32::MAX
            ),
            FormatError::ValueTooLong { len } => write!(
                f,
                "record value has {len} bytes, more than the record cipher can encrypt under one nonce"
            ),
            FormatError::KeyBindingMismatch { sealed, opened } => write!(
                f,
                "record key binding mismatch: the record was sealed with the record key {sealed}, \
                 but is being opened with the record key {opened}"
            ),
            FormatError::Authentication => f.write_str(
                "record failed authentication: it was tampered with, moved to another topic, \
                 or sealed under another key",
            ),
            FormatError::Decompression => f.write_str(
                "record authenticated but did not decompress to its own length: \
                 its producer sealed a malformed compressed value",
            ),
            FormatError::SealedHeadersMissing => f.write_str(
                "record failed authentication: its e2ee header says its application headers \
                 are sealed, but it has no e2ee.h header (stripped on the way)",
            ),
            FormatError::SealedHeadersUnexpected => f.write_str(
                "record failed authentication: it has an e2ee.h header but its e2ee header \
                 does not say its headers are sealed (added, or the flag was stripped)",
            ),
            FormatError::SealedHeadersDuplicate => f.write_str(
                "record failed authentication: it has more than one e2ee.h header \
                 (a sealed record has at most one)",
            ),
            FormatError::HeaderList => f.write_str(
                "record headers could not be sealed or were sealed malformed \
                 (a name or value over 4 GiB, or a name that is not UTF-8)",
            ),
            FormatError::ClearHeadersMismatch => f.write_str(
                "record failed authentication: the headers it carries in the clear \
                 (e2ee.headers.clear) are not the ones its producer sealed (changed, removed, \
                 added or reordered on the way)",
            ),
            FormatError::KeyNotTokenizable { len } => write!(
                f,
                "record key has {len} bytes: with e2ee.keys=tokenize a key must be empty or have \
                 {MIN_TOKENIZED_KEY} to {MAX_TOKENIZED_KEY} bytes (keys of 1 or 2 bytes have too \
                 few values to hide); send it with e2ee.keys=clear, or use longer keys"
            ),
            FormatError::SealedKeyMissing => f.write_str(
                "record failed authentication: its e2ee header says its key is a token, \
                 but it has no e2ee.k header (stripped on the way)",
            ),
            FormatError::SealedKeyUnexpected => f.write_str(
                "record failed authentication: it has an e2ee.k header but its e2ee header \
                 does not say its key is a token (added, or the flag was stripped), or its key is null",
            ),
            FormatError::SealedKeyDuplicate => f.write_str(
                "record failed authentication: it has more than one e2ee.k header",
            ),
            FormatError::SealedKeyLength => f.write_str(
                "record's sealed key does not have its token's length: its producer sealed it wrong",
            ),
        }
    }
}

impl std::error::Error for FormatError {}

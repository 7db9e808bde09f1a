//! Record format v1: the one record header that carries everything but the
//! length-preserving ciphertext. Specified byte by byte in docs/FORMAT.md.
//!
//! The value is encrypted in place with ChaCha20-Poly1305 and a detached tag,
//! so the ciphertext has exactly the plaintext's length (librdkafka's queue
//! accounting forbids changing it). Version, flags, key id, counter and tag
//! travel in one 34-byte record header named [`HEADER_NAME`].

use core::fmt;

mod aead;
mod header;
mod secret;

pub use aead::{open_in_place, seal_in_place, KeyBinding};
pub use header::{RecordHeader, FLAG_KEY_BOUND, FLAG_KEY_NULL, FLAG_RESERVED, HEADER_LEN, VERSION};
pub use secret::{DataKey, EpochSecret, DATA_KEY_SALT};

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
    /// A reserved flag bit (bits 2-7) is set; `flags` is the whole flags byte.
    ReservedFlags(u8),
    /// KEY_NULL is set without KEY_BOUND.
    KeyNullWithoutKeyBound,
    /// The topic name is longer than the AAD's u16 length field allows.
    TopicTooLong { len: usize },
    /// The record key is longer than the AAD's u32 length field allows.
    KeyTooLong { len: usize },
    /// The value is longer than ChaCha20 can encrypt under one nonce (256 GiB).
    ValueTooLong { len: usize },
    /// The header says the record key was bound one way, the caller supplied
    /// it another way (for example the header says KEY_BOUND but the hook
    /// cannot see the record key).
    KeyBindingMismatch {
        sealed: BindingKind,
        opened: BindingKind,
    },
    /// The authentication tag did not verify. The value is left unchanged.
    Authentication,
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
                "e2ee record header sets reserved flag bits (flags byte {flags:#04x}); bits 2-7 must be zero"
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
                "record value has {len} bytes, more than ChaCha20-Poly1305 can encrypt under one nonce"
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
        }
    }
}

impl std::error::Error for FormatError {}

//! One error type for everything the engine reports to a host.

use core::fmt;

use crate::format::{FormatError, KeyId};
use crate::trust::TrustError;

/// Why a key a record needs cannot be had (yet).
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyUnavailable {
    /// Asked for; no answer yet. The host may wait (bounded) and retry.
    Pending,
    /// The key's retention has passed: it was deleted everywhere (crypto-shredded).
    Expired,
    /// The producer refused: this credential may not read the topic.
    Refused,
    /// The producer does not know this epoch.
    Unknown,
}

/// A control message was rejected. Each kind is counted in the metrics; none
/// of them carries peer bytes, so they are safe to log.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// Not a control message of a version this build understands.
    Malformed,
    /// A Noise handshake or transport message failed to authenticate.
    Decrypt,
    /// A message seen before (replayed or duplicated by the network).
    Replay,
    /// The peer's credential failed verification against the trust anchor.
    Untrusted(TrustError),
    /// The peer sent something its credential does not allow.
    Unauthorized,
    /// The message belongs to no known session or handshake.
    UnknownSession,
    /// A Hello arrived while this instance was answering as many handshakes
    /// as it allows per second; it was dropped (the peer retries).
    Busy,
    /// A classical handshake was refused: this instance requires hybrid
    /// (`e2ee.kex.hybrid=require`), or the initiator said it can do hybrid
    /// (only a broker dropping its hybrid Hellos makes it call classically).
    ClassicalRefused,
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::Malformed => f.write_str("not a well-formed kafka-e2ee v1 control message"),
            ControlError::Decrypt => f.write_str("a Noise message failed to authenticate (tampered or misdirected)"),
            ControlError::Replay => f.write_str("a message seen before (network duplicate or replay)"),
            ControlError::Untrusted(e) => write!(f, "the peer's credential was rejected: {e}"),
            ControlError::Unauthorized => f.write_str("the peer's credential does not match the key it proved, or does not allow what it sent"),
            ControlError::UnknownSession => f.write_str("no such session or handshake (expired, duplicate, or forged)"),
            ControlError::Busy => f.write_str("too many handshakes this second; a Hello was dropped (the peer retries)"),
            ControlError::ClassicalRefused => f.write_str("a classical (X25519-only) handshake was refused: hybrid is required here, or the initiator can do hybrid"),
        }
    }
}

/// Everything that can go wrong between a host and the engine.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// A record header could not be decoded, or the record failed to open.
    Format(FormatError),
    /// A credential or trust file was rejected.
    Trust(TrustError),
    /// A control message was rejected.
    Control(ControlError),
    /// A record on a protected topic has no encryption header: plaintext
    /// injected by someone who does not hold a key.
    MissingHeader { topic: String },
    /// The key this record needs is not held.
    KeyUnavailable {
        key_id: KeyId,
        reason: KeyUnavailable,
    },
    /// This participant's credential does not allow the operation on the topic.
    NotAuthorized {
        topic: String,
        operation: &'static str,
    },
    /// No fresh epoch key is ready to seal with (the record-count limit was
    /// reached faster than the host ticks, or the state directory cannot be
    /// written). The record was not sealed.
    NoSealingKey,
    /// `e2ee.keys=tokenize`: no token secret for the topic yet (docs/PROTOCOL.md
    /// 5e). Transient: it arrives from a party that holds it, or is founded
    /// once the keys topic was read; the host waits and retries.
    TokenPending { topic: String },
    /// The host's state storage failed or holds unreadable state.
    Storage(String),
    /// An engine setting is invalid.
    Config(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Format(e) => write!(f, "record rejected: {e}"),
            Error::Trust(e) => write!(f, "{e}"),
            Error::Control(e) => write!(f, "control message rejected: {e}"),
            Error::MissingHeader { topic } => write!(
                f,
                "record on protected topic '{topic}' has no e2ee header: plaintext was \
                 written by a client without kafka-e2ee, or the header was stripped"
            ),
            Error::KeyUnavailable { key_id, reason } => match reason {
                KeyUnavailable::Pending => write!(
                    f,
                    "no key for producer instance {} epoch {} has arrived: no envelope \
                     on the keys topic was sealed to this consumer (it had not run with its \
                     e2ee.state.dir before the record was written, or its state directory \
                     was lost) and neither the producer nor another holder answered. To read \
                     it: run a client of the topic that holds the key (a long-running \
                     consumer on a state directory keeps every key it received), restore this consumer's e2ee.state.dir, or restart the producer \
                     on its e2ee.state.dir",
                    key_id.producer, key_id.epoch
                ),
                KeyUnavailable::Expired => write!(
                    f,
                    "the key {key_id} was deleted after its retention (e2ee.key.retention.ms): \
                     this record can no longer be decrypted by anyone"
                ),
                KeyUnavailable::Refused => write!(
                    f,
                    "the producer refused the key {key_id}: this credential may not consume \
                     the topic, or it is expired or revoked"
                ),
                KeyUnavailable::Unknown => {
                    write!(f, "the producer does not know the key {key_id}")
                }
            },
            Error::NotAuthorized { topic, operation } => write!(
                f,
                "this credential may not {operation} topic '{topic}': issue a credential \
                 that lists it (kafka-e2ee credential issue --{operation} ...)"
            ),
            Error::TokenPending { topic } => write!(
                f,
                "no token secret for topic {topic} yet (e2ee.keys=tokenize): it comes from a \
                 running producer, consumer or keeper of the topic that holds it, or is made here \
                 once the keys topic was read and nobody has one; the record was not sent"
            ),
            Error::NoSealingKey => write!(
                f,
                "no fresh epoch key is ready; the record was not sent (check that the \
                 state directory is writable)"
            ),
            Error::Storage(m) => write!(f, "state storage: {m}"),
            Error::Config(m) => write!(f, "configuration: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<FormatError> for Error {
    fn from(e: FormatError) -> Self {
        Error::Format(e)
    }
}

impl From<TrustError> for Error {
    fn from(e: TrustError) -> Self {
        Error::Trust(e)
    }
}

impl From<ControlError> for Error {
    fn from(e: ControlError) -> Self {
        Error::Control(e)
    }
}

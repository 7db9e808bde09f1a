//! Record format v1: the one record header that carries everything but the
//! length-preserving ciphertext. Specified byte by byte in docs/FORMAT.md.

use core::fmt;

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

/// Why a record header or record could not be decoded or opened.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    Malformed,
    Authentication,
}
impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for FormatError {}

// ---- STAND-IN (replaced by the format branch) ----
use chacha20poly1305::aead::AeadInPlace;
use chacha20poly1305::{ChaCha20Poly1305, KeyInit};
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const HEADER_NAME: &str = "e2ee";
pub const HEADER_LEN: usize = 34;

#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EpochSecret([u8; 32]);
impl EpochSecret {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        EpochSecret(b)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}
impl fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochSecret(..)")
    }
}
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct DataKey([u8; 32]);
impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(..)")
    }
}
impl DataKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        DataKey(b)
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn derive(secret: &EpochSecret, key_id: KeyId, topic: &str) -> DataKey {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"kafka-e2ee/v1/data-key"), &secret.0);
        let mut info = Vec::new();
        info.extend_from_slice(&key_id.producer.0);
        info.extend_from_slice(&key_id.epoch.to_be_bytes());
        info.extend_from_slice(topic.as_bytes());
        let mut out = [0u8; 32];
        let _ = hk.expand(&info, &mut out);
        DataKey(out)
    }
}
#[derive(Debug, Clone, Copy)]
pub enum KeyBinding<'a> {
    Unbound,
    Null,
    Bytes(&'a [u8]),
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub version: u8,
    pub flags: u8,
    pub key_id: KeyId,
    pub counter: u32,
    pub tag: [u8; 16],
}
impl RecordHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = self.version;
        b[1] = self.flags;
        b[2..10].copy_from_slice(&self.key_id.producer.0);
        b[10..14].copy_from_slice(&self.key_id.epoch.to_be_bytes());
        b[14..18].copy_from_slice(&self.counter.to_be_bytes());
        b[18..34].copy_from_slice(&self.tag);
        b
    }
    pub fn decode(bytes: &[u8]) -> Result<RecordHeader, FormatError> {
        if bytes.len() != HEADER_LEN || bytes[0] != 1 {
            return Err(FormatError::Malformed);
        }
        Ok(RecordHeader {
            version: 1,
            flags: bytes[1],
            key_id: KeyId {
                producer: InstanceId(bytes[2..10].try_into().unwrap()),
                epoch: u32::from_be_bytes(bytes[10..14].try_into().unwrap()),
            },
            counter: u32::from_be_bytes(bytes[14..18].try_into().unwrap()),
            tag: bytes[18..34].try_into().unwrap(),
        })
    }
}
fn aad(h: &RecordHeader, topic: &str, binding: KeyBinding<'_>) -> Vec<u8> {
    let mut a = b"kafka-e2ee/v1".to_vec();
    a.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    a.extend_from_slice(topic.as_bytes());
    a.extend_from_slice(&h.encode()[..18]);
    if let KeyBinding::Bytes(k) = binding {
        a.extend_from_slice(&(k.len() as u32).to_be_bytes());
        a.extend_from_slice(k);
    }
    a
}
fn nonce(h: &RecordHeader) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[4..8].copy_from_slice(&h.key_id.epoch.to_be_bytes());
    n[8..12].copy_from_slice(&h.counter.to_be_bytes());
    n
}
fn flags(b: KeyBinding<'_>) -> u8 {
    match b {
        KeyBinding::Unbound => 0,
        KeyBinding::Null => 3,
        KeyBinding::Bytes(_) => 1,
    }
}
pub fn seal_in_place(
    key: &DataKey,
    key_id: KeyId,
    counter: u32,
    topic: &str,
    binding: KeyBinding<'_>,
    value: &mut [u8],
) -> Result<RecordHeader, FormatError> {
    let mut h = RecordHeader { version: 1, flags: flags(binding), key_id, counter, tag: [0; 16] };
    let c = ChaCha20Poly1305::new((&key.0).into());
    let tag = c
        .encrypt_in_place_detached((&nonce(&h)).into(), &aad(&h, topic, binding), value)
        .map_err(|_| FormatError::Malformed)?;
    h.tag.copy_from_slice(&tag);
    Ok(h)
}
pub fn open_in_place(
    key: &DataKey,
    header: &RecordHeader,
    topic: &str,
    binding: KeyBinding<'_>,
    value: &mut [u8],
) -> Result<(), FormatError> {
    if header.flags != flags(binding) {
        return Err(FormatError::Authentication);
    }
    let c = ChaCha20Poly1305::new((&key.0).into());
    c.decrypt_in_place_detached(
        (&nonce(header)).into(),
        &aad(header, topic, binding),
        value,
        (&header.tag).into(),
    )
    .map_err(|_| FormatError::Authentication)
}

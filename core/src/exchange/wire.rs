//! Control messages on the wire: a plaintext envelope (who to whom, which
//! session) around Noise handshake messages or Noise transport ciphertext,
//! and the inner messages that only travel encrypted. Strict codec: every
//! length is checked, trailing bytes are an error, nothing panics.

use zeroize::Zeroizing;

use crate::error::ControlError;
use crate::format::{DataKey, InstanceId, KeyId};

pub(crate) const MAGIC: &[u8; 4] = b"KE2X";
pub(crate) const VERSION: u8 = 1;
/// The all-zero instance id addresses every instance.
pub const BROADCAST: InstanceId = InstanceId([0; 8]);
/// Topics are at most 249 bytes in Kafka; anything longer is malformed.
const MAX_TOPIC: usize = 249;
/// The shortest inner message: tag, key id, topic length, one topic byte.
const MIN_INNER_LEN: usize = 1 + 12 + 2 + 1;
/// Magic, version, kind, from, to: what every envelope starts with.
pub(crate) const ROUTE_LEN: usize = 4 + 1 + 1 + 8 + 8;

pub type SessionId = [u8; 8];

/// The plaintext envelope every control message has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub from: InstanceId,
    pub to: InstanceId,
    pub body: Body,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// Noise XX message 1 (initiator ephemeral).
    Hello { session: SessionId, noise: Vec<u8> },
    /// Noise XX message 2 (responder ephemeral, static, credential).
    HelloReply { session: SessionId, noise: Vec<u8> },
    /// Noise XX message 3 (initiator static, credential, first inner batch).
    HelloFinish { session: SessionId, noise: Vec<u8> },
    /// A Noise transport message with its explicit nonce.
    Sealed {
        session: SessionId,
        nonce: u64,
        noise: Vec<u8>,
    },
    /// Hybrid Hello (issue 17): message 1 of `Noise_XXpsk3`, whose payload
    /// is the initiator's ephemeral ML-KEM-768 encapsulation key. Engines
    /// before issue 17 reject the kind as unknown.
    HybridHello { session: SessionId, noise: Vec<u8> },
    /// Its answer, message 2 of `Noise_XXpsk3`: payload the ML-KEM-768
    /// ciphertext to that key, then the responder's credential. Message 3
    /// and transport travel as in a classical session.
    HybridReply { session: SessionId, noise: Vec<u8> },
    /// A hybrid responder's answer to a classical Hello that says its
    /// initiator can do hybrid (`hybrid::CLASSICAL_BY_FALLBACK`): "call me
    /// hybrid". Unauthenticated, and all it can do is make the initiator
    /// send a hybrid Hello at once rather than after a timeout: a forged one
    /// steers towards hybrid, never away from it.
    HybridOnly { session: SessionId },
    /// Broadcast: "whoever holds this key, please tell me". Carries no
    /// secret: the broker already sees topics and key ids in record headers.
    Want { key_id: KeyId, topic: String },
    /// A holder's answer to a want. The requester then opens a session to
    /// the holder itself, so a forged want costs holders one small message,
    /// never a handshake.
    Have { key_id: KeyId, topic: String },
}

/// The kind byte of a Have, which an instance reads in messages addressed
/// to others (see `Exchange::handle_control`).
pub const KIND_HAVE: u8 = 6;
/// Kinds 7 and 8 are the keys topic's (exchange/mailbox.rs).
pub const KIND_HYBRID_HELLO: u8 = 9;
pub const KIND_HYBRID_REPLY: u8 = 10;
pub const KIND_HYBRID_ONLY: u8 = 11;

impl Body {
    fn kind(&self) -> u8 {
        match self {
            Body::Hello { .. } => 1,
            Body::HelloReply { .. } => 2,
            Body::HelloFinish { .. } => 3,
            Body::Sealed { .. } => 4,
            Body::Want { .. } => 5,
            Body::Have { .. } => KIND_HAVE,
            Body::HybridHello { .. } => KIND_HYBRID_HELLO,
            Body::HybridReply { .. } => KIND_HYBRID_REPLY,
            Body::HybridOnly { .. } => KIND_HYBRID_ONLY,
        }
    }
}

/// Messages that only ever travel inside a Noise session.
#[derive(Debug, Clone)]
pub enum Inner {
    KeyRequest {
        key_id: KeyId,
        topic: String,
    },
    KeyDelivery(Delivery),
    KeyUnavailable {
        key_id: KeyId,
        topic: String,
        reason: Refusal,
    },
    /// Key exchange v2: "I own the instance id this session names": the
    /// salt that derives it from the sender's signing key. A responder
    /// sends it first thing, so an instance cannot be impersonated (nor its
    /// answers, refusals included, forged) by another credential.
    InstanceProof {
        salt: super::statement::Salt,
    },
}

/// One topic key handed to an authorized peer.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub key_id: KeyId,
    pub topic: String,
    pub key: DataKey,
    pub epoch_started_ms: u64,
    /// How much longer the receiver may keep the key: the time left until
    /// the sender deletes it (epoch end + retention). A duration, not an
    /// instant, so that each holder counts it down on its own clock and a
    /// skewed clock neither drops a key at once nor keeps it too long.
    pub retain_ms: u64,
    /// The producer's signed statement (key exchange v2): travels with the
    /// key wherever it goes. `None` only from a version 1 producer itself.
    pub statement: Option<Box<super::statement::Statement>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    NotAuthorized = 1,
    Expired = 2,
    Unknown = 3,
}

#[derive(Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], ControlError> {
        if self.buf.len() < n {
            return Err(ControlError::Malformed);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], ControlError> {
        self.take(N)?
            .try_into()
            .map_err(|_| ControlError::Malformed)
    }
    pub fn u8(&mut self) -> Result<u8, ControlError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, ControlError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, ControlError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, ControlError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub fn rest(&mut self) -> &'a [u8] {
        core::mem::take(&mut self.buf)
    }
    pub fn finish(&self) -> Result<(), ControlError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(ControlError::Malformed)
        }
    }
    fn key_id(&mut self) -> Result<KeyId, ControlError> {
        Ok(KeyId {
            producer: InstanceId(self.array()?),
            epoch: self.u32()?,
        })
    }
    pub(crate) fn topic(&mut self) -> Result<String, ControlError> {
        let len = usize::from(self.u16()?);
        if len == 0 || len > MAX_TOPIC {
            return Err(ControlError::Malformed);
        }
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| ControlError::Malformed)
    }
}

fn put_key_id(out: &mut Vec<u8>, key_id: &KeyId) {
    out.extend_from_slice(&key_id.producer.0);
    out.extend_from_slice(&key_id.epoch.to_be_bytes());
}

pub(crate) fn put_topic(out: &mut Vec<u8>, topic: &str) {
    // Topics are validated on entry (<= MAX_TOPIC), so the length fits.
    let len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
}

/// The record key of a keys-topic message (see `ControlMessage::record_key`):
/// its first bytes up to and including its id, so that compaction keeps the
/// newest prekey of each recipient and every envelope.
pub fn keys_record_key(payload: &[u8]) -> Vec<u8> {
    super::mailbox::record_key(payload)
}

pub fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && topic.len() <= MAX_TOPIC
}

impl Envelope {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.body.kind());
        out.extend_from_slice(&self.from.0);
        out.extend_from_slice(&self.to.0);
        match &self.body {
            Body::Hello { session, noise }
            | Body::HelloReply { session, noise }
            | Body::HelloFinish { session, noise }
            | Body::HybridHello { session, noise }
            | Body::HybridReply { session, noise } => {
                out.extend_from_slice(session);
                out.extend_from_slice(noise);
            }
            Body::Sealed {
                session,
                nonce,
                noise,
            } => {
                out.extend_from_slice(session);
                out.extend_from_slice(&nonce.to_be_bytes());
                out.extend_from_slice(noise);
            }
            Body::HybridOnly { session } => out.extend_from_slice(session),
            Body::Want { key_id, topic } | Body::Have { key_id, topic } => {
                put_key_id(&mut out, key_id);
                put_topic(&mut out, topic);
            }
        }
        out
    }

    /// Sender and addressee, read without decoding (or copying) the body:
    /// every instance reads the whole control topic, and most messages are
    /// for someone else.
    pub fn route(bytes: &[u8]) -> Result<(InstanceId, InstanceId), ControlError> {
        let mut r = Reader::new(bytes.get(..ROUTE_LEN).ok_or(ControlError::Malformed)?);
        let (_, from, to) = Self::read_route(&mut r)?;
        Ok((from, to))
    }

    pub(crate) fn read_route(
        r: &mut Reader<'_>,
    ) -> Result<(u8, InstanceId, InstanceId), ControlError> {
        if r.take(4)? != MAGIC || r.u8()? != VERSION {
            return Err(ControlError::Malformed);
        }
        let kind = r.u8()?;
        let from = InstanceId(r.array()?);
        let to = InstanceId(r.array()?);
        if from == BROADCAST {
            return Err(ControlError::Malformed);
        }
        Ok((kind, from, to))
    }

    pub fn decode(bytes: &[u8]) -> Result<Envelope, ControlError> {
        let mut r = Reader::new(bytes);
        let (kind, from, to) = Self::read_route(&mut r)?;
        let body = match kind {
            1..=3 => {
                let session = r.array()?;
                let noise = r.rest().to_vec();
                if noise.is_empty() {
                    return Err(ControlError::Malformed);
                }
                match kind {
                    1 => Body::Hello { session, noise },
                    2 => Body::HelloReply { session, noise },
                    _ => Body::HelloFinish { session, noise },
                }
            }
            4 => {
                let session = r.array()?;
                let nonce = r.u64()?;
                let noise = r.rest().to_vec();
                Body::Sealed {
                    session,
                    nonce,
                    noise,
                }
            }
            KIND_HYBRID_HELLO | KIND_HYBRID_REPLY => {
                let session = r.array()?;
                let noise = r.rest().to_vec();
                // Message 1 carries an ephemeral key, the KEM key and a tag;
                // message 2 more (the ciphertext, a static key, a credential):
                // anything shorter is neither.
                let least = if kind == KIND_HYBRID_HELLO {
                    32 + super::hybrid::EK_LEN + 16
                } else {
                    32 + 48 + super::hybrid::CT_LEN + 16
                };
                if noise.len() < least {
                    return Err(ControlError::Malformed);
                }
                if kind == KIND_HYBRID_HELLO {
                    Body::HybridHello { session, noise }
                } else {
                    Body::HybridReply { session, noise }
                }
            }
            KIND_HYBRID_ONLY => {
                let session = r.array()?;
                r.finish()?;
                Body::HybridOnly { session }
            }
            5 | 6 => {
                let key_id = r.key_id()?;
                let topic = r.topic()?;
                r.finish()?;
                if kind == 5 {
                    Body::Want { key_id, topic }
                } else {
                    Body::Have { key_id, topic }
                }
            }
            _ => return Err(ControlError::Malformed),
        };
        Ok(Envelope { from, to, body })
    }
}

/// Inner messages travel in batches; the buffer holds keys, so it is
/// zeroized when dropped.
pub fn encode_batch(items: &[Inner]) -> Zeroizing<Vec<u8>> {
    let count = u8::try_from(items.len()).unwrap_or(u8::MAX);
    // Sized exactly: a buffer that grows leaves copies of the keys it held
    // in the blocks it moved out of.
    let len = 1 + items
        .iter()
        .take(usize::from(count))
        .map(inner_len)
        .sum::<usize>();
    let mut out = Zeroizing::new(Vec::with_capacity(len));
    out.push(count);
    for item in items.iter().take(usize::from(count)) {
        match item {
            Inner::KeyRequest { key_id, topic } => {
                out.push(1);
                put_key_id(&mut out, key_id);
                put_topic(&mut out, topic);
            }
            Inner::KeyDelivery(d) => {
                // Kind 2 as in version 1; kind 4 adds the statement.
                out.push(if d.statement.is_some() { 4 } else { 2 });
                put_key_id(&mut out, &d.key_id);
                put_topic(&mut out, &d.topic);
                out.extend_from_slice(d.key.as_bytes());
                out.extend_from_slice(&d.epoch_started_ms.to_be_bytes());
                out.extend_from_slice(&d.retain_ms.to_be_bytes());
                if let Some(st) = &d.statement {
                    st.encode(&mut out);
                }
            }
            Inner::InstanceProof { salt } => {
                out.push(5);
                out.extend_from_slice(salt);
            }
            Inner::KeyUnavailable {
                key_id,
                topic,
                reason,
            } => {
                out.push(3);
                put_key_id(&mut out, key_id);
                put_topic(&mut out, topic);
                out.push(*reason as u8);
            }
        }
    }
    out
}

/// What `encode_batch` writes for `item`.
fn inner_len(item: &Inner) -> usize {
    const KEY_ID: usize = 12;
    let topic = |t: &str| 2 + t.len();
    match item {
        Inner::KeyRequest { topic: t, .. } => 1 + KEY_ID + topic(t),
        Inner::KeyDelivery(d) => {
            1 + KEY_ID
                + topic(&d.topic)
                + d.key.as_bytes().len()
                + 16
                + d.statement.as_ref().map_or(0, |st| st.encoded_len())
        }
        Inner::InstanceProof { salt } => 1 + salt.len(),
        Inner::KeyUnavailable { topic: t, .. } => 1 + KEY_ID + topic(t) + 1,
    }
}

pub fn decode_batch(bytes: &[u8]) -> Result<Vec<Inner>, ControlError> {
    let mut r = Reader::new(bytes);
    let count = r.u8()?;
    // The count is peer-controlled: reserve only what the bytes can hold, so
    // a one-byte batch cannot make us allocate room for 255 messages.
    let fits = r.remaining() / MIN_INNER_LEN;
    let mut items = Vec::with_capacity(usize::from(count).min(fits));
    for _ in 0..count {
        let item = match r.u8()? {
            1 => Inner::KeyRequest {
                key_id: r.key_id()?,
                topic: r.topic()?,
            },
            kind @ (2 | 4) => {
                let key_id = r.key_id()?;
                let topic = r.topic()?;
                let key = DataKey::from_bytes(r.array()?);
                let epoch_started_ms = r.u64()?;
                let retain_ms = r.u64()?;
                let statement = if kind == 4 {
                    Some(Box::new(super::statement::Statement::decode(&mut r)?))
                } else {
                    None
                };
                Inner::KeyDelivery(Delivery {
                    key_id,
                    topic,
                    key,
                    epoch_started_ms,
                    retain_ms,
                    statement,
                })
            }
            5 => Inner::InstanceProof { salt: r.array()? },
            3 => {
                let key_id = r.key_id()?;
                let topic = r.topic()?;
                let reason = match r.u8()? {
                    1 => Refusal::NotAuthorized,
                    2 => Refusal::Expired,
                    3 => Refusal::Unknown,
                    _ => return Err(ControlError::Malformed),
                };
                Inner::KeyUnavailable {
                    key_id,
                    topic,
                    reason,
                }
            }
            _ => return Err(ControlError::Malformed),
        };
        items.push(item);
    }
    r.finish()?;
    Ok(items)
}

/// The payload of Noise message 3: the initiator's credential, then the
/// first batch of inner messages (so a request needs no extra round trip).
pub fn encode_finish_payload(credential: &[u8], batch: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(2 + credential.len() + batch.len()));
    let len = u16::try_from(credential.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(credential);
    out.extend_from_slice(batch);
    out
}

pub fn decode_finish_payload(bytes: &[u8]) -> Result<(&[u8], &[u8]), ControlError> {
    let mut r = Reader::new(bytes);
    let len = usize::from(r.u16()?);
    let credential = r.take(len)?;
    Ok((credential, r.rest()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exchange::statement::Statement;
    use crate::format::InstanceId;

    /// Buffers that hold keys are sized exactly: one that grows leaves
    /// copies of the keys in the blocks it moved out of.
    #[test]
    fn a_batch_is_encoded_into_a_buffer_of_its_exact_size() {
        let key_id = KeyId {
            producer: InstanceId([1; 8]),
            epoch: 2,
        };
        let topic = "t".repeat(249);
        let delivery = |statement: bool| {
            Inner::KeyDelivery(Delivery {
                key_id,
                topic: topic.clone(),
                key: crate::format::DataKey::from_bytes([3; 32]),
                epoch_started_ms: 4,
                retain_ms: 5,
                statement: statement.then(|| {
                    Box::new(Statement {
                        credential: vec![6; 300],
                        salt: [7; 16],
                        epoch_started_ms: 4,
                        delete_by_ms: 8,
                        signature: [9; 64],
                    })
                }),
            })
        };
        let items = [
            delivery(true),
            delivery(false),
            Inner::KeyRequest {
                key_id,
                topic: topic.clone(),
            },
            Inner::KeyUnavailable {
                key_id,
                topic: topic.clone(),
                reason: Refusal::Expired,
            },
            Inner::InstanceProof { salt: [1; 16] },
        ];
        for n in 0..=items.len() {
            let batch = encode_batch(&items[..n]);
            assert_eq!(batch.len(), batch.capacity(), "{n} items");
            assert_eq!(decode_batch(&batch).unwrap().len(), n);
        }
    }
}

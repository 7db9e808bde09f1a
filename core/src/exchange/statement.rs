//! Only producers mint keys (key exchange v2). A producer instance's id is
//! bound to its credential's signing key, and every topic key it hands out
//! travels with a statement it signed: this instance, this epoch, this
//! topic, this key (a commitment), this lifetime. Holders and keepers relay
//! the statement with the key; a consumer checks it, and the producer's right
//! to produce the topic, before it uses or stores the key. So an insider
//! that may only consume cannot mint a key, another producer cannot speak
//! for an instance it does not own, and one key id opens under one key only
//! (the record AEADs are not key-committing; the signed commitment is).

use sha2::{Digest, Sha256};

use crate::error::ControlError;
use crate::format::{DataKey, InstanceId, KeyId};
use crate::trust::{Credential, Identity, TrustAnchor};

use super::wire::{put_topic, Reader};

pub const STATEMENT_CONTEXT: &[u8] = b"kafka-e2ee/v2/key-statement";
const INSTANCE_INFO: &[u8] = b"kafka-e2ee/v2/instance";
const COMMITMENT_INFO: &[u8] = b"kafka-e2ee/v2/key-commitment";

/// The random part of an instance id's derivation.
pub type Salt = [u8; 16];

/// An instance id bound to a signing key: the first 8 bytes of
/// SHA-256(`kafka-e2ee/v2/instance` ‖ signing key ‖ salt). Speaking as an
/// instance needs the signing key it was derived from, or a second preimage
/// of 64 bits (record format v1 has 8-byte ids) under a credential the
/// deployment trusts to produce the topic.
pub fn instance_id(signing_key: &[u8; 32], salt: &Salt) -> InstanceId {
    bound_id(INSTANCE_INFO, signing_key, salt)
}

/// The first 8 bytes of SHA-256(`info` ‖ signing key ‖ salt).
fn bound_id(info: &[u8], signing_key: &[u8; 32], salt: &Salt) -> InstanceId {
    let d = Sha256::new()
        .chain_update(info)
        .chain_update(signing_key)
        .chain_update(salt)
        .finalize();
    let mut id = [0u8; 8];
    id.copy_from_slice(d.get(..8).unwrap_or(&[0; 8]));
    InstanceId(id)
}

const MAILBOX_INFO: &[u8] = b"kafka-e2ee/v2/mailbox";

/// A mailbox id bound to a signing key, as instance ids are (another
/// domain, so neither can stand for the other).
pub fn mailbox_id(signing_key: &[u8; 32], salt: &Salt) -> InstanceId {
    bound_id(MAILBOX_INFO, signing_key, salt)
}

/// Whether `credential` owns `mailbox` through `salt`.
pub fn owns_mailbox(credential: &Credential, mailbox: InstanceId, salt: &Salt) -> bool {
    credential
        .signing_key()
        .is_some_and(|k| mailbox_id(&k, salt) == mailbox)
}

/// Whether `credential` owns `instance` through `salt`.
pub fn owns(credential: &Credential, instance: InstanceId, salt: &Salt) -> bool {
    credential
        .signing_key()
        .is_some_and(|k| instance_id(&k, salt) == instance)
}

fn commitment(key_id: &KeyId, topic: &str, key: &DataKey) -> [u8; 32] {
    let mut h = Sha256::new()
        .chain_update(COMMITMENT_INFO)
        .chain_update(key_id.producer.0)
        .chain_update(key_id.epoch.to_be_bytes());
    // Length-prefixed, so topic and key cannot shift into each other.
    h.update(u16::try_from(topic.len()).unwrap_or(u16::MAX).to_be_bytes());
    h.update(topic.as_bytes());
    h.update(key.as_bytes());
    h.finalize().into()
}

/// A producer's signed word on one topic key. Carries no secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Statement {
    /// The producer's credential, encoded (version 2: it has a signing key).
    pub credential: Vec<u8>,
    pub salt: Salt,
    pub epoch_started_ms: u64,
    /// When the producer deletes the key, on its clock (an upper bound while
    /// the epoch runs).
    pub delete_by_ms: u64,
    pub signature: [u8; 64],
}

impl core::fmt::Debug for Statement {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Statement")
            .field("epoch_started_ms", &self.epoch_started_ms)
            .field("delete_by_ms", &self.delete_by_ms)
            .finish_non_exhaustive()
    }
}

fn signed_message(
    key_id: &KeyId,
    topic: &str,
    commitment: &[u8; 32],
    epoch_started_ms: u64,
    delete_by_ms: u64,
    salt: &Salt,
) -> Vec<u8> {
    let mut m = Vec::with_capacity(96 + topic.len());
    m.extend_from_slice(&key_id.producer.0);
    m.extend_from_slice(&key_id.epoch.to_be_bytes());
    put_topic(&mut m, topic);
    m.extend_from_slice(commitment);
    m.extend_from_slice(&epoch_started_ms.to_be_bytes());
    m.extend_from_slice(&delete_by_ms.to_be_bytes());
    m.extend_from_slice(salt);
    m
}

impl Statement {
    #[allow(clippy::too_many_arguments)]
    pub fn sign(
        identity: &Identity,
        salt: Salt,
        key_id: &KeyId,
        topic: &str,
        key: &DataKey,
        epoch_started_ms: u64,
        delete_by_ms: u64,
    ) -> Statement {
        let c = commitment(key_id, topic, key);
        let msg = signed_message(key_id, topic, &c, epoch_started_ms, delete_by_ms, &salt);
        Statement {
            credential: identity.credential().encode(),
            salt,
            epoch_started_ms,
            delete_by_ms,
            signature: identity.sign_statement(STATEMENT_CONTEXT, &msg),
        }
    }

    /// Checks everything a consumer must before it uses or stores `key` as
    /// the key of (`key_id`, `topic`): the producer's credential verifies
    /// now, may produce the topic, owns the instance, signed this statement,
    /// and committed to exactly this key. Returns the credential.
    pub fn verify(
        &self,
        trust: &TrustAnchor,
        now_ms: u64,
        skew_ms: u64,
        key_id: &KeyId,
        topic: &str,
        key: &DataKey,
    ) -> Result<Credential, ControlError> {
        let cred = Credential::decode(&self.credential).map_err(ControlError::Untrusted)?;
        trust
            .verify(&cred, now_ms, skew_ms)
            .map_err(ControlError::Untrusted)?;
        if !cred.may_produce(topic) || !owns(&cred, key_id.producer, &self.salt) {
            return Err(ControlError::Unauthorized);
        }
        let c = commitment(key_id, topic, key);
        let msg = signed_message(
            key_id,
            topic,
            &c,
            self.epoch_started_ms,
            self.delete_by_ms,
            &self.salt,
        );
        if !cred.verify_statement(STATEMENT_CONTEXT, &msg, &self.signature) {
            return Err(ControlError::Unauthorized);
        }
        Ok(cred)
    }

    /// What [`Statement::encode`] appends, in bytes (buffers holding keys
    /// are sized exactly, so that they never grow and leave a copy behind).
    pub fn encoded_len(&self) -> usize {
        2 + self.credential.len() + self.salt.len() + 8 + 8 + self.signature.len()
    }

    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            &u16::try_from(self.credential.len())
                .unwrap_or(0)
                .to_be_bytes(),
        );
        out.extend_from_slice(&self.credential);
        out.extend_from_slice(&self.salt);
        out.extend_from_slice(&self.epoch_started_ms.to_be_bytes());
        out.extend_from_slice(&self.delete_by_ms.to_be_bytes());
        out.extend_from_slice(&self.signature);
    }

    pub fn decode(r: &mut Reader<'_>) -> Result<Statement, ControlError> {
        let len = usize::from(r.u16()?);
        Ok(Statement {
            credential: r.take(len)?.to_vec(),
            salt: r.array()?,
            epoch_started_ms: r.u64()?,
            delete_by_ms: r.u64()?,
            signature: r.array()?,
        })
    }
}

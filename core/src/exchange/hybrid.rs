//! Hybrid post-quantum key exchange (issue 17): ML-KEM-768 (FIPS 203,
//! RustCrypto `ml-kem`) next to the X25519 of every Noise handshake. The
//! KEM's shared secret enters the handshake as its pre-shared key (Noise
//! `psk` modifier), so every key derived after it depends on both the
//! X25519 results and the ML-KEM secret: breaking one of them alone
//! reveals nothing (docs/PROTOCOL.md, section 4a).
//!
//! Nothing here implements the KEM: this module only feeds it the engine's
//! randomness (so a seeded simulation stays reproducible) and checks sizes.

use hkdf::Hkdf;
use ml_kem::kem::{Decapsulate, KeyExport};
use ml_kem::{MlKem768, B32};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::ControlError;

/// The live session pattern with the KEM secret mixed in at the end of
/// message 3's tokens (`psk3`): message 1's payload is the initiator's
/// ephemeral ML-KEM key, message 2's payload starts with the responder's
/// ciphertext to it, and message 3's payload (the initiator's credential
/// and first requests) and every transport key depend on the secret. Both
/// KEM messages are in the handshake transcript. Topic keys travel only in
/// message 3 and after; message 2 carries the responder's credential, which
/// is public anyway (docs/PROTOCOL.md, "What the control and keys topics
/// reveal").
pub const NOISE_PARAMS_HYBRID: &str = "Noise_XXpsk3_25519_ChaChaPoly_SHA256";
/// Where the KEM secret goes in the pattern above.
pub const PSK_LOCATION: usize = 3;
/// ML-KEM-768 encapsulation key (FIPS 203, table 3).
pub const EK_LEN: usize = 1184;
/// ML-KEM-768 ciphertext.
pub const CT_LEN: usize = 1088;

/// The payload of a classical Hello from an engine that can do hybrid but
/// chose classical (its hybrid Hellos went unanswered, so it guesses the
/// peer runs an earlier version). It is in the handshake transcript, so the
/// broker cannot strip it, and a hybrid responder refuses such a Hello: two
/// hybrid-capable engines never agree on classical, whatever the broker
/// drops. Engines before issue 17 ignore message 1's payload.
pub const CLASSICAL_BY_FALLBACK: &[u8] = b"kafka-e2ee/hybrid-capable";

/// Whether and how an engine uses the hybrid exchange (`e2ee.kex.hybrid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HybridMode {
    /// Hybrid with every party that speaks it; classical with earlier
    /// versions (and with engines set to `Off`), never with a party that
    /// can do hybrid.
    #[default]
    Prefer,
    /// Hybrid only: classical Hellos are refused and never sent.
    Require,
    /// Classical only, exactly the wire behaviour of the version before
    /// issue 17 (hybrid Hellos are rejected as unknown messages).
    Off,
}

impl HybridMode {
    pub fn parse(s: &str) -> Option<HybridMode> {
        match s {
            "prefer" => Some(HybridMode::Prefer),
            "require" => Some(HybridMode::Require),
            "off" => Some(HybridMode::Off),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            HybridMode::Prefer => "prefer",
            HybridMode::Require => "require",
            HybridMode::Off => "off",
        }
    }
}

/// An ephemeral ML-KEM-768 decapsulation key, derived from a handshake's
/// seed so that the handshake can be rebuilt from that seed alone (see
/// `Handshake::seed`). Zeroized on drop (the crate's `zeroize` feature).
pub struct KemKey(ml_kem::DecapsulationKey<MlKem768>);

impl core::fmt::Debug for KemKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("KemKey(..)")
    }
}

impl KemKey {
    /// The key of a handshake seed: FIPS 203's 64-byte seed (d ‖ z) is
    /// HKDF-SHA256 of the seed, so it is independent of the X25519
    /// ephemeral snow draws from the same seed.
    pub fn from_handshake_seed(seed: &[u8; 64]) -> KemKey {
        let mut d_z = Zeroizing::new([0u8; 64]);
        // 64 bytes is far below HKDF-SHA256's limit; it cannot fail.
        let _ = Hkdf::<Sha256>::new(None, seed).expand(b"kafka-e2ee/v3/hello-kem", &mut *d_z);
        Self::from_seed(&d_z)
    }

    /// FIPS 203 `ML-KEM.KeyGen_internal(d, z)` from `d ‖ z`.
    pub fn from_seed(d_z: &[u8; 64]) -> KemKey {
        let seed = ml_kem::Seed::from(*d_z);
        KemKey(ml_kem::DecapsulationKey::<MlKem768>::from_seed(seed))
    }

    /// The encapsulation key, as sent.
    pub fn public(&self) -> Vec<u8> {
        self.0.encapsulation_key().to_bytes().to_vec()
    }

    /// The shared secret of a ciphertext. A ciphertext of the right length
    /// that was tampered with yields an unrelated secret (implicit
    /// rejection), so the handshake fails at its next authentication.
    pub fn decapsulate(&self, ct: &[u8]) -> Result<Zeroizing<[u8; 32]>, ControlError> {
        let ct =
            ml_kem::Ciphertext::<MlKem768>::try_from(ct).map_err(|_| ControlError::Malformed)?;
        let ss = self.0.decapsulate(&ct);
        let mut out = Zeroizing::new([0u8; 32]);
        out.copy_from_slice(ss.as_slice());
        Ok(out)
    }
}

/// Encapsulates to a peer's encapsulation key with 32 random bytes `m`
/// (FIPS 203 `ML-KEM.Encaps_internal`). The key is checked first (length
/// and the modulus check of FIPS 203, 7.2): a malformed key is refused.
pub fn encapsulate(
    ek: &[u8],
    m: &Zeroizing<[u8; 32]>,
) -> Result<(Vec<u8>, Zeroizing<[u8; 32]>), ControlError> {
    let key = ml_kem::kem::Key::<ml_kem::EncapsulationKey<MlKem768>>::try_from(ek)
        .map_err(|_| ControlError::Malformed)?;
    let ek =
        ml_kem::EncapsulationKey::<MlKem768>::new(&key).map_err(|_| ControlError::Malformed)?;
    let m = B32::from(**m);
    let (ct, ss) = ek.encapsulate_deterministic(&m);
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ss.as_slice());
    Ok((ct.to_vec(), out))
}

/// What an observer of the control topic can tell about one party's key
/// exchange (`kafka-e2ee doctor`): every handshake message names its
/// sender, and the kinds and message 1 of a classical Hello are plaintext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// Sent a hybrid Hello, reply or hint, or a classical Hello that says
    /// it can do hybrid.
    Hybrid,
    /// Sent a classical Hello that does not say so (a version before issue
    /// 17, or `e2ee.kex.hybrid=off`), or answered a Hello that said so
    /// (which a hybrid party refuses).
    ClassicalOnly,
}

/// Sorts the senders of `records` (control-topic values) by what they
/// speak. Advisory: anyone who may write the control topic can send under
/// any name, so a forged message can make a party look either way.
pub fn census<'a>(
    records: impl IntoIterator<Item = &'a [u8]>,
) -> std::collections::BTreeMap<crate::format::InstanceId, Speaks> {
    use super::wire::{Body, Envelope};
    use std::collections::{BTreeMap, BTreeSet};
    let mut out = BTreeMap::new();
    let mut fallback_hellos = BTreeSet::new();
    let mut replies = Vec::new();
    for bytes in records {
        let Ok(env) = Envelope::decode(bytes) else {
            continue;
        };
        match env.body {
            Body::HybridHello { .. } | Body::HybridReply { .. } | Body::HybridOnly { .. } => {
                out.insert(env.from, Speaks::Hybrid);
            }
            Body::Hello { session, noise } => {
                // Classical message 1: a 32-byte ephemeral key, then the
                // payload in the clear.
                if noise.get(32..) == Some(CLASSICAL_BY_FALLBACK) {
                    out.insert(env.from, Speaks::Hybrid);
                    fallback_hellos.insert((env.from, env.to, session));
                } else {
                    out.entry(env.from).or_insert(Speaks::ClassicalOnly);
                }
            }
            Body::HelloReply { session, .. } => replies.push((env.to, env.from, session)),
            _ => {}
        }
    }
    for (initiator, responder, session) in replies {
        if fallback_hellos.contains(&(initiator, responder, session)) {
            out.entry(responder).or_insert(Speaks::ClassicalOnly);
        }
    }
    out
}

//! Noise sessions between two engine instances. Handshakes use Noise XX
//! (mutual authentication, static keys sent encrypted, ephemeral keys give
//! forward secrecy). Transport uses snow's stateless mode: every message
//! carries its nonce, because Kafka may duplicate, delay and reorder, and a
//! replay window here rejects any nonce seen before.

use snow::params::{CipherChoice, DHChoice, HashChoice};
use snow::resolvers::{CryptoResolver, DefaultResolver};
use snow::types::{Cipher, Dh, Hash, Random};
use snow::{HandshakeState, StatelessTransportState};
use zeroize::Zeroizing;

use crate::error::ControlError;
use crate::format::InstanceId;
use crate::trust::Credential;

use super::wire::SessionId;

pub const NOISE_PARAMS: &str = "Noise_XX_25519_ChaChaPoly_SHA256";
/// Largest Noise message.
pub const MAX_NOISE: usize = 65535;

/// Feeds snow the random bytes the engine drew from its host-supplied RNG, so
/// that ephemeral keys come from the engine's randomness (and a seeded test
/// RNG makes a whole simulation reproducible).
struct DrawnRandom {
    bytes: Zeroizing<[u8; 64]>,
    used: usize,
}

impl Random for DrawnRandom {
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), snow::Error> {
        let end = self.used.checked_add(dest.len()).ok_or(snow::Error::Rng)?;
        let src = self.bytes.get(self.used..end).ok_or(snow::Error::Rng)?;
        dest.copy_from_slice(src);
        self.used = end;
        Ok(())
    }
}

struct Resolver {
    seed: Zeroizing<[u8; 64]>,
}

impl CryptoResolver for Resolver {
    fn resolve_rng(&self) -> Option<Box<dyn Random>> {
        Some(Box::new(DrawnRandom {
            bytes: self.seed.clone(),
            used: 0,
        }))
    }
    fn resolve_dh(&self, choice: &DHChoice) -> Option<Box<dyn Dh>> {
        DefaultResolver.resolve_dh(choice)
    }
    fn resolve_hash(&self, choice: &HashChoice) -> Option<Box<dyn Hash>> {
        DefaultResolver.resolve_hash(choice)
    }
    fn resolve_cipher(&self, choice: &CipherChoice) -> Option<Box<dyn Cipher>> {
        DefaultResolver.resolve_cipher(choice)
    }
}

/// The prologue binds both instance ids as the envelope names them, so a
/// handshake relayed to, or from, another instance fails.
fn prologue(initiator: InstanceId, responder: InstanceId) -> [u8; 29] {
    let mut p = [0u8; 29];
    p[..13].copy_from_slice(b"kafka-e2ee/v1");
    p[13..21].copy_from_slice(&initiator.0);
    p[21..29].copy_from_slice(&responder.0);
    p
}

/// A live session's handshake: classical XX, or hybrid XXpsk3 (the
/// ML-KEM-768 secret as pre-shared key, set before message 3: see
/// `hybrid.rs`). The prologue is the same for both; the pattern names
/// differ, and Noise hashes the name first, so a message of one never
/// passes for the other.
pub fn new_handshake(
    initiator: bool,
    hybrid: bool,
    local_private: &[u8; 32],
    initiator_id: InstanceId,
    responder_id: InstanceId,
    seed: Zeroizing<[u8; 64]>,
) -> Result<HandshakeState, ControlError> {
    let prologue = prologue(initiator_id, responder_id);
    build(
        if hybrid {
            super::hybrid::NOISE_PARAMS_HYBRID
        } else {
            NOISE_PARAMS
        },
        initiator,
        local_private,
        None,
        &prologue,
        seed,
    )
}

/// A one-way Noise handshake (the envelope pattern, `X`): the initiator
/// knows the responder's static key (a prekey) and sends its own static key
/// in the single message; the responder learns and checks it. With a KEM
/// secret, the hybrid envelope pattern (`Xpsk1`, issue 17).
pub fn one_way(
    initiator: bool,
    local_private: &[u8; 32],
    remote_public: Option<&[u8; 32]>,
    prologue: &[u8],
    seed: Zeroizing<[u8; 64]>,
    kem_secret: Option<&[u8; 32]>,
) -> Result<HandshakeState, ControlError> {
    use super::mailbox::{ENVELOPE_NOISE, ENVELOPE_NOISE_HYBRID, ENVELOPE_PSK_LOCATION};
    let pattern = match kem_secret {
        Some(_) => ENVELOPE_NOISE_HYBRID,
        None => ENVELOPE_NOISE,
    };
    let mut hs = build(
        pattern,
        initiator,
        local_private,
        remote_public,
        prologue,
        seed,
    )?;
    if let Some(psk) = kem_secret {
        hs.set_psk(ENVELOPE_PSK_LOCATION, psk)
            .map_err(|_| ControlError::Malformed)?;
    }
    Ok(hs)
}

/// One Noise handshake state on the engine's randomness (its ephemeral
/// private key is the seed's first 32 bytes): every pattern. Public so that
/// the published Noise test vectors can be run through it
/// (tests/hybrid_kem.rs).
pub fn build(
    pattern: &str,
    initiator: bool,
    local_private: &[u8; 32],
    remote_public: Option<&[u8; 32]>,
    prologue: &[u8],
    seed: Zeroizing<[u8; 64]>,
) -> Result<HandshakeState, ControlError> {
    let params = pattern.parse().map_err(|_| ControlError::Malformed)?;
    let mut builder = snow::Builder::with_resolver(params, Box::new(Resolver { seed }))
        .local_private_key(local_private)
        .and_then(|b| b.prologue(prologue))
        .map_err(|_| ControlError::Malformed)?;
    if let Some(remote) = remote_public {
        builder = builder
            .remote_public_key(remote)
            .map_err(|_| ControlError::Malformed)?;
    }
    let state = if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    };
    state.map_err(|_| ControlError::Malformed)
}

/// A handshake under way, on either side.
#[allow(missing_debug_implementations)] // holds key material
pub struct Handshake {
    pub peer: InstanceId,
    /// The id this instance was addressed as (its own, or a restored one).
    pub local: InstanceId,
    pub state: HandshakeState,
    pub started_ms: u64,
    /// The initiator's randomness for this handshake (its ephemeral key),
    /// kept so that the state before the reply can be rebuilt: a reply that
    /// decrypts but then fails authentication (anyone can answer a Hello
    /// with a Noise-valid message under their own static key) must not end
    /// the handshake. `None` on the responder's side.
    pub seed: Option<Zeroizing<[u8; 64]>>,
    /// Hybrid (XXpsk3 with ML-KEM-768) or classical XX.
    pub hybrid: bool,
    /// The peer showed it reads the control topic (a Have) while this
    /// Hello was pending: if it times out unanswered, the peer ignored it.
    pub peer_reads: bool,
}

/// Sliding replay window over received transport nonces.
#[derive(Debug, Default)]
pub struct ReplayWindow {
    highest: Option<u64>,
    /// Bit i set: nonce `highest - i` was seen.
    seen: u128,
}

impl ReplayWindow {
    /// Records `nonce`; `false` if it was seen before or is too old to tell.
    pub fn accept(&mut self, nonce: u64) -> bool {
        let Some(highest) = self.highest else {
            self.highest = Some(nonce);
            self.seen = 1;
            return true;
        };
        if nonce > highest {
            let shift = nonce - highest;
            self.seen = if shift >= 128 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.highest = Some(nonce);
            true
        } else {
            let age = highest - nonce;
            if age >= 128 {
                return false;
            }
            let bit = 1u128 << age;
            if self.seen & bit != 0 {
                return false;
            }
            self.seen |= bit;
            true
        }
    }
}

/// An established session.
#[allow(missing_debug_implementations)] // holds key material
pub struct Session {
    pub id: SessionId,
    pub peer: InstanceId,
    pub local: InstanceId,
    pub peer_credential: Credential,
    pub transport: StatelessTransportState,
    pub established_ms: u64,
    pub initiator: bool,
    /// The initiator learns that message 3 arrived when the first transport
    /// message comes back; until then the session may be one-sided.
    pub confirmed: bool,
    /// The peer proved it owns the instance id it speaks as (an
    /// `InstanceProof`), or its credential is version 1 and cannot.
    pub bound: bool,
    pub send_nonce: u64,
    pub replay: ReplayWindow,
    /// Its keys depend on an ML-KEM-768 secret as well as on X25519.
    pub hybrid: bool,
}

impl Session {
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<(u64, Vec<u8>), ControlError> {
        // A nonce is never used twice: a session that ran out fails (and is
        // replaced by a new handshake) rather than saturating.
        let nonce = self.send_nonce;
        self.send_nonce = nonce.checked_add(1).ok_or(ControlError::Malformed)?;
        let mut out = vec![0u8; plaintext.len().saturating_add(16)];
        let n = self
            .transport
            .write_message(nonce, plaintext, &mut out)
            .map_err(|_| ControlError::Malformed)?;
        out.truncate(n);
        Ok((nonce, out))
    }

    pub fn open(
        &mut self,
        nonce: u64,
        ciphertext: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ControlError> {
        let mut out = Zeroizing::new(vec![0u8; ciphertext.len()]);
        let n = self
            .transport
            .read_message(nonce, ciphertext, &mut out)
            .map_err(|_| ControlError::Decrypt)?;
        // Only authenticated nonces enter the window, so forged messages
        // cannot poison it.
        if !self.replay.accept(nonce) {
            return Err(ControlError::Replay);
        }
        out.truncate(n);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::ReplayWindow;

    #[test]
    fn replay_window_rejects_repeats_and_ancient_nonces() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(5));
        assert!(!w.accept(5));
        assert!(w.accept(3));
        assert!(!w.accept(3));
        assert!(w.accept(200));
        assert!(!w.accept(5), "older than the window");
        assert!(w.accept(199));
        assert!(!w.accept(200));
    }
}

use core::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use hkdf::Hkdf;
use rand_core::CryptoRngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::text::{decode_b64, decode_key32, TextFile};
use super::{Authority, Credential, TopicPattern, TrustError, SIGNING_KEY_INFO, STATE_KEY_INFO};

/// First line of a credential file.
pub(super) const CREDENTIAL_FILE_HEADER: &str = "kafka-e2ee-credential v1";
const FILE: &str = "credential file";

/// A participant: its static X25519 key pair and its credential. The private
/// key is zeroized on drop and never shown by `Debug`.
///
/// The participant's Ed25519 signing key is not stored: it is derived from
/// the X25519 private key when needed (see [`Identity::signing_public_key`]),
/// so a credential file holds one private key for both.
pub struct Identity {
    secret: StaticSecret,
    credential: Credential,
}

impl Identity {
    /// A new key pair with a credential issued by `authority` (see
    /// [`Authority::issue`] for what happens to out-of-range attributes).
    /// Meant for tests and simulations; deployments use the CLI.
    pub fn generate(
        name: &str,
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
        authority: &Authority,
        rng: &mut impl CryptoRngCore,
    ) -> Identity {
        let secret = StaticSecret::random_from_rng(rng);
        let public_key = PublicKey::from(&secret).to_bytes();
        let signing_key = derived_signing_public_key(&secret);
        let credential = authority.issue_v2(
            name,
            public_key,
            signing_key,
            produce,
            consume,
            not_before_ms,
            expires_ms,
        );
        Self { secret, credential }
    }

    /// A new key pair with a credential issued by `authority`; fails on a
    /// name or pattern list that [`Authority::try_issue`] rejects.
    pub fn try_generate(
        name: &str,
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
        authority: &Authority,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Identity, TrustError> {
        let secret = StaticSecret::random_from_rng(rng);
        let public_key = PublicKey::from(&secret).to_bytes();
        let signing_key = derived_signing_public_key(&secret);
        let credential = authority.try_issue_v2(
            name,
            public_key,
            signing_key,
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )?;
        Ok(Self { secret, credential })
    }

    /// A new key pair with an unsigned credential, for pinned trust (the
    /// trust file lists the credential itself); fails on a name or pattern
    /// list that [`Credential::new_unsigned`] rejects.
    pub fn try_generate_unsigned(
        name: &str,
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Identity, TrustError> {
        let secret = StaticSecret::random_from_rng(rng);
        let public_key = PublicKey::from(&secret).to_bytes();
        let signing_key = derived_signing_public_key(&secret);
        let credential = Credential::new_unsigned_v2(
            name,
            public_key,
            signing_key,
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )?;
        Ok(Self { secret, credential })
    }

    /// Pairs a private key with its credential; fails with
    /// [`TrustError::KeyMismatch`] if the credential is for another key, or
    /// (version 2) certifies a signing key other than the one derived from
    /// this private key. A version 1 credential (no signing key) is accepted.
    pub fn from_parts(
        private_key: Zeroizing<[u8; 32]>,
        credential: Credential,
    ) -> Result<Identity, TrustError> {
        let secret = StaticSecret::from(*private_key);
        if PublicKey::from(&secret).to_bytes() != credential.public_key() {
            return Err(TrustError::KeyMismatch);
        }
        if let Some(signing_key) = credential.signing_key() {
            if derived_signing_public_key(&secret) != signing_key {
                return Err(TrustError::KeyMismatch);
            }
        }
        Ok(Self { secret, credential })
    }

    /// This participant's credential.
    pub fn credential(&self) -> &Credential {
        &self.credential
    }

    /// The static X25519 public key (equal to the credential's).
    pub fn public_key(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }

    /// Whether this participant's credential certifies its signing key
    /// (version 2). Without it, [`Identity::sign_statement`] still signs, but
    /// nobody can verify against the credential: reissue it with
    /// `kafka-e2ee credential issue`.
    pub fn has_signing_key(&self) -> bool {
        self.credential.signing_key().is_some()
    }

    /// The Ed25519 verifying key derived from the X25519 private key (what a
    /// version 2 credential certifies): the Ed25519 seed is
    /// HKDF-SHA256(salt = none, ikm = X25519 private key, info =
    /// `kafka-e2ee/v2/signing-key`), 32 bytes.
    pub fn signing_public_key(&self) -> [u8; 32] {
        derived_signing_public_key(&self.secret)
    }

    /// Signs `context || message` with the derived Ed25519 signing key
    /// ([`Identity::signing_public_key`]); the counterpart is
    /// [`Credential::verify_statement`]. `context` is a fixed domain
    /// separation string chosen per kind of statement.
    pub fn sign_statement(&self, context: &[u8], message: &[u8]) -> [u8; 64] {
        let key = derive_signing_key(&self.secret);
        let mut signed = Vec::with_capacity(context.len() + message.len());
        signed.extend_from_slice(context);
        signed.extend_from_slice(message);
        key.sign(&signed).to_bytes()
    }

    /// The raw static private key, for the Noise handshake.
    pub fn private_key_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }

    /// The key a host uses to encrypt its state directory:
    /// HKDF-SHA256(salt = none, ikm = private key, info =
    /// `kafka-e2ee/v1/state-at-rest`), 32 bytes.
    pub fn state_key(&self) -> Zeroizing<[u8; 32]> {
        let ikm = self.private_key_bytes();
        let hk = Hkdf::<Sha256>::new(None, ikm.as_slice());
        let mut okm = Zeroizing::new([0u8; 32]);
        // Expanding 32 bytes is far below HKDF-SHA256's limit (255 * 32
        // bytes), so this error cannot happen; there is nothing to report.
        let _cannot_fail = hk.expand(STATE_KEY_INFO, okm.as_mut_slice());
        okm
    }

    /// Parses a credential file (docs/TRUST.md) and checks that its private
    /// key belongs to its credential.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Identity, TrustError> {
        let file = TextFile::parse(bytes, FILE, CREDENTIAL_FILE_HEADER)?;
        let mut private_key = None;
        let mut credential = None;
        for line in file.lines() {
            match line.key {
                "private-key" => {
                    if private_key.is_some() {
                        return Err(line.error("`private-key` appears twice"));
                    }
                    private_key = Some(decode_key32(line, "private-key")?);
                }
                "credential" => {
                    if credential.is_some() {
                        return Err(line.error("`credential` appears twice"));
                    }
                    let bytes = decode_b64(line, "credential")?;
                    let cred = Credential::decode(&bytes)
                        .map_err(|e| line.error(&format!("`credential`: {e}")))?;
                    credential = Some(cred);
                }
                _ => {
                    return Err(line.error("unknown field (expected `private-key` or `credential`)"))
                }
            }
        }
        let missing = |field: &str| TrustError::File {
            file: FILE,
            line: 0,
            reason: format!("no `{field}` line"),
        };
        let private_key = private_key.ok_or_else(|| missing("private-key"))?;
        let credential = credential.ok_or_else(|| missing("credential"))?;
        Self::from_parts(private_key, credential)
    }

    /// Writes a credential file. The result holds the private key: it is
    /// zeroized when dropped; write it with owner-only permissions.
    pub fn to_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        let key = self.private_key_bytes();
        let key_b64 = Zeroizing::new(STANDARD.encode(key.as_slice()));
        let cred_b64 = STANDARD.encode(self.credential.encode());
        let fingerprint = self.credential.fingerprint();
        let parts: [&[u8]; 10] = [
            CREDENTIAL_FILE_HEADER.as_bytes(),
            b"\n# SECRET: holds a private key.\n# name: ",
            // Names have no control characters, so this stays one comment line.
            self.credential.name().as_bytes(),
            b"\n# fingerprint: ",
            fingerprint.as_bytes(),
            b"\nprivate-key: ",
            key_b64.as_bytes(),
            b"\ncredential: ",
            cred_b64.as_bytes(),
            b"\n",
        ];
        // Sized exactly: a buffer that grows leaves copies of the private
        // key in the blocks it moved out of.
        let mut out = Zeroizing::new(Vec::with_capacity(parts.iter().map(|p| p.len()).sum()));
        for part in parts {
            out.extend_from_slice(part);
        }
        out
    }
}

/// The Ed25519 signing key derived from an X25519 private key (see
/// [`Identity::signing_public_key`]). The seed and the private key copy are
/// zeroized on drop, and so is the returned key.
fn derive_signing_key(secret: &StaticSecret) -> SigningKey {
    let ikm = Zeroizing::new(secret.to_bytes());
    let hk = Hkdf::<Sha256>::new(None, ikm.as_slice());
    let mut seed = Zeroizing::new([0u8; 32]);
    // Expanding 32 bytes is far below HKDF-SHA256's limit (255 * 32 bytes),
    // so this error cannot happen; there is nothing to report.
    let _cannot_fail = hk.expand(SIGNING_KEY_INFO, seed.as_mut_slice());
    SigningKey::from_bytes(&seed)
}

fn derived_signing_public_key(secret: &StaticSecret) -> [u8; 32] {
    derive_signing_key(secret).verifying_key().to_bytes()
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("credential", &self.credential)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

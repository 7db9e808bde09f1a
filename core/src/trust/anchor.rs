use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, VerifyingKey};

use super::text::{decode_b64, decode_key32, TextFile};
use super::{fingerprint, Credential, TrustError};

/// First line of a trust file.
pub(super) const TRUST_HEADER: &str = "kafka-e2ee-trust v1";
const FILE: &str = "trust file";

/// What a deployment trusts: authority public keys (Ed25519) whose
/// signatures it accepts, credentials pinned byte for byte (signed or not),
/// and a deny list of X25519 public keys that wins over everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustAnchor {
    authorities: Vec<[u8; 32]>,
    pinned: Vec<Credential>,
    deny: Vec<[u8; 32]>,
}

impl TrustAnchor {
    /// Trusts credentials signed by any of these Ed25519 public keys.
    pub fn from_authorities(authorities: Vec<[u8; 32]>) -> Self {
        let mut anchor = Self::default();
        for a in authorities {
            anchor.add_authority(a);
        }
        anchor
    }

    /// Trusts exactly these credentials, byte for byte (unsigned ones too).
    pub fn pinned(credentials: Vec<Credential>) -> Self {
        let mut anchor = Self::default();
        for c in credentials {
            anchor.add_pinned(c);
        }
        anchor
    }

    /// Adds a trusted authority (no-op if already present).
    pub fn add_authority(&mut self, public_key: [u8; 32]) {
        if !self.authorities.contains(&public_key) {
            self.authorities.push(public_key);
        }
    }

    /// Adds a pinned credential (no-op if already present).
    pub fn add_pinned(&mut self, credential: Credential) {
        if !self.pinned.contains(&credential) {
            self.pinned.push(credential);
        }
    }

    /// Revokes an X25519 public key: credentials for it are rejected, however
    /// they are trusted otherwise.
    pub fn add_deny(&mut self, public_key: [u8; 32]) {
        if !self.deny.contains(&public_key) {
            self.deny.push(public_key);
        }
    }

    /// Whether this X25519 public key is revoked.
    pub fn is_denied(&self, public_key: &[u8; 32]) -> bool {
        self.deny.contains(public_key)
    }

    /// Trusted authority keys, in file order.
    pub fn authorities(&self) -> &[[u8; 32]] {
        &self.authorities
    }
    /// Pinned credentials, in file order.
    pub fn pinned_credentials(&self) -> &[Credential] {
        &self.pinned
    }
    /// Revoked X25519 public keys, in file order.
    pub fn denied(&self) -> &[[u8; 32]] {
        &self.deny
    }

    /// Checks that `cred` is trusted now. In order:
    /// 1. its public key is not on the deny list ([`TrustError::Denied`]);
    /// 2. it equals a pinned credential byte for byte, or it is signed by a
    ///    listed authority and the signature verifies (strict Ed25519);
    /// 3. it is valid at `now_ms`: `not_before_ms <= now_ms + skew_ms` and
    ///    `now_ms < expires_ms` (skew tolerates an issuer clock that runs
    ///    ahead; expiry is strict).
    ///
    /// Topic permissions are separate: see [`Credential::may_produce`] and
    /// [`Credential::may_consume`].
    pub fn verify(&self, cred: &Credential, now_ms: u64, skew_ms: u64) -> Result<(), TrustError> {
        if self.is_denied(&cred.public_key()) {
            return Err(TrustError::Denied {
                fingerprint: cred.fingerprint(),
            });
        }
        if !self.pinned.contains(cred) {
            self.verify_signature(cred)?;
        }
        cred.check_validity(now_ms, skew_ms)
    }

    fn verify_signature(&self, cred: &Credential) -> Result<(), TrustError> {
        let issuer = cred.issuer();
        if cred.is_unsigned() {
            return Err(TrustError::NotPinned {
                fingerprint: cred.fingerprint(),
            });
        }
        if !self.authorities.contains(&issuer) {
            return Err(TrustError::UnknownAuthority {
                issuer: fingerprint(&issuer),
            });
        }
        let key = VerifyingKey::from_bytes(&issuer).map_err(|_| TrustError::BadSignature)?;
        let signature = Signature::from_bytes(&cred.signature());
        key.verify_strict(&cred.signed_message(), &signature)
            .map_err(|_| TrustError::BadSignature)
    }

    /// Parses a trust file (docs/TRUST.md). A file that trusts nothing (no
    /// `authority` and no `pinned` line) is an error.
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, TrustError> {
        let file = TextFile::parse(bytes, FILE, TRUST_HEADER)?;
        let mut anchor = Self::default();
        for line in file.lines() {
            match line.key {
                "authority" => {
                    let key = *decode_key32(line, "authority")?;
                    match VerifyingKey::from_bytes(&key) {
                        Ok(k) if !k.is_weak() => anchor.add_authority(key),
                        _ => return Err(line.error(&TrustError::InvalidAuthorityKey.to_string())),
                    }
                }
                "pinned" => {
                    let bytes = decode_b64(line, "pinned")?;
                    let cred = Credential::decode(&bytes)
                        .map_err(|e| line.error(&format!("`pinned`: {e}")))?;
                    anchor.add_pinned(cred);
                }
                "deny" => anchor.add_deny(*decode_key32(line, "deny")?),
                _ => {
                    return Err(
                        line.error("unknown field (expected `authority`, `pinned` or `deny`)")
                    )
                }
            }
        }
        if anchor.authorities.is_empty() && anchor.pinned.is_empty() {
            return Err(TrustError::File {
                file: FILE,
                line: 0,
                reason: "it trusts nothing: add an `authority:` or `pinned:` line".to_owned(),
            });
        }
        Ok(anchor)
    }

    /// Writes a trust file, with a comment naming each entry's fingerprint.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        let mut out = String::from(TRUST_HEADER);
        out.push('\n');
        for a in &self.authorities {
            out.push_str(&format!(
                "# authority {}\nauthority: {}\n",
                fingerprint(a),
                STANDARD.encode(a)
            ));
        }
        for c in &self.pinned {
            out.push_str(&format!(
                "# pinned {} ({})\npinned: {}\n",
                c.fingerprint(),
                c.name(),
                STANDARD.encode(c.encode())
            ));
        }
        for d in &self.deny {
            out.push_str(&format!(
                "# deny {}\ndeny: {}\n",
                fingerprint(d),
                STANDARD.encode(d)
            ));
        }
        out.into_bytes()
    }
}

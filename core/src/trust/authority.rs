use core::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey};
use rand_core::CryptoRngCore;
use zeroize::Zeroizing;

use super::credential::{sanitize_name, MAX_PATTERNS};
use super::text::{decode_key32, TextFile};
use super::{fingerprint, Credential, TopicPattern, TrustError};

/// First line of an authority key file.
pub(super) const AUTHORITY_HEADER: &str = "kafka-e2ee-authority v1";
const FILE: &str = "authority key file";

/// An offline Ed25519 signing key that issues credentials. It signs and
/// nothing else: it never sees a data key. The key is zeroized on drop and
/// never shown by `Debug`.
pub struct Authority {
    signing_key: SigningKey,
}

impl Authority {
    /// A new random authority.
    pub fn generate(rng: &mut impl CryptoRngCore) -> Self {
        Self {
            signing_key: SigningKey::generate(rng),
        }
    }

    /// The authority's Ed25519 public key: what trust files list.
    pub fn public_key(&self) -> [u8; 32] {
        self.signing_key.verifying_key().to_bytes()
    }

    /// Fingerprint of [`Authority::public_key`].
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key())
    }

    /// Issues and signs a credential, validating its attributes: the name
    /// must be 1..=255 bytes of UTF-8 without control characters, each list
    /// at most [`MAX_PATTERNS`] patterns.
    pub fn try_issue(
        &self,
        name: &str,
        public_key: [u8; 32],
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Result<Credential, TrustError> {
        self.try_issue_inner(
            name,
            public_key,
            None,
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )
    }

    /// Issues and signs a version 2 credential, which also certifies the
    /// participant's Ed25519 verifying key `signing_key` (the signature
    /// covers it). Validates like [`Authority::try_issue`].
    #[allow(clippy::too_many_arguments)]
    pub fn try_issue_v2(
        &self,
        name: &str,
        public_key: [u8; 32],
        signing_key: [u8; 32],
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Result<Credential, TrustError> {
        self.try_issue_inner(
            name,
            public_key,
            Some(signing_key),
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn try_issue_inner(
        &self,
        name: &str,
        public_key: [u8; 32],
        signing_key: Option<[u8; 32]>,
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Result<Credential, TrustError> {
        let mut cred = Credential::unsigned(
            name,
            public_key,
            signing_key,
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )?;
        self.sign(&mut cred);
        Ok(cred)
    }

    /// Issues and signs a credential. Never fails: a name that
    /// [`Authority::try_issue`] would reject is made acceptable (control
    /// characters become `?`, empty becomes `unnamed`, cut to 255 bytes), and
    /// lists longer than [`MAX_PATTERNS`] are cut, which only takes rights
    /// away. Use `try_issue` to get an error instead. The credential is
    /// version 1 (no signing key); [`Authority::issue_v2`] issues version 2.
    pub fn issue(
        &self,
        name: &str,
        public_key: [u8; 32],
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Credential {
        self.issue_inner(
            name,
            public_key,
            None,
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )
    }

    /// Issues and signs a version 2 credential that also certifies the
    /// Ed25519 verifying key `signing_key`. Never fails, making the input
    /// acceptable like [`Authority::issue`]; use [`Authority::try_issue_v2`]
    /// to get an error instead.
    #[allow(clippy::too_many_arguments)]
    pub fn issue_v2(
        &self,
        name: &str,
        public_key: [u8; 32],
        signing_key: [u8; 32],
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Credential {
        self.issue_inner(
            name,
            public_key,
            Some(signing_key),
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn issue_inner(
        &self,
        name: &str,
        public_key: [u8; 32],
        signing_key: Option<[u8; 32]>,
        mut produce: Vec<TopicPattern>,
        mut consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Credential {
        produce.truncate(MAX_PATTERNS);
        consume.truncate(MAX_PATTERNS);
        let name = sanitize_name(name);
        let mut cred = match Credential::unsigned(
            &name,
            public_key,
            signing_key,
            produce,
            consume,
            not_before_ms,
            expires_ms,
        ) {
            Ok(cred) => cred,
            // Unreachable after sanitizing; fall back to a credential that
            // grants nothing rather than panic.
            Err(_) => {
                Credential::unsigned_empty(public_key, signing_key, not_before_ms, expires_ms)
            }
        };
        self.sign(&mut cred);
        cred
    }

    fn sign(&self, cred: &mut Credential) {
        let issuer = self.public_key();
        cred.set_signature(issuer, [0; 64]);
        let signature = self.signing_key.sign(&cred.signed_message());
        cred.set_signature(issuer, signature.to_bytes());
    }

    /// Parses an authority key file (docs/TRUST.md).
    pub fn from_file_bytes(bytes: &[u8]) -> Result<Self, TrustError> {
        let file = TextFile::parse(bytes, FILE, AUTHORITY_HEADER)?;
        let mut seed: Option<Zeroizing<[u8; 32]>> = None;
        for line in file.lines() {
            match line.key {
                "signing-key" => {
                    if seed.is_some() {
                        return Err(line.error("`signing-key` appears twice"));
                    }
                    seed = Some(decode_key32(line, "signing-key")?);
                }
                _ => return Err(line.error("unknown field (expected `signing-key`)")),
            }
        }
        let seed = seed.ok_or_else(|| TrustError::File {
            file: FILE,
            line: 0,
            reason: "no `signing-key` line".to_owned(),
        })?;
        Ok(Self {
            signing_key: SigningKey::from_bytes(&seed),
        })
    }

    /// Writes an authority key file. The result holds the secret key: it is
    /// zeroized when dropped; write it with owner-only permissions.
    pub fn to_file_bytes(&self) -> Zeroizing<Vec<u8>> {
        let seed = Zeroizing::new(self.signing_key.to_bytes());
        let encoded = Zeroizing::new(STANDARD.encode(seed.as_slice()));
        let mut out = Zeroizing::new(Vec::with_capacity(160));
        out.extend_from_slice(AUTHORITY_HEADER.as_bytes());
        out.extend_from_slice(b"\n# SECRET: keep offline. Public key fingerprint: ");
        out.extend_from_slice(self.fingerprint().as_bytes());
        out.extend_from_slice(b"\nsigning-key: ");
        out.extend_from_slice(encoded.as_bytes());
        out.push(b'\n');
        out
    }
}

impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authority")
            .field("fingerprint", &self.fingerprint())
            .field("signing_key", &"<redacted>")
            .finish()
    }
}

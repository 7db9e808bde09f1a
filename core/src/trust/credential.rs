use core::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use sha2::{Digest, Sha256};

use super::{TopicPattern, TrustError, CREDENTIAL_SIGNATURE_CONTEXT, MAX_TOPIC_LEN};

/// First bytes of every binary credential.
pub const CREDENTIAL_MAGIC: &[u8; 4] = b"KE2C";
/// The newest binary credential version: this build writes it for every
/// credential that certifies an Ed25519 signing key, and reads it and
/// [`CREDENTIAL_VERSION_1`].
pub const CREDENTIAL_VERSION: u8 = 2;
/// The first binary credential version (no signing key). Still read, and
/// still written for credentials without a signing key, byte for byte.
pub const CREDENTIAL_VERSION_1: u8 = 1;
/// Longest credential name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Most patterns in each of the produce and consume lists.
pub const MAX_PATTERNS: usize = 64;
/// Upper bound of an encoded credential's length, of either version (fits a
/// Noise message).
pub const MAX_ENCODED_LEN: usize = 4
    + 1
    + 1
    + MAX_NAME_LEN
    + 32
    + 32
    + 2 * (1 + MAX_PATTERNS * (1 + MAX_TOPIC_LEN))
    + 8
    + 8
    + 32
    + 64;

/// Binds an X25519 public key to a name, topic permissions and a validity
/// window, signed by an authority (or unsigned, for pinned trust). A version 2
/// credential also certifies an Ed25519 signing key, with which its holder
/// signs statements ([`Credential::verify_statement`]).
///
/// Every `Credential` value is valid by construction: its name and patterns
/// are within the limits of the binary encoding, so [`Credential::encode`]
/// and [`Credential::decode`] round-trip exactly. Whether it is *trusted* is
/// a question for [`super::TrustAnchor::verify`].
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    name: String,
    public_key: [u8; 32],
    /// Present exactly in version 2 credentials.
    signing_key: Option<[u8; 32]>,
    produce: Vec<TopicPattern>,
    consume: Vec<TopicPattern>,
    not_before_ms: u64,
    expires_ms: u64,
    issuer: [u8; 32],
    signature: [u8; 64],
}

/// The SHA-256 fingerprint of a public key (X25519 or Ed25519): the first
/// 16 bytes of its SHA-256 digest, as hex in groups of two bytes separated by
/// `:`, e.g. `3f2a:91bc:0d44:...`.
pub fn fingerprint(public_key: &[u8; 32]) -> String {
    let digest = Sha256::digest(public_key);
    let mut out = String::with_capacity(39);
    for (i, b) in digest.iter().take(16).enumerate() {
        if i > 0 && i % 2 == 0 {
            out.push(':');
        }
        out.push_str(&format!("{b:02x}"));
    }
    out
}

pub(super) fn validate_name(name: &str) -> Result<(), TrustError> {
    if name.is_empty() {
        return Err(TrustError::InvalidName {
            reason: "it is empty",
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(TrustError::InvalidName {
            reason: "it is longer than 255 bytes",
        });
    }
    if name.chars().any(char::is_control) {
        return Err(TrustError::InvalidName {
            reason: "it contains control characters",
        });
    }
    Ok(())
}

pub(super) fn validate_patterns(patterns: &[TopicPattern]) -> Result<(), TrustError> {
    if patterns.len() > MAX_PATTERNS {
        return Err(TrustError::TooManyPatterns {
            count: patterns.len(),
        });
    }
    Ok(())
}

/// Makes any name acceptable, for the infallible constructors: control
/// characters become `?`, an empty name becomes `unnamed`, and it is cut to
/// [`MAX_NAME_LEN`] bytes at a character boundary.
pub(super) fn sanitize_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = if c.is_control() { '?' } else { c };
        if out.len() + c.len_utf8() > MAX_NAME_LEN {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push_str("unnamed");
    }
    out
}

impl Credential {
    /// A credential with the given attributes and no signature yet (issuer and
    /// signature all zero). Validates the name and the pattern counts. With a
    /// signing key it is a version 2 credential, without one version 1.
    pub(super) fn unsigned(
        name: &str,
        public_key: [u8; 32],
        signing_key: Option<[u8; 32]>,
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Result<Self, TrustError> {
        validate_name(name)?;
        validate_patterns(&produce)?;
        validate_patterns(&consume)?;
        Ok(Self {
            name: name.to_owned(),
            public_key,
            signing_key,
            produce,
            consume,
            not_before_ms,
            expires_ms,
            issuer: [0; 32],
            signature: [0; 64],
        })
    }

    /// An unsigned version 1 credential (no signing key), for pinned trust
    /// (the trust file lists it byte for byte). Fails if the name is empty,
    /// longer than [`MAX_NAME_LEN`] bytes or has control characters, or a
    /// list has more than [`MAX_PATTERNS`] patterns.
    pub fn new_unsigned(
        name: &str,
        public_key: [u8; 32],
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Result<Self, TrustError> {
        Self::unsigned(
            name,
            public_key,
            None,
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )
    }

    /// An unsigned version 2 credential that also certifies the Ed25519
    /// verifying key `signing_key`, for pinned trust. Fails like
    /// [`Credential::new_unsigned`].
    pub fn new_unsigned_v2(
        name: &str,
        public_key: [u8; 32],
        signing_key: [u8; 32],
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Result<Self, TrustError> {
        Self::unsigned(
            name,
            public_key,
            Some(signing_key),
            produce,
            consume,
            not_before_ms,
            expires_ms,
        )
    }

    /// A credential that grants nothing; the last resort of infallible
    /// constructors.
    pub(super) fn unsigned_empty(
        public_key: [u8; 32],
        signing_key: Option<[u8; 32]>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Self {
        Self {
            name: "unnamed".to_owned(),
            public_key,
            signing_key,
            produce: Vec::new(),
            consume: Vec::new(),
            not_before_ms,
            expires_ms,
            issuer: [0; 32],
            signature: [0; 64],
        }
    }

    pub(super) fn set_signature(&mut self, issuer: [u8; 32], signature: [u8; 64]) {
        self.issuer = issuer;
        self.signature = signature;
    }

    /// The participant's name (for people and logs; not an authorization input).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The participant's static X25519 public key.
    pub fn public_key(&self) -> [u8; 32] {
        self.public_key
    }
    /// The Ed25519 verifying key this credential certifies (version 2), or
    /// `None` for a version 1 credential.
    pub fn signing_key(&self) -> Option<[u8; 32]> {
        self.signing_key
    }
    /// The binary version this credential encodes as: 2 if it carries a
    /// signing key, 1 otherwise.
    pub fn version(&self) -> u8 {
        if self.signing_key.is_some() {
            CREDENTIAL_VERSION
        } else {
            CREDENTIAL_VERSION_1
        }
    }
    /// Fingerprint of the certified signing key, see [`fingerprint`]; `None`
    /// for a version 1 credential.
    pub fn signing_key_fingerprint(&self) -> Option<String> {
        self.signing_key.as_ref().map(fingerprint)
    }

    /// Whether `signature` is a valid Ed25519 signature (strict verification,
    /// `verify_strict`) by the certified signing key over
    /// `context || message`. False for a version 1 credential, which
    /// certifies no signing key, and for a signing key that is not a valid
    /// Ed25519 point. Whether the credential itself is trusted is
    /// [`super::TrustAnchor::verify`]'s question, to ask first.
    pub fn verify_statement(&self, context: &[u8], message: &[u8], signature: &[u8; 64]) -> bool {
        let Some(key) = &self.signing_key else {
            return false;
        };
        let Ok(key) = VerifyingKey::from_bytes(key) else {
            return false;
        };
        let mut signed = Vec::with_capacity(context.len() + message.len());
        signed.extend_from_slice(context);
        signed.extend_from_slice(message);
        key.verify_strict(&signed, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// Topics this participant may produce to.
    pub fn produce(&self) -> &[TopicPattern] {
        &self.produce
    }
    /// Topics this participant may consume from.
    pub fn consume(&self) -> &[TopicPattern] {
        &self.consume
    }
    /// Start of validity, Unix milliseconds (inclusive).
    pub fn not_before_ms(&self) -> u64 {
        self.not_before_ms
    }
    /// End of validity, Unix milliseconds (exclusive: expired at this instant).
    pub fn expires_ms(&self) -> u64 {
        self.expires_ms
    }
    /// Ed25519 public key of the signing authority; all zero if unsigned.
    pub fn issuer(&self) -> [u8; 32] {
        self.issuer
    }
    /// Ed25519 signature; all zero if unsigned.
    pub fn signature(&self) -> [u8; 64] {
        self.signature
    }
    /// Whether this credential carries no authority signature.
    pub fn is_unsigned(&self) -> bool {
        self.issuer == [0; 32]
    }

    /// Whether the credential allows producing to `topic` (policy only; see
    /// [`super::TrustAnchor::verify`] for whether it is trusted and current).
    pub fn may_produce(&self, topic: &str) -> bool {
        self.produce.iter().any(|p| p.matches(topic))
    }
    /// Whether the credential allows consuming from `topic`.
    pub fn may_consume(&self, topic: &str) -> bool {
        self.consume.iter().any(|p| p.matches(topic))
    }
    /// Fingerprint of the credential's public key, see [`fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public_key)
    }

    /// Whether `now_ms` lies in the validity window, with `skew_ms` of
    /// tolerance for the start only: valid iff
    /// `not_before_ms <= now_ms + skew_ms && now_ms < expires_ms`.
    /// Expiry is strict so that a credential ends when its authority said.
    pub fn is_valid_at(&self, now_ms: u64, skew_ms: u64) -> bool {
        self.check_validity(now_ms, skew_ms).is_ok()
    }

    pub(super) fn check_validity(&self, now_ms: u64, skew_ms: u64) -> Result<(), TrustError> {
        if now_ms.saturating_add(skew_ms) < self.not_before_ms {
            return Err(TrustError::NotYetValid {
                not_before_ms: self.not_before_ms,
                now_ms,
            });
        }
        if now_ms >= self.expires_ms {
            return Err(TrustError::Expired {
                expires_ms: self.expires_ms,
                now_ms,
            });
        }
        Ok(())
    }

    /// The message an authority signs: the signature context followed by the
    /// encoding without the trailing signature.
    pub(super) fn signed_message(&self) -> Vec<u8> {
        let mut msg = Vec::with_capacity(CREDENTIAL_SIGNATURE_CONTEXT.len() + 256);
        msg.extend_from_slice(CREDENTIAL_SIGNATURE_CONTEXT);
        self.encode_body(&mut msg);
        msg
    }

    fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(CREDENTIAL_MAGIC);
        out.push(self.version());
        // Lengths fit in a byte: enforced when the value was built or decoded.
        out.push(u8::try_from(self.name.len()).unwrap_or(u8::MAX));
        out.extend_from_slice(self.name.as_bytes());
        out.extend_from_slice(&self.public_key);
        if let Some(signing_key) = &self.signing_key {
            out.extend_from_slice(signing_key);
        }
        for list in [&self.produce, &self.consume] {
            out.push(u8::try_from(list.len()).unwrap_or(u8::MAX));
            for p in list {
                let s = p.to_string();
                out.push(u8::try_from(s.len()).unwrap_or(u8::MAX));
                out.extend_from_slice(s.as_bytes());
            }
        }
        out.extend_from_slice(&self.not_before_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.issuer);
    }

    /// The canonical binary encoding (docs/TRUST.md, "Binary credential").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode_body(&mut out);
        out.extend_from_slice(&self.signature);
        out
    }

    /// Decodes the binary encoding (version 1 or 2) strictly: wrong magic,
    /// unknown version, out-of-bounds lengths or counts, invalid names or
    /// patterns, and trailing bytes are errors. Never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, TrustError> {
        let mut r = Reader { rest: bytes };
        if r.take(4, "truncated in the magic")? != CREDENTIAL_MAGIC {
            return Err(malformed("it does not start with KE2C"));
        }
        let version = r.u8("truncated in the version")?;
        if version != CREDENTIAL_VERSION && version != CREDENTIAL_VERSION_1 {
            return Err(TrustError::UnsupportedCredentialVersion { found: version });
        }
        let name_len = usize::from(r.u8("truncated in the name length")?);
        let name = core::str::from_utf8(r.take(name_len, "truncated in the name")?)
            .map_err(|_| malformed("the name is not UTF-8"))?;
        validate_name(name)
            .map_err(|_| malformed("the name is empty or has control characters"))?;
        let public_key = r.array::<32>("truncated in the public key")?;
        let signing_key = if version == CREDENTIAL_VERSION {
            Some(r.array::<32>("truncated in the signing key")?)
        } else {
            None
        };
        let produce = r.patterns()?;
        let consume = r.patterns()?;
        let not_before_ms = u64::from_be_bytes(r.array::<8>("truncated in not-before")?);
        let expires_ms = u64::from_be_bytes(r.array::<8>("truncated in expires")?);
        let issuer = r.array::<32>("truncated in the issuer")?;
        let signature = r.array::<64>("truncated in the signature")?;
        if !r.rest.is_empty() {
            return Err(malformed("trailing bytes after the signature"));
        }
        Ok(Self {
            name: name.to_owned(),
            public_key,
            signing_key,
            produce,
            consume,
            not_before_ms,
            expires_ms,
            issuer,
            signature,
        })
    }
}

fn malformed(reason: &'static str) -> TrustError {
    TrustError::MalformedCredential { reason }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], TrustError> {
        if self.rest.len() < n {
            return Err(malformed(what));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, TrustError> {
        let b = self.take(1, what)?;
        b.first().copied().ok_or(malformed(what))
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], TrustError> {
        let b = self.take(N, what)?;
        <[u8; N]>::try_from(b).map_err(|_| malformed(what))
    }

    fn patterns(&mut self) -> Result<Vec<TopicPattern>, TrustError> {
        let count = usize::from(self.u8("truncated in a pattern count")?);
        if count > MAX_PATTERNS {
            return Err(malformed("more than 64 topic patterns in a list"));
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(self.u8("truncated in a pattern length")?);
            let raw = self.take(len, "truncated in a pattern")?;
            let s = core::str::from_utf8(raw).map_err(|_| malformed("a pattern is not UTF-8"))?;
            let p = TopicPattern::parse(s).map_err(|_| malformed("a topic pattern is invalid"))?;
            out.push(p);
        }
        Ok(out)
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let issuer = if self.is_unsigned() {
            "unsigned".to_owned()
        } else {
            fingerprint(&self.issuer)
        };
        let signing_key = self
            .signing_key_fingerprint()
            .unwrap_or_else(|| "none (version 1)".to_owned());
        f.debug_struct("Credential")
            .field("name", &self.name)
            .field("fingerprint", &self.fingerprint())
            .field("signing_key", &signing_key)
            .field("produce", &self.produce)
            .field("consume", &self.consume)
            .field("not_before_ms", &self.not_before_ms)
            .field("expires_ms", &self.expires_ms)
            .field("issuer", &issuer)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize() {
        assert_eq!(sanitize_name(""), "unnamed");
        assert_eq!(sanitize_name("a\nb"), "a?b");
        let long = "é".repeat(200);
        let s = sanitize_name(&long);
        assert!(s.len() <= MAX_NAME_LEN && validate_name(&s).is_ok());
    }

    #[test]
    fn max_len_bound() {
        let p: Vec<_> = (0..MAX_PATTERNS)
            .map(|i| TopicPattern::parse(&format!("{i:0>249}")).unwrap())
            .collect();
        let c = Credential::unsigned(&"n".repeat(255), [1; 32], Some([2; 32]), p.clone(), p, 0, 1)
            .unwrap();
        assert_eq!(c.encode().len(), MAX_ENCODED_LEN);
        assert_eq!(Credential::decode(&c.encode()).unwrap(), c);
        let mut v1 = c.clone();
        v1.signing_key = None;
        assert_eq!(v1.encode().len(), MAX_ENCODED_LEN - 32);
        assert_eq!(Credential::decode(&v1.encode()).unwrap(), v1);
    }
}

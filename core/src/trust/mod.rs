//! Identities, credentials, trust anchors and policy.
// ---- STAND-IN (replaced by the trust branch) ----
#![allow(missing_docs, clippy::indexing_slicing)]
use core::fmt;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// Why a credential, identity or trust file was rejected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustError {
    Malformed,
    UnknownAuthority,
    BadSignature,
    Expired,
    NotYetValid,
    Denied,
}
impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}
impl std::error::Error for TrustError {}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TopicPattern {
    All,
    Exact(String),
    Prefix(String),
}
impl TopicPattern {
    pub fn parse(s: &str) -> Result<TopicPattern, TrustError> {
        Ok(if s == "*" {
            TopicPattern::All
        } else if let Some(p) = s.strip_suffix('*') {
            TopicPattern::Prefix(p.to_string())
        } else {
            TopicPattern::Exact(s.to_string())
        })
    }
    pub fn matches(&self, topic: &str) -> bool {
        match self {
            TopicPattern::All => true,
            TopicPattern::Exact(t) => t == topic,
            TopicPattern::Prefix(p) => topic.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    pub name: String,
    pub public_key: [u8; 32],
    pub produce: Vec<TopicPattern>,
    pub consume: Vec<TopicPattern>,
    pub not_before_ms: u64,
    pub expires_ms: u64,
    pub issuer: [u8; 32],
    pub signature: [u8; 64],
}
fn pats(p: &[TopicPattern]) -> String {
    p.iter()
        .map(|p| match p {
            TopicPattern::All => "*".to_string(),
            TopicPattern::Exact(t) => t.clone(),
            TopicPattern::Prefix(t) => format!("{t}*"),
        })
        .collect::<Vec<_>>()
        .join(",")
}
impl Credential {
    fn tbs(&self) -> Vec<u8> {
        let s = format!(
            "{}\n{}\n{}\n{}\n{}\n",
            self.name,
            pats(&self.produce),
            pats(&self.consume),
            self.not_before_ms,
            self.expires_ms
        );
        let mut v = s.into_bytes();
        v.extend_from_slice(&self.public_key);
        v.extend_from_slice(&self.issuer);
        v
    }
    pub fn encode(&self) -> Vec<u8> {
        let t = self.tbs();
        let mut v = (t.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&t);
        v.extend_from_slice(&self.signature);
        v
    }
    pub fn decode(b: &[u8]) -> Result<Credential, TrustError> {
        let l = u32::from_be_bytes(b.get(..4).ok_or(TrustError::Malformed)?.try_into().map_err(|_| TrustError::Malformed)?) as usize;
        let t = b.get(4..4 + l).ok_or(TrustError::Malformed)?;
        let sig = b.get(4 + l..).ok_or(TrustError::Malformed)?;
        if sig.len() != 64 || t.len() < 64 {
            return Err(TrustError::Malformed);
        }
        let (text, keys) = t.split_at(t.len() - 64);
        let text = std::str::from_utf8(text).map_err(|_| TrustError::Malformed)?;
        let f: Vec<&str> = text.split('\n').collect();
        if f.len() != 6 {
            return Err(TrustError::Malformed);
        }
        let pp = |s: &str| -> Result<Vec<TopicPattern>, TrustError> {
            if s.is_empty() {
                return Ok(vec![]);
            }
            s.split(',').map(TopicPattern::parse).collect()
        };
        Ok(Credential {
            name: f[0].to_string(),
            produce: pp(f[1])?,
            consume: pp(f[2])?,
            not_before_ms: f[3].parse().map_err(|_| TrustError::Malformed)?,
            expires_ms: f[4].parse().map_err(|_| TrustError::Malformed)?,
            public_key: keys[..32].try_into().map_err(|_| TrustError::Malformed)?,
            issuer: keys[32..].try_into().map_err(|_| TrustError::Malformed)?,
            signature: sig.try_into().map_err(|_| TrustError::Malformed)?,
        })
    }
    pub fn may_produce(&self, topic: &str) -> bool {
        self.produce.iter().any(|p| p.matches(topic))
    }
    pub fn may_consume(&self, topic: &str) -> bool {
        self.consume.iter().any(|p| p.matches(topic))
    }
}

pub struct Authority(SigningKey);
impl fmt::Debug for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Authority(..)")
    }
}
impl Authority {
    pub fn generate(rng: &mut impl rand_core::CryptoRngCore) -> Authority {
        Authority(SigningKey::generate(rng))
    }
    pub fn public_key(&self) -> [u8; 32] {
        self.0.verifying_key().to_bytes()
    }
    #[allow(clippy::too_many_arguments)]
    pub fn issue(
        &self,
        name: &str,
        public_key: [u8; 32],
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
    ) -> Credential {
        let mut c = Credential {
            name: name.to_string(),
            public_key,
            produce,
            consume,
            not_before_ms,
            expires_ms,
            issuer: self.public_key(),
            signature: [0; 64],
        };
        c.signature = self.0.sign(&c.tbs()).to_bytes();
        c
    }
}

pub struct Identity {
    secret: StaticSecret,
    credential: Credential,
}
impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity").field("name", &self.credential.name).finish_non_exhaustive()
    }
}
impl Identity {
    #[allow(clippy::too_many_arguments)]
    pub fn generate(
        name: &str,
        produce: Vec<TopicPattern>,
        consume: Vec<TopicPattern>,
        not_before_ms: u64,
        expires_ms: u64,
        authority: &Authority,
        rng: &mut impl rand_core::CryptoRngCore,
    ) -> Identity {
        let secret = StaticSecret::random_from_rng(&mut *rng);
        let public = PublicKey::from(&secret).to_bytes();
        let credential = authority.issue(name, public, produce, consume, not_before_ms, expires_ms);
        Identity { secret, credential }
    }
    pub fn credential(&self) -> &Credential {
        &self.credential
    }
    pub fn public_key(&self) -> [u8; 32] {
        PublicKey::from(&self.secret).to_bytes()
    }
    pub fn private_key_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.secret.to_bytes())
    }
    pub fn state_key(&self) -> Zeroizing<[u8; 32]> {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, &self.secret.to_bytes());
        let mut out = Zeroizing::new([0u8; 32]);
        let _ = hk.expand(b"kafka-e2ee/v1/state-at-rest", &mut *out);
        out
    }
}

#[derive(Debug, Clone, Default)]
pub struct TrustAnchor {
    authorities: Vec<[u8; 32]>,
    deny: Vec<[u8; 32]>,
}
impl TrustAnchor {
    pub fn from_authorities(a: Vec<[u8; 32]>) -> TrustAnchor {
        TrustAnchor { authorities: a, deny: vec![] }
    }
    pub fn add_deny(&mut self, k: [u8; 32]) {
        self.deny.push(k)
    }
    pub fn is_denied(&self, k: &[u8; 32]) -> bool {
        self.deny.contains(k)
    }
    pub fn verify(&self, c: &Credential, now_ms: u64, skew_ms: u64) -> Result<(), TrustError> {
        if self.is_denied(&c.public_key) {
            return Err(TrustError::Denied);
        }
        if !self.authorities.contains(&c.issuer) {
            return Err(TrustError::UnknownAuthority);
        }
        let vk = VerifyingKey::from_bytes(&c.issuer).map_err(|_| TrustError::BadSignature)?;
        vk.verify(&c.tbs(), &ed25519_dalek::Signature::from_bytes(&c.signature))
            .map_err(|_| TrustError::BadSignature)?;
        if now_ms.saturating_add(skew_ms) < c.not_before_ms {
            return Err(TrustError::NotYetValid);
        }
        if now_ms > c.expires_ms.saturating_add(skew_ms) {
            return Err(TrustError::Expired);
        }
        Ok(())
    }
}

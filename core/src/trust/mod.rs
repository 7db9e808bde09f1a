//! Identities, credentials, trust anchors and policy.
//!
//! A participant holds an [`Identity`]: a static X25519 key pair and the
//! [`Credential`] that binds its public key to a name, the topics it may
//! produce and consume, and a validity window. An [`Authority`] (an offline
//! Ed25519 key) signs credentials; a deployment's [`TrustAnchor`] says which
//! authorities and which pinned credentials it accepts, and which keys are
//! revoked. Everything here works on bytes: reading and writing files is the
//! host's job. The formats are specified in `docs/TRUST.md`.

mod anchor;
mod authority;
mod credential;
mod error;
mod identity;
mod pattern;
mod text;

pub use anchor::TrustAnchor;
pub use authority::Authority;
pub use credential::{
    fingerprint, Credential, CREDENTIAL_MAGIC, CREDENTIAL_VERSION, CREDENTIAL_VERSION_1,
    MAX_ENCODED_LEN, MAX_NAME_LEN, MAX_PATTERNS,
};
pub use error::TrustError;
pub use identity::Identity;
pub use pattern::{TopicPattern, MAX_TOPIC_LEN};

/// Domain separation prefix of the message an authority signs.
pub const CREDENTIAL_SIGNATURE_CONTEXT: &[u8] = b"kafka-e2ee/v1/credential";

/// HKDF info string for [`Identity::state_key`].
pub const STATE_KEY_INFO: &[u8] = b"kafka-e2ee/v1/state-at-rest";

/// HKDF info string of the Ed25519 signing key an [`Identity`] derives from
/// its X25519 private key (see [`Identity::signing_public_key`]).
pub const SIGNING_KEY_INFO: &[u8] = b"kafka-e2ee/v2/signing-key";

/// Default clock-skew tolerance the engine passes to [`TrustAnchor::verify`].
pub const DEFAULT_SKEW_MS: u64 = 5 * 60 * 1000;

//! Identities, credentials, trust anchors and policy.

/// Why a credential, identity or trust file was rejected.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustError {}

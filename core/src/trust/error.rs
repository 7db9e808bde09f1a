use core::fmt;

/// Why a credential, identity, authority or trust file was rejected.
///
/// Messages say what is wrong and what to do about it. They never contain
/// secret material: file errors name the line and the field, not its value.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustError {
    /// The binary credential encoding is malformed.
    MalformedCredential {
        /// What is wrong, e.g. "truncated in the name".
        reason: &'static str,
    },
    /// The binary credential has a version this build does not understand.
    UnsupportedCredentialVersion {
        /// The version byte found.
        found: u8,
    },
    /// A topic pattern is not valid.
    InvalidTopicPattern {
        /// The pattern as given (shortened if very long).
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A credential name is not valid.
    InvalidName {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// More topic patterns than a credential may carry.
    TooManyPatterns {
        /// How many were given.
        count: usize,
    },
    /// A text file (credential, trust or authority file) is malformed.
    File {
        /// Which kind of file: "credential file", "trust file", "authority key file".
        file: &'static str,
        /// 1-based line number, 0 if the problem is not on one line.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The private key in a credential file does not belong to its credential:
    /// its X25519 public key, or the Ed25519 signing key derived from it,
    /// differs from the credential's.
    KeyMismatch,
    /// The credential's public key is on the deny list.
    Denied {
        /// Fingerprint of the denied X25519 public key.
        fingerprint: String,
    },
    /// The credential is signed by an authority the trust anchor does not list.
    UnknownAuthority {
        /// Fingerprint of the issuer's Ed25519 key.
        issuer: String,
    },
    /// The credential is unsigned and not in the pinned list.
    NotPinned {
        /// Fingerprint of the credential's public key.
        fingerprint: String,
    },
    /// The credential's signature does not verify under its issuer's key.
    BadSignature,
    /// The credential is not valid yet.
    NotYetValid {
        /// Start of validity (Unix ms).
        not_before_ms: u64,
        /// The time it was checked at (Unix ms).
        now_ms: u64,
    },
    /// The credential has expired.
    Expired {
        /// End of validity (Unix ms, exclusive).
        expires_ms: u64,
        /// The time it was checked at (Unix ms).
        now_ms: u64,
    },
    /// An Ed25519 authority public key is not a usable key.
    InvalidAuthorityKey,
}

impl fmt::Display for TrustError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MalformedCredential { reason } => write!(
                f,
                "malformed credential: {reason}; re-issue it with `kafka-e2ee credential issue` \
                 or check that it was copied completely"
            ),
            Self::UnsupportedCredentialVersion { found } => write!(
                f,
                "credential version {found} is not supported (this build reads versions 1 and 2); \
                 upgrade kafka-e2ee or re-issue the credential"
            ),
            Self::InvalidTopicPattern { pattern, reason } => write!(
                f,
                "invalid topic pattern {pattern:?}: {reason}; use `*`, a topic name, \
                 or a prefix ending in `*` (topic characters: a-z A-Z 0-9 . _ -)"
            ),
            Self::InvalidName { reason } => write!(f, "invalid credential name: {reason}"),
            Self::TooManyPatterns { count } => write!(
                f,
                "{count} topic patterns given, at most {} per list are allowed; \
                 use prefix patterns such as `orders.*`",
                super::MAX_PATTERNS
            ),
            Self::File { file, line, reason } => {
                if *line == 0 {
                    write!(f, "{file}: {reason}")
                } else {
                    write!(f, "{file}, line {line}: {reason}")
                }
            }
            Self::KeyMismatch => write!(
                f,
                "credential file: the private key does not match the credential's public key \
                 or signing key; \
                 the file was edited or assembled from two files — issue a new credential"
            ),
            Self::Denied { fingerprint } => write!(
                f,
                "credential {fingerprint} is revoked (on the trust file's deny list)"
            ),
            Self::UnknownAuthority { issuer } => write!(
                f,
                "credential is signed by authority {issuer}, which the trust file does not list; \
                 add that authority to the trust file or issue the credential with a trusted one"
            ),
            Self::NotPinned { fingerprint } => write!(
                f,
                "credential {fingerprint} is unsigned and not pinned in the trust file; \
                 pin it there or have an authority sign it"
            ),
            Self::BadSignature => write!(
                f,
                "credential signature does not verify: it was altered after signing; \
                 re-issue it"
            ),
            Self::NotYetValid {
                not_before_ms,
                now_ms,
            } => write!(
                f,
                "credential is not valid before {not_before_ms} (Unix ms), now is {now_ms}; \
                 check the clock or wait until it becomes valid"
            ),
            Self::Expired { expires_ms, now_ms } => write!(
                f,
                "credential expired at {expires_ms} (Unix ms), now is {now_ms}; \
                 issue a new credential"
            ),
            Self::InvalidAuthorityKey => write!(
                f,
                "invalid authority public key: not a usable Ed25519 key; \
                 copy it again from the authority's trust file"
            ),
        }
    }
}

impl std::error::Error for TrustError {}

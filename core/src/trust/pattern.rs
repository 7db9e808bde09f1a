use core::fmt;
use core::str::FromStr;

use super::TrustError;

/// Longest Kafka topic name, and so the longest pattern.
pub const MAX_TOPIC_LEN: usize = 249;

/// Which topics a credential may produce to or consume from.
///
/// `*` matches every topic, `orders.*` every topic that starts with
/// `orders.` (the `*` matches zero or more characters), anything else exactly
/// one topic. Only a trailing `*` is allowed; other characters are those of
/// Kafka topic names: `a-z A-Z 0-9 . _ -`.
///
/// Opaque so that every value is a validated pattern.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPattern(Repr);

#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Repr {
    /// `*`: all topics.
    All,
    /// A literal topic name.
    Exact(String),
    /// A prefix (stored without the trailing `*`).
    Prefix(String),
}

impl TopicPattern {
    /// `*`: every topic.
    pub fn all() -> Self {
        Self(Repr::All)
    }

    /// Whether this is `*`.
    pub fn is_all(&self) -> bool {
        self.0 == Repr::All
    }

    /// Parses and validates a pattern.
    pub fn parse(s: &str) -> Result<Self, TrustError> {
        let err = |reason| {
            let mut shown: String = s.chars().take(60).collect();
            if shown.len() < s.len() {
                shown.push('…');
            }
            Err(TrustError::InvalidTopicPattern {
                pattern: shown,
                reason,
            })
        };
        if s.is_empty() {
            return err("it is empty");
        }
        if s.len() > MAX_TOPIC_LEN {
            return err("it is longer than 249 characters");
        }
        if s == "*" {
            return Ok(Self(Repr::All));
        }
        let (body, prefix) = match s.strip_suffix('*') {
            Some(body) => (body, true),
            None => (s, false),
        };
        if body.contains('*') {
            return err("`*` is only allowed at the end");
        }
        if !body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return err("it contains a character not allowed in Kafka topic names");
        }
        if prefix {
            Ok(Self(Repr::Prefix(body.to_owned())))
        } else if body == "." || body == ".." {
            err("`.` and `..` are not valid topic names")
        } else {
            Ok(Self(Repr::Exact(body.to_owned())))
        }
    }

    /// Whether `topic` is covered by this pattern.
    pub fn matches(&self, topic: &str) -> bool {
        match &self.0 {
            Repr::All => true,
            Repr::Exact(name) => name == topic,
            Repr::Prefix(prefix) => topic.starts_with(prefix.as_str()),
        }
    }
}

impl FromStr for TopicPattern {
    type Err = TrustError;
    fn from_str(s: &str) -> Result<Self, TrustError> {
        Self::parse(s)
    }
}

impl fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Repr::All => f.write_str("*"),
            Repr::Exact(name) => f.write_str(name),
            Repr::Prefix(prefix) => write!(f, "{prefix}*"),
        }
    }
}

impl fmt::Debug for TopicPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TopicPattern({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_match() {
        let all = TopicPattern::parse("*").unwrap();
        assert!(all.matches("anything") && all.matches(""));
        let p = TopicPattern::parse("orders.*").unwrap();
        assert!(p.matches("orders.eu") && p.matches("orders."));
        assert!(!p.matches("orders") && !p.matches("ordersX") && !p.matches("x.orders.eu"));
        let e = TopicPattern::parse("orders").unwrap();
        assert!(e.matches("orders") && !e.matches("orders.eu"));
        for s in ["*", "orders.*", "a", "a*", "A-b_c.9", &"x".repeat(249)] {
            assert_eq!(TopicPattern::parse(s).unwrap().to_string(), s);
        }
    }

    #[test]
    fn invalid() {
        for s in [
            "",
            "**",
            "*a",
            "a*b*",
            "or*ders",
            "a b",
            "topic/x",
            "é",
            ".",
            "..",
            &"x".repeat(250),
        ] {
            assert!(TopicPattern::parse(s).is_err(), "{s:?} accepted");
        }
    }
}

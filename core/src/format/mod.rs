//! Record format v1: the one record header that carries everything but the
//! length-preserving ciphertext. Specified byte by byte in docs/FORMAT.md.

use core::fmt;

/// One engine instance: a process's engine for one cluster and credential.
/// A producer's instance id is part of every key id it issues, which is how a
/// consumer knows whom to ask for a key it lacks.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(pub [u8; 8]);

impl fmt::Debug for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InstanceId({self})")
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// Names one producer epoch: the producer instance and its epoch number.
/// The data key of a record is derived from the epoch secret and the topic.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct KeyId {
    pub producer: InstanceId,
    pub epoch: u32,
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.producer, self.epoch)
    }
}

/// Why a record header or record could not be decoded or opened.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {}

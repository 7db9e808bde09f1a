//! kafka-e2ee core: the record format, epoch keys, trust, and the Noise key
//! exchange, as a sans-IO engine. Time and randomness are inputs; control
//! messages are outputs. Nothing here opens a socket, reads a clock or spawns a
//! thread, which is what makes the deterministic simulation in `tests/` possible.
// Two audited exceptions: wiping ring's AEAD key schedules on drop
// (`format::secret::AeadKey`) and the wiping global allocator (`wipe`).
#![deny(unsafe_code)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod engine;
pub mod error;
pub mod exchange;
pub mod format;
pub mod keys;
pub mod settings;
pub mod state;
pub mod trust;
pub mod wipe;

pub use engine::{
    Channel, ControlMessage, Engine, EngineConfig, HeaderList, Metrics, MetricsSnapshot, Opened,
    Storage, TokenizedRecord,
};
pub use error::{ControlError, Error, KeyUnavailable};
pub use exchange::StateSizes;

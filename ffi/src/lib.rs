//! libkafka_e2ee.so: the C ABI, the JNI library and the librdkafka plugin.
//! This is the only crate of the workspace with `unsafe` code.

pub mod c_api;
pub mod host;
pub mod jni;
/// The librdkafka plugin (`conf_init`): not part of the C ABI header.
/// cbindgen:ignore
pub mod rdkafka;
/// Stop signals for long-running hosts (the CLI's keeper).
/// cbindgen:ignore
pub mod signals;
/// The state directory (`e2ee.state.dir`): sealed state and its key file.
/// cbindgen:ignore
pub mod state_dir;

/// Every block the Rust code of `libkafka_e2ee.so` (and of the `kafka-e2ee`
/// binary, which links this crate) frees is zeroized first, and no buffer
/// grows by an in-place `realloc` that leaves its old copy behind: snow's
/// Noise states, key-exchange payloads, state encodings and moved-out keys
/// included (core/src/wipe.rs; docs/PROTOCOL.md, threat model).
#[global_allocator]
static ALLOCATOR: kafka_e2ee_core::wipe::Wiping = kafka_e2ee_core::wipe::Wiping::SYSTEM;

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

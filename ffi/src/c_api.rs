//! The C ABI (c-header/kafka_e2ee.h). Conventions are in docs/FFI.md.

use std::ffi::c_char;

/// The version, NUL-terminated so that C can read it in place.
static VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "\0");

/// The version of this library, e.g. "0.1.0", as a static NUL-terminated
/// string. Never NULL; the caller must not free it.
#[no_mangle]
pub extern "C" fn kafka_e2ee_version() -> *const c_char {
    VERSION.as_ptr().cast()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn version_is_the_crate_version() {
        // SAFETY: kafka_e2ee_version returns a pointer to a static string that
        // ends in exactly one NUL.
        let version = unsafe { CStr::from_ptr(kafka_e2ee_version()) };
        assert_eq!(version.to_str(), Ok(env!("CARGO_PKG_VERSION")));
    }
}

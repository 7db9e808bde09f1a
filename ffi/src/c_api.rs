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

/// Success.
pub const KAFKA_E2EE_OK: i32 = 0;
/// A required pointer argument was NULL.
pub const KAFKA_E2EE_ERR_NULL: i32 = 1;
/// The buffer is too small for the answer; nothing was written. Try again
/// with a larger one (about 1 KiB per engine is enough).
pub const KAFKA_E2EE_ERR_BUFFER_TOO_SMALL: i32 = 2;
/// An internal error (a caught panic); nothing was written.
pub const KAFKA_E2EE_ERR_INTERNAL: i32 = 3;

/// Writes the counters of every kafka-e2ee engine alive in this process
/// (one per cluster and credential, shared by the librdkafka plugin's
/// clients and the JNI library's) into `buf` as one NUL-terminated JSON
/// object: `{"engines":[{"instance":"<hex id>","credential":"<name>",
/// "cluster":"<bootstrap servers>","records_opened":N,...}]}`; the counter
/// names are listed in docs/OPERATIONS.md. On success `*written` is the
/// length without the NUL. `buf` and `written` are written only on success.
///
/// # Safety
/// `buf` must be NULL or point to `len` writable bytes; `written` must be
/// NULL or point to a writable `size_t`.
#[no_mangle]
pub unsafe extern "C" fn kafka_e2ee_metrics_json(
    buf: *mut c_char,
    len: usize,
    written: *mut usize,
) -> i32 {
    std::panic::catch_unwind(|| {
        if buf.is_null() || written.is_null() {
            return KAFKA_E2EE_ERR_NULL;
        }
        let engines: Vec<String> = crate::host::live_engines()
            .iter()
            .map(|(cluster, engine)| crate::host::metrics_json(cluster, engine))
            .collect();
        let json = format!("{{\"engines\":[{}]}}", engines.join(","));
        if json.len() >= len {
            return KAFKA_E2EE_ERR_BUFFER_TOO_SMALL;
        }
        // SAFETY: buf has len > json.len() writable bytes (caller), and
        // written is writable (caller).
        unsafe {
            std::ptr::copy_nonoverlapping(json.as_ptr(), buf.cast::<u8>(), json.len());
            *buf.add(json.len()) = 0;
            *written = json.len();
        }
        KAFKA_E2EE_OK
    })
    .unwrap_or(KAFKA_E2EE_ERR_INTERNAL)
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

    #[test]
    fn metrics_json_checks_its_arguments() {
        let mut buf = [0 as c_char; 4096];
        let mut written = 7usize;
        // SAFETY: NULL arguments are refused before any write.
        let r = unsafe { kafka_e2ee_metrics_json(std::ptr::null_mut(), 0, &mut written) };
        assert_eq!((r, written), (KAFKA_E2EE_ERR_NULL, 7));
        // SAFETY: buf has 2 bytes; too small for any answer, so untouched.
        let r = unsafe { kafka_e2ee_metrics_json(buf.as_mut_ptr(), 2, &mut written) };
        assert_eq!(
            (r, written, buf[0]),
            (KAFKA_E2EE_ERR_BUFFER_TOO_SMALL, 7, 0)
        );
        // SAFETY: buf has buf.len() bytes.
        let r = unsafe { kafka_e2ee_metrics_json(buf.as_mut_ptr(), buf.len(), &mut written) };
        assert_eq!(r, KAFKA_E2EE_OK);
        // SAFETY: NUL-terminated on success.
        let text = unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        assert!(
            text.starts_with("{\"engines\":[") && text.ends_with("]}"),
            "{text}"
        );
        assert_eq!(written, text.len());
    }
}

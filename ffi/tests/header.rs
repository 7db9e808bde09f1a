//! c-header/kafka_e2ee.h must be what cbindgen makes of ffi/src today. Run
//! scripts/regen-header (KAFKA_E2EE_BLESS=1) to rewrite it after an ABI change.
#![allow(clippy::panic, clippy::expect_used)]

use std::path::PathBuf;

#[test]
fn committed_header_matches_the_source() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header_path = crate_dir.join("../c-header/kafka_e2ee.h");
    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml"))
        .expect("ffi/cbindgen.toml must parse");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen could not generate the header from ffi/src");
    let mut generated = Vec::new();
    bindings.write(&mut generated);

    if std::env::var_os("KAFKA_E2EE_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&header_path, &generated).expect("cannot write c-header/kafka_e2ee.h");
        return;
    }
    let committed = std::fs::read(&header_path).unwrap_or_default();
    if committed != generated {
        panic!(
            "c-header/kafka_e2ee.h is out of date with ffi/src (or missing).\n\
             Regenerate it with: scripts/regen-header\n\
             (that is: KAFKA_E2EE_BLESS=1 cargo test -p kafka-e2ee-ffi --test header)\n\
             and commit the result.\n\
             --- generated ---\n{}",
            String::from_utf8_lossy(&generated)
        );
    }
}

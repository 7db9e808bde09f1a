//! Reading and writing the CLI's files: secrets are created owner-only
//! (0600), and nothing is overwritten without `--force`.

use std::fs;
use std::io::Write as _;
use std::path::Path;

use zeroize::Zeroizing;

#[derive(Clone, Copy)]
pub enum Mode {
    /// Owner read/write only.
    Secret,
    /// World-readable.
    Public,
}

pub fn refuse_existing(path: &Path) -> Result<(), String> {
    if path.exists() {
        return Err(format!(
            "{} already exists; pass --force to overwrite it",
            path.display()
        ));
    }
    Ok(())
}

pub fn create_private_dir(dir: &Path) -> Result<(), String> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt as _;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| format!("cannot create directory {}: {e}", dir.display()))
}

pub fn write(path: &Path, bytes: &[u8], mode: Mode, force: bool) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    if force && path.exists() {
        // Remove rather than truncate, so the new file gets our permissions
        // and not those of the file it replaces.
        fs::remove_file(path).map_err(fail)?;
    }
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(match mode {
            Mode::Secret => 0o600,
            Mode::Public => 0o644,
        });
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            format!(
                "{} already exists; pass --force to overwrite it",
                path.display()
            )
        } else {
            fail(e)
        }
    })?;
    file.write_all(bytes).map_err(fail)?;
    file.sync_all().map_err(fail)
}

pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

pub fn read_secret(path: &Path) -> Result<Zeroizing<Vec<u8>>, String> {
    read(path).map(Zeroizing::new)
}

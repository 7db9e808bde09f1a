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

/// Replaces `path` atomically: a temporary file beside it, synced, then
/// renamed over it, then the directory synced. A crash leaves either the old
/// file or the new one, never a torn one.
pub fn replace_atomic(path: &Path, bytes: &[u8], mode: Mode) -> Result<(), String> {
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", path.display());
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(fail(e)),
    }
    write(&tmp, bytes, mode, false)?;
    fs::rename(&tmp, path).map_err(fail)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        // Best effort: some filesystems refuse to open a directory for sync.
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Whether group or others may read the file (a secret should be 0600).
#[cfg(unix)]
pub fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::PermissionsExt as _;
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

#[cfg(not(unix))]
pub fn readable_by_others(_path: &Path) -> Option<u32> {
    None
}

/// Why someone other than the file's owner (or root) could change it: its
/// mode lets group or others write, or another user owns it. A trust file
/// or credential anyone else may write lets them trust their own authority
/// or swap in their own key. None if only the owner may write it (or it
/// cannot be read: the caller reports that).
#[cfg(unix)]
pub fn writable_by_others(path: &Path) -> Option<String> {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let meta = fs::metadata(path).ok()?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        return Some(format!(
            "has mode {mode:03o}: {who} may write it; only its owner may (chmod go-w {})",
            path.display()
        ));
    }
    // This process's effective uid without unsafe code (the CLI forbids
    // it): Linux gives /proc/self that owner. Elsewhere the check is skipped.
    let Ok(me) = fs::metadata("/proc/self").map(|m| m.uid()) else {
        return None;
    };
    let owner = meta.uid();
    if owner != me && owner != 0 {
        return Some(format!(
            "is owned by uid {owner}, neither this user (uid {me}) nor root: that user may              write it (chown {me} {})",
            path.display()
        ));
    }
    None
}

#[cfg(not(unix))]
pub fn writable_by_others(_path: &Path) -> Option<String> {
    None
}

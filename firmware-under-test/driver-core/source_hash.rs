//! The SHA-256 that names the driver-core source compiled into a program.
//!
//! Shared, by `#[path]`, between the board firmware's build script (which embeds the hash in
//! the ELF's firmware identity) and the harness's build script (which records the hash of the
//! core the `sim` rig runs), so `iohil flash --dry-run` can check that both were built from
//! the same core. Not part of the driver-core crate itself.
//!
//! Hashed: `Cargo.toml` and every file under `src/`, in byte order of their paths relative to
//! the driver-core directory (`/` separators); for each file its path, a NUL byte, its length
//! as a little-endian `u64`, and its bytes.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// The files that make the core's source, relative paths sorted, for `rerun-if-changed` too.
pub fn core_source_files(core_dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut files = vec![("Cargo.toml".to_owned(), core_dir.join("Cargo.toml"))];
    let mut pending = vec![core_dir.join("src")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let relative = path
                    .strip_prefix(core_dir)
                    .map_err(std::io::Error::other)?
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/");
                files.push((relative, path));
            }
        }
    }
    files.sort();
    Ok(files)
}

/// SHA-256 of the core's source, as described in the module documentation.
pub fn core_source_sha256(core_dir: &Path) -> std::io::Result<[u8; 32]> {
    let mut hasher = Sha256::new();
    for (relative, path) in core_source_files(core_dir)? {
        let bytes = std::fs::read(&path)?;
        hasher.update(relative.as_bytes());
        hasher.update([0u8]);
        hasher.update((bytes.len() as u64).to_le_bytes());
        hasher.update(&bytes);
    }
    Ok(hasher.finalize().into())
}

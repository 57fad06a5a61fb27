//! `manifest.json`: the SHA-256 of every file of a run directory, and its verification.
//!
//! The manifest lists every regular file under the run directory except itself: the evidence
//! (`results.json`, traces, `fuzz.json`) and the report views. [`verify`] recomputes it and
//! names every file that changed, disappeared or appeared since. The manifest cannot vouch
//! for itself: `iohil run` and `iohil report` print its SHA-256 so it can be recorded outside
//! the run directory (a CI log, a review record).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::run::{write_atomic, RunError};

/// File name.
pub const MANIFEST_FILE: &str = "manifest.json";
/// Version of the manifest format.
pub const MANIFEST_FORMAT_VERSION: u32 = 1;

/// One file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Path relative to the run directory, `/`-separated.
    pub path: String,
    /// Size, bytes.
    pub bytes: u64,
    /// SHA-256, lowercase hex.
    pub sha256: String,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`MANIFEST_FORMAT_VERSION`].
    pub format_version: u32,
    /// Run ID.
    pub run_id: String,
    /// When written, UTC.
    pub generated_utc: String,
    /// Every file but the manifest, sorted by path.
    pub files: Vec<FileEntry>,
}

/// The report views: in the manifest, but not evidence.
const VIEWS: &[&str] = &[
    super::REPORT_JSON,
    super::REPORT_HTML,
    super::JUNIT_XML,
    super::SUMMARY_MD,
];

/// Every file under `run_dir` but the manifest, hashed, sorted by path. Temporary files of an
/// atomic write that never completed (`.*.tmp`) are included, and [`verify`] names them.
pub fn hash_files(run_dir: &Path) -> Result<Vec<FileEntry>, RunError> {
    let mut paths = Vec::new();
    collect(run_dir, run_dir, &mut paths)?;
    let mut entries = Vec::with_capacity(paths.len());
    for (relative, path) in paths {
        if relative == MANIFEST_FILE {
            continue;
        }
        let is_link = std::fs::symlink_metadata(&path)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        // A symbolic link is recorded by what it points at, never followed: content outside
        // the run directory is not this run's evidence.
        let bytes = if is_link {
            let target = std::fs::read_link(&path).map_err(|e| RunError::Io {
                action: "read link",
                path: path.clone(),
                source: e,
            })?;
            format!("symlink -> {}", target.display()).into_bytes()
        } else {
            std::fs::read(&path).map_err(|e| RunError::Io {
                action: "read",
                path: path.clone(),
                source: e,
            })?
        };
        entries.push(FileEntry {
            path: relative,
            bytes: bytes.len() as u64,
            sha256: crate::sha256_hex(&bytes),
        });
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(entries)
}

/// The evidence files (every file but the manifest and the report views).
pub fn evidence_files(run_dir: &Path) -> Result<Vec<FileEntry>, RunError> {
    Ok(hash_files(run_dir)?
        .into_iter()
        .filter(|f| !VIEWS.contains(&f.path.as_str()))
        .collect())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), RunError> {
    let entries = std::fs::read_dir(dir).map_err(|e| RunError::Io {
        action: "list",
        path: dir.to_owned(),
        source: e,
    })?;
    for entry in entries {
        let entry = entry.map_err(|e| RunError::Io {
            action: "list",
            path: dir.to_owned(),
            source: e,
        })?;
        let path = entry.path();
        // Symlinks are not followed: a link out of the run directory is not its evidence.
        let file_type = entry.file_type().map_err(|e| RunError::Io {
            action: "inspect",
            path: path.clone(),
            source: e,
        })?;
        if file_type.is_dir() {
            collect(root, &path, out)?;
        } else if file_type.is_file() || file_type.is_symlink() {
            let relative = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join("/");
            out.push((relative, path));
        }
    }
    Ok(())
}

/// Writes `manifest.json` for `run_dir`; returns its SHA-256.
pub fn write(run_dir: &Path, run_id: &str) -> Result<String, RunError> {
    let manifest = Manifest {
        format_version: MANIFEST_FORMAT_VERSION,
        run_id: run_id.to_owned(),
        generated_utc: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        files: hash_files(run_dir)?,
    };
    let path = run_dir.join(MANIFEST_FILE);
    let bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| RunError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    write_atomic(&path, &bytes)?;
    Ok(crate::sha256_hex(&bytes))
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Verification {
    /// Files listed and unchanged.
    pub unchanged: usize,
    /// Files whose content differs: (path, recorded SHA-256, current SHA-256).
    pub changed: Vec<(String, String, String)>,
    /// Files listed but gone.
    pub missing: Vec<String>,
    /// Files present but not listed.
    pub unlisted: Vec<String>,
    /// Leftovers of an atomic write that never completed (`.*.tmp`), listed or not.
    pub incomplete_writes: Vec<String>,
    /// Symbolic links (recorded by their target, never followed).
    pub links: Vec<String>,
    /// SHA-256 of the manifest file as read.
    pub manifest_sha256: String,
}

impl Verification {
    /// Whether the run directory matches its manifest exactly.
    pub fn intact(&self) -> bool {
        self.changed.is_empty()
            && self.missing.is_empty()
            && self.unlisted.is_empty()
            && self.incomplete_writes.is_empty()
            && self.links.is_empty()
    }
}

/// A manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// No manifest.
    #[error("{0} has no manifest.json (hint: `iohil report <run-dir>` writes one; a run that never finished has none)")]
    NoManifest(PathBuf),
    /// Not a manifest.
    #[error("{path} is not a valid manifest: {message}")]
    Format {
        /// File.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// I/O.
    #[error(transparent)]
    Run(#[from] RunError),
}

/// Recomputes the manifest of `run_dir` and compares it with `manifest.json`.
pub fn verify(run_dir: &Path) -> Result<Verification, VerifyError> {
    let path = run_dir.join(MANIFEST_FILE);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(VerifyError::NoManifest(run_dir.to_owned()))
        }
        Err(e) => {
            return Err(VerifyError::Run(RunError::Io {
                action: "read",
                path,
                source: e,
            }))
        }
    };
    let manifest: Manifest = serde_json::from_slice(&bytes).map_err(|e| VerifyError::Format {
        path: path.clone(),
        message: e.to_string(),
    })?;
    let current = hash_files(run_dir)?;
    let mut result = Verification {
        manifest_sha256: crate::sha256_hex(&bytes),
        ..Verification::default()
    };
    for recorded in &manifest.files {
        match current.iter().find(|f| f.path == recorded.path) {
            Some(now) if now.sha256 == recorded.sha256 => result.unchanged += 1,
            Some(now) => result.changed.push((
                recorded.path.clone(),
                recorded.sha256.clone(),
                now.sha256.clone(),
            )),
            None => result.missing.push(recorded.path.clone()),
        }
    }
    for now in &current {
        if !manifest.files.iter().any(|f| f.path == now.path) {
            result.unlisted.push(now.path.clone());
        }
        if is_incomplete_write(&now.path) {
            result.incomplete_writes.push(now.path.clone());
        }
        let is_link = std::fs::symlink_metadata(run_dir.join(&now.path))
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link {
            result.links.push(now.path.clone());
        }
    }
    Ok(result)
}

/// Whether `path` is the temporary file of an atomic write (`write_atomic` names them
/// `.<name>.tmp`).
pub fn is_incomplete_write(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.starts_with('.') && name.ends_with(".tmp")
}

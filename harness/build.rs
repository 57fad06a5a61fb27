//! Embeds the git commit the harness is built from, so every report names it, and the SHA-256
//! of the driver-core source the `sim` rig runs, so `iohil flash --dry-run` can check that a
//! board ELF carries the same core.

use std::path::Path;
use std::process::Command;

#[path = "../firmware-under-test/driver-core/source_hash.rs"]
mod source_hash;

fn main() {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let suffix = if dirty { "-dirty" } else { "" };
    println!("cargo:rustc-env=IOHIL_GIT_COMMIT={commit}{suffix}");
    if let Some(git_dir) = git(&["rev-parse", "--git-dir"]) {
        println!("cargo:rerun-if-changed={git_dir}/HEAD");
        println!("cargo:rerun-if-changed={git_dir}/index");
    }

    let core_dir = Path::new("../firmware-under-test/driver-core");
    let files = source_hash::core_source_files(core_dir).expect("list driver-core sources");
    for (_, path) in &files {
        println!("cargo:rerun-if-changed={}", path.display());
    }
    println!("cargo:rerun-if-changed=../firmware-under-test/driver-core/source_hash.rs");
    let hash = source_hash::core_source_sha256(core_dir).expect("hash driver-core sources");
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    println!("cargo:rustc-env=IOHIL_CORE_SOURCE_SHA256={hex}");
}

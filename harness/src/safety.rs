//! Run safety on a real rig: one run per rig at a time (a lock file), and the abort request
//! (Ctrl-C, SIGTERM, SIGHUP) that the bench rig turns into its safe state between two polls.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// A request to stop the run, and why.
#[derive(Debug, Default)]
pub struct Abort {
    requested: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Abort {
    /// No abort requested yet.
    pub fn new() -> Arc<Abort> {
        Arc::new(Abort::default())
    }

    /// Requests an abort; the first reason is kept.
    pub fn request(&self, reason: &str) {
        let mut r = self
            .reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if r.is_none() {
            *r = Some(reason.to_owned());
        }
        self.requested.store(true, Ordering::SeqCst);
    }

    /// Whether an abort was requested.
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::SeqCst)
    }

    /// Why, if requested.
    pub fn reason(&self) -> Option<String> {
        if !self.is_requested() {
            return None;
        }
        self.reason
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Turns SIGINT, SIGTERM and SIGHUP into abort requests (a thread of its own). The rig then
/// reaches its safe state within a poll; a third Ctrl-C exits at once (code 130), without it.
pub fn install_signal_handlers(abort: Arc<Abort>) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut int, mut term, mut hup) = runtime.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("iohil-signals".into())
        .spawn(move || {
            runtime.block_on(async move {
                let mut interrupts = 0u32;
                loop {
                    let name = tokio::select! {
                        _ = int.recv() => "SIGINT (Ctrl-C)",
                        _ = term.recv() => "SIGTERM",
                        _ = hup.recv() => "SIGHUP",
                    };
                    if abort.is_requested() && name.starts_with("SIGINT") {
                        interrupts += 1;
                        if interrupts >= 3 {
                            eprintln!(
                                "iohil: third Ctrl-C: exiting WITHOUT the safe state; check the rig"
                            );
                            std::process::exit(130);
                        }
                        eprintln!(
                            "iohil: already stopping (a bench rig: board reset, load emergency stop); Ctrl-C {} more time(s) exits at once, without that",
                            3 - interrupts
                        );
                        continue;
                    }
                    eprintln!(
                        "iohil: {name}: stopping after the trial under way (a bench rig reaches its safe state first)"
                    );
                    interrupts = 1;
                    abort.request(name);
                }
            });
        })?;
    Ok(())
}

/// The lock that keeps one run per rig. Released when dropped (and by the OS if the process
/// dies).
#[derive(Debug)]
pub struct RigLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

/// Directory of rig lock files: `IOHIL_LOCK_DIR`, else the system's temporary directory.
pub fn lock_dir() -> PathBuf {
    std::env::var_os("IOHIL_LOCK_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
}

impl RigLock {
    /// Takes the lock of rig `rig_id` (a checked identifier), or says who holds it.
    pub fn acquire(rig_id: &str) -> Result<RigLock, String> {
        let path = lock_dir().join(format!("iohil-rig-{rig_id}.lock"));
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| format!("cannot open the rig lock {}: {e}", path.display()))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(format!(
                    "rig {rig_id} is busy: another iohil run holds {} ({})",
                    path.display(),
                    holder.trim()
                ));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
        let holder = format!(
            "pid {} on {} since {}",
            std::process::id(),
            crate::run::host_name(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
        );
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = file.write_all(holder.as_bytes());
        let _ = file.flush();
        Ok(RigLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_of_the_same_rig_is_refused_with_the_holder() {
        let id = format!("unit-{}", std::process::id());
        let first = RigLock::acquire(&id).expect("first lock");
        let e = RigLock::acquire(&id).expect_err("second lock");
        assert!(e.contains("is busy"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        RigLock::acquire(&id).expect("free again");
    }

    #[test]
    fn the_first_abort_reason_is_kept() {
        let a = Abort::new();
        assert_eq!(a.reason(), None);
        a.request("SIGTERM");
        a.request("timeout");
        assert_eq!(a.reason().as_deref(), Some("SIGTERM"));
    }
}

//! Proof that tests left no server behind: every process testkit starts has
//! testkit's temporary-directory prefix on its command line.

use std::path::Path;

/// Kills any process whose command line mentions a testkit temporary
/// directory and returns a description of each, so that the caller can fail.
pub fn kill_testkit_processes() -> Vec<String> {
    let me = std::process::id();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(testkit::TEMP_PREFIX) {
            if let Ok(pid_t) = libc::pid_t::try_from(pid) {
                // Safety: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid_t, libc::SIGKILL) };
            }
            found.push(format!("pid {pid}: {}", cmdline.trim()));
        }
    }
    found
}

/// Removes testkit temporary directories that no process uses any more (the
/// data of servers kept in a `static`, which is never dropped).
pub fn remove_stale_temp_dirs() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(testkit::TEMP_PREFIX)
            && Path::new(&entry.path()).is_dir()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

//! Proof that tests left no server behind: every process testkit starts has
//! its temporary directory on its command line (etcd) or as its working
//! directory (redis-server), and that directory's name carries the test
//! run's name.

use std::path::Path;

/// Kills any process whose command line mentions a temporary directory of
/// the test run `run` and returns a description of each, so that the caller
/// can fail.
pub fn kill_testkit_processes(run: &str) -> Vec<String> {
    let marker = format!("{}{run}-", testkit::TEMP_PREFIX);
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
        // redis-server rewrites its command line to "redis-server host:port",
        // but it works in its `--dir`, so its current directory tells too.
        let cwd = std::fs::read_link(entry.path().join("cwd")).unwrap_or_default();
        if cmdline.contains(&marker) || cwd.to_string_lossy().contains(&marker) {
            if let Ok(pid_t) = libc::pid_t::try_from(pid) {
                // Safety: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid_t, libc::SIGKILL) };
            }
            found.push(format!("pid {pid}: {}", cmdline.trim()));
        }
    }
    found
}

/// Removes the temporary directories of the test run `run`, whose servers are
/// gone (the data of servers kept in a `static`, which is never dropped).
pub fn remove_temp_dirs(run: &str) {
    let marker = format!("{}{run}-", testkit::TEMP_PREFIX);
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(&marker)
            && Path::new(&entry.path()).is_dir()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

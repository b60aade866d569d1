//! Spawning children that cannot outlive the test process.
//!
//! `PR_SET_PDEATHSIG` makes the kernel send a signal to a child when the
//! *thread* that forked it exits, not the process. Tests run on short-lived
//! threads (and a restarted member may be spawned from any of them), so every
//! child is forked by one helper thread that lives until the process exits.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Sender, channel};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::TestkitError;

type SpawnRequest = (Command, Sender<std::io::Result<Child>>);

static SPAWNER: OnceLock<Mutex<Sender<SpawnRequest>>> = OnceLock::new();

fn spawner() -> &'static Mutex<Sender<SpawnRequest>> {
    SPAWNER.get_or_init(|| {
        let (requests, incoming) = channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testkit-spawner".into())
            .spawn(move || {
                for (mut command, reply) in incoming {
                    // The receiver may have given up; nothing to do then.
                    let _ = reply.send(command.spawn());
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| {
                eprintln!("testkit: cannot start the spawner thread: {e}")
            });
        Mutex::new(requests)
    })
}

/// Spawns `command` with its output appended to `log`, killed by the kernel
/// if this process dies.
pub(crate) fn spawn_child(
    mut command: Command,
    log: &Path,
) -> Result<Child, TestkitError> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| TestkitError::io(format!("opening {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| TestkitError::io(format!("opening {}", log.display()), e))?;
    command.stdin(Stdio::null()).stdout(out).stderr(err);
    {
        use std::os::unix::process::CommandExt;
        // Safety: the closure runs in the child between fork and exec, where
        // only async-signal-safe calls are allowed; prctl and getppid are.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() == 1 {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    let program = format!("{:?}", command.get_program());
    let (reply, answer) = channel();
    spawner()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
        .send((command, reply))
        .map_err(|_| {
            TestkitError::io(
                "spawning",
                std::io::Error::other("spawner thread is gone"),
            )
        })?;
    answer
        .recv()
        .map_err(|_| {
            TestkitError::io(
                "spawning",
                std::io::Error::other("spawner thread is gone"),
            )
        })?
        .map_err(|e| TestkitError::io(format!("spawning {program}"), e))
}

/// Sends `signal` to a child.
pub(crate) fn signal(child: &Child, signal: libc::c_int) -> Result<(), TestkitError> {
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| {
        TestkitError::io("signalling", std::io::Error::other("pid out of range"))
    })?;
    // Safety: kill(2) has no memory-safety preconditions; `pid` is our own
    // child, which we have not waited for, so it cannot have been reused.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(TestkitError::io(
            format!("sending signal {signal} to pid {pid}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Kills and reaps a child, ignoring one that has already exited.
pub(crate) fn kill_and_wait(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last `lines` lines of a log file, for error messages.
pub(crate) fn log_tail(log: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `ready` every 50 ms until it is true, the child exits, or `limit`
/// passes.
pub(crate) fn wait_until_ready(
    what: &str,
    child: &mut Child,
    log: &Path,
    limit: Duration,
    mut ready: impl FnMut() -> bool,
) -> Result<(), TestkitError> {
    let deadline = Instant::now() + limit;
    loop {
        if ready() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(TestkitError::Exited {
                what: what.to_string(),
                status: status.to_string(),
                log: log.to_path_buf(),
                tail: log_tail(log, 20),
            });
        }
        if Instant::now() >= deadline {
            return Err(TestkitError::NotReady {
                what: what.to_string(),
                seconds: limit.as_secs(),
                log: log.to_path_buf(),
                tail: log_tail(log, 20),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

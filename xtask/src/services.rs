//! `cargo xtask services up|down|status`: a long-lived etcd on 127.0.0.1:2379
//! (keeping ten minutes of history) and Redis on 127.0.0.1:6379, data under
//! `target/services/`, for the two-terminal interactive examples.
//!
//! A healthy server already on the port is reused, never fought: `up` says so
//! and `down` leaves it alone (it only stops what `up` started, by pid file).

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::{Binary, etcd_is_healthy, find_binary, redis_answers};

use crate::{Result, ensure, target_dir};

/// One long-lived service.
struct Service {
    name: &'static str,
    port: u16,
    /// What its process's command line contains, to check a pid file is ours.
    program: &'static str,
    healthy: fn(SocketAddr) -> bool,
}

const ETCD: Service = Service {
    name: "etcd",
    port: 2379,
    program: "etcd",
    healthy: etcd_is_healthy,
};
const REDIS: Service = Service {
    name: "redis",
    port: 6379,
    program: "redis-server",
    healthy: redis_answers,
};

impl Service {
    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn dir(&self) -> PathBuf {
        target_dir().join("services").join(self.name)
    }

    fn pid_file(&self) -> PathBuf {
        target_dir()
            .join("services")
            .join(format!("{}.pid", self.name))
    }

    fn log_file(&self) -> PathBuf {
        target_dir()
            .join("services")
            .join(format!("{}.log", self.name))
    }

    fn command(&self) -> Result<Command> {
        let binary = match self.name {
            "etcd" => Binary::Etcd,
            _ => Binary::RedisServer,
        };
        let mut command = Command::new(find_binary(binary).map_err(|e| e.to_string())?);
        match self.name {
            "etcd" => {
                command
                    .arg("--name=services")
                    .arg("--data-dir")
                    .arg(self.dir())
                    .arg("--listen-client-urls=http://127.0.0.1:2379")
                    .arg("--advertise-client-urls=http://127.0.0.1:2379")
                    .arg("--listen-peer-urls=http://127.0.0.1:2380")
                    .arg("--initial-advertise-peer-urls=http://127.0.0.1:2380")
                    .arg("--initial-cluster=services=http://127.0.0.1:2380")
                    // Keep ten minutes of history. Without compaction every
                    // write stays, and repeated bench runs grow the database
                    // to etcd's 2 GB quota, where it refuses all writes.
                    .arg("--auto-compaction-mode=periodic")
                    .arg("--auto-compaction-retention=10m")
                    .arg("--logger=zap")
                    .arg("--log-level=warn");
            }
            _ => {
                command
                    .args([
                        "--bind",
                        "127.0.0.1",
                        "--port",
                        "6379",
                        "--daemonize",
                        "no",
                    ])
                    .arg("--dir")
                    .arg(self.dir());
            }
        }
        Ok(command)
    }

    /// The pid from our pid file, if that process is still the server we started.
    fn our_pid(&self) -> Option<u32> {
        let pid: u32 = std::fs::read_to_string(self.pid_file())
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(self.program)
            .then_some(pid)
    }

    fn up(&self) -> Result {
        let addr = self.addr();
        if (self.healthy)(addr) {
            let owner = match self.our_pid() {
                Some(pid) => format!("started earlier by xtask, pid {pid}"),
                None => "not ours: reusing it".to_string(),
            };
            eprintln!("{}: already up on {addr} ({owner})", self.name);
            return Ok(());
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
            return Err(format!(
                "{addr} is taken by something that is not a healthy {}: stop it, or point \
                 the examples elsewhere with {}",
                self.name,
                if self.name == "etcd" {
                    "ETCD_ENDPOINTS"
                } else {
                    "REDIS_URL"
                }
            ));
        }
        std::fs::create_dir_all(self.dir())
            .map_err(|e| format!("creating {}: {e}", self.dir().display()))?;
        let log = File::create(self.log_file())
            .map_err(|e| format!("creating the log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("opening the log: {e}"))?;
        let mut command = self.command()?;
        {
            use std::os::unix::process::CommandExt;
            // Its own process group: a Ctrl-C in this terminal must not stop it.
            command.process_group(0);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.name))?;
        std::fs::write(self.pid_file(), child.id().to_string())
            .map_err(|e| format!("writing {}: {e}", self.pid_file().display()))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while !(self.healthy)(addr) {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} did not become healthy on {addr} within 20 s; see {}",
                    self.name,
                    self.log_file().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "{}: up on {addr} (pid {}, log {})",
            self.name,
            child.id(),
            self.log_file().display()
        );
        Ok(())
    }

    fn down(&self) -> Result {
        let Some(pid) = self.our_pid() else {
            let note = if (self.healthy)(self.addr()) {
                " (one is running, but xtask did not start it)"
            } else {
                ""
            };
            eprintln!("{}: nothing of ours to stop{note}", self.name);
            let _ = std::fs::remove_file(self.pid_file());
            return Ok(());
        };
        let pid_t = libc::pid_t::try_from(pid).map_err(|_| format!("bad pid {pid}"))?;
        // Safety: kill(2) has no memory-safety preconditions; the pid was
        // checked above to be our server's.
        unsafe { libc::kill(pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::path::Path::new(&format!("/proc/{pid}")).exists()
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        if std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
            && self.our_pid().is_some()
        {
            // Safety: as above.
            unsafe { libc::kill(pid_t, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(self.pid_file());
        eprintln!("{}: stopped (pid {pid})", self.name);
        Ok(())
    }

    fn status(&self) {
        let health = if (self.healthy)(self.addr()) {
            "healthy"
        } else {
            "not answering"
        };
        let owner = match self.our_pid() {
            Some(pid) => format!("started by xtask, pid {pid}"),
            None => "not started by xtask".to_string(),
        };
        println!("{:<6} {}  {health}  ({owner})", self.name, self.addr());
    }
}

/// Starts both services (or reuses healthy ones already there).
pub fn up() -> Result {
    ensure::servers()?;
    ETCD.up()?;
    REDIS.up()?;
    eprintln!("examples use these by default; `cargo xtask services down` stops them");
    Ok(())
}

/// Stops the services that `up` started.
pub fn down() -> Result {
    ETCD.down()?;
    REDIS.down()
}

/// Prints whether each service answers and who started it.
pub fn status() -> Result {
    ETCD.status();
    REDIS.status();
    Ok(())
}

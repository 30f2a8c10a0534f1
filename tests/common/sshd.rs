//! Real OpenSSH servers on loopback for the SSH tests: one `/usr/sbin/sshd` process per host
//! address (127.0.0.10, .11, ...), each with its own generated ed25519 host key and a free
//! port, all accepting one generated client key; a `known_hosts` file naming every host. Hosts
//! share this machine through per-host roots under the lab directory.
//!
//! The lab directory is short (`/tmp/flXXXXXX`) and readable by other users, so a non-root
//! test user can read the authorized key. sshd logs (LogLevel ERROR) go to `sshd-N.log` there.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";

/// The sshd binary: `/usr/sbin/sshd`, or `FLOTILLA_TEST_SSHD` (the skip test points it at a
/// path that does not exist).
pub fn sshd_path() -> PathBuf {
    std::env::var_os("FLOTILLA_TEST_SSHD").map_or_else(|| PathBuf::from(SSHD), PathBuf::from)
}

/// Whether the SSH tests can run here. Without sshd they are skipped with a line `cargo test`
/// shows (see [`super::skip`]), unless the environment variable `CI` is set: there a missing
/// sshd fails the test.
#[track_caller]
pub fn available(test: &str) -> bool {
    let sshd = sshd_path();
    if sshd.is_file() {
        return true;
    }
    super::skip(
        test,
        &format!("{} is missing (apt-get install openssh-server)", sshd.display()),
    );
    false
}

/// Generates an ed25519 key pair without a passphrase at `path` and `path.pub` (replacing any).
pub fn keygen(path: &Path, comment: &str) {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh-keygen (apt-get install openssh-client)");
    assert!(
        out.status.success(),
        "ssh-keygen {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `type base64` of a public key file (the comment dropped).
fn public_key(path: &Path) -> String {
    let text = std::fs::read_to_string(path).expect("read public key");
    text.split_whitespace().take(2).collect::<Vec<_>>().join(" ")
}

/// A port on `address` that nothing listens on right now.
pub fn free_port(address: &str) -> u16 {
    let l = TcpListener::bind((address, 0)).expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

fn accepts(addr: &SocketAddr) -> bool {
    TcpStream::connect_timeout(addr, Duration::from_millis(200)).is_ok()
}

pub struct SshLab {
    /// Short path: keys, configs, pid files, logs and host roots live here.
    pub dir: tempfile::TempDir,
    /// The private key every sshd of the lab accepts (for any user: `AuthorizedKeysFile` is
    /// this key's `.pub`).
    pub client_key: PathBuf,
    /// One line per host, `[127.0.0.N]:PORT ssh-ed25519 AAAA...`, written at start.
    pub known_hosts: PathBuf,
    pub hosts: Vec<Sshd>,
}

pub struct Sshd {
    pub index: usize,
    /// `127.0.0.N`
    pub address: String,
    pub port: u16,
    /// `ssh-ed25519 AAAA...` of the current host key.
    pub host_pub: String,
    pub host_key: PathBuf,
    /// This host's root directory (created, empty).
    pub root: PathBuf,
    /// sshd's stderr (`-e`).
    pub log: PathBuf,
    /// sshd's `LogLevel`: ERROR unless a test asks for more ([`Sshd::log_connections`]).
    log_level: &'static str,
    child: Option<Child>,
    config: PathBuf,
}

impl SshLab {
    /// Starts `n` sshd processes on 127.0.0.10 .. 127.0.0.(9+n), and waits until each one
    /// accepts connections. Panics (with sshd's log) if one cannot be started.
    pub fn start(n: usize) -> SshLab {
        assert!(n <= 240, "at most 240 hosts on 127.0.0.10-249");
        std::fs::create_dir_all("/run/sshd").expect("create /run/sshd (sshd's privilege separation dir)");
        let dir = tempfile::Builder::new()
            .prefix("fl")
            .tempdir_in("/tmp")
            .expect("lab tempdir");
        super::set_mode(dir.path(), 0o755);
        let client_key = dir.path().join("client_key");
        keygen(&client_key, "flotilla-test-client");
        super::set_mode(&client_key.with_extension("pub"), 0o644);
        let mut lab = SshLab {
            known_hosts: dir.path().join("known_hosts"),
            client_key,
            hosts: Vec::with_capacity(n),
            dir,
        };
        for i in 0..n {
            let host_key = lab.dir.path().join(format!("host_key_{i}"));
            keygen(&host_key, &format!("flotilla-test-host-{i}"));
            let root = lab.dir.path().join(format!("root{i}"));
            std::fs::create_dir_all(&root).expect("mkdir host root");
            lab.hosts.push(Sshd {
                index: i,
                address: format!("127.0.0.{}", 10 + i),
                port: 0,
                host_pub: public_key(&host_key.with_extension("pub")),
                config: lab.dir.path().join(format!("sshd_config_{i}")),
                log: lab.dir.path().join(format!("sshd-{i}.log")),
                log_level: "ERROR",
                host_key,
                root,
                child: None,
            });
        }
        let authorized = lab.client_key.with_extension("pub");
        // Spawn every sshd first, then wait for them together; a port taken in between is
        // retried with another one.
        for attempt in 0..5 {
            for h in lab.hosts.iter_mut().filter(|h| h.child.is_none()) {
                h.port = free_port(&h.address);
                h.write_config(&authorized);
                h.spawn();
            }
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut failed = Vec::new();
            for h in lab.hosts.iter_mut() {
                if !h.wait_ready(deadline) {
                    failed.push(format!("{}:{}: {}", h.address, h.port, h.log_text()));
                    h.kill();
                }
            }
            if failed.is_empty() {
                break;
            }
            assert!(attempt < 4, "sshd did not start: {}", failed.join("\n"));
        }
        lab.write_known_hosts();
        lab
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Rewrites `known_hosts` with every host's current key.
    pub fn write_known_hosts(&self) {
        let text: String = self
            .hosts
            .iter()
            .map(|h| format!("{} {}\n", h.known_hosts_name(), h.host_pub))
            .collect();
        std::fs::write(&self.known_hosts, text).expect("write known_hosts");
    }

    /// Another key pair in the lab (not authorized anywhere); returns the private key's path.
    pub fn keygen(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        keygen(&p, name);
        p
    }

    /// A new empty directory under the lab, for an extra host root.
    pub fn new_root(&self, name: &str) -> PathBuf {
        let p = self.path().join(name);
        std::fs::create_dir_all(&p).expect("mkdir root");
        p
    }

    /// A `flotilla.toml` for fleet "acme" whose hosts are this lab's (see
    /// [`SshLab::defaults_toml`]), trusting `public_key`.
    pub fn fleet_toml(&self, public_key: &str) -> String {
        format!(
            "[fleet]\nname = \"acme\"\n\n[defaults]\n{}\n[trust]\nkeys = [\"{public_key}\"]\n",
            self.defaults_toml()
        )
    }

    /// `[defaults]` lines for a fleet whose hosts are this lab's: ssh as root with the lab's
    /// client key and known_hosts.
    pub fn defaults_toml(&self) -> String {
        format!(
            "transport = \"ssh\"\nuser = \"root\"\nidentity_file = \"{}\"\nknown_hosts = \"{}\"\nconnect_timeout = \"10s\"\n",
            self.client_key.display(),
            self.known_hosts.display()
        )
    }

    /// A `[[host]]` table for sshd `i` with that host's root; `extra` is added as is.
    pub fn host_toml(&self, i: usize, name: &str, env: &str, extra: &str) -> String {
        let h = &self.hosts[i];
        format!(
            "[[host]]\nname = \"{name}\"\nenvironment = \"{env}\"\naddress = \"{}\"\nport = {}\nroot = \"{}\"\n{extra}\n",
            h.address,
            h.port,
            h.root.display()
        )
    }

    /// Runs `command` on host `i` with the plain `ssh` CLI (strict host keys, batch mode):
    /// the harness's own check, independent of Flotilla's transport.
    pub fn ssh(&self, i: usize, user: &str, key: &Path, command: &str) -> Output {
        let h = &self.hosts[i];
        Command::new("ssh")
            .args([
                "-F",
                "/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=yes",
            ])
            .args(["-o", "IdentitiesOnly=yes", "-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR"])
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .arg("-i")
            .arg(key)
            .arg("-p")
            .arg(h.port.to_string())
            .arg(format!("{user}@{}", h.address))
            .arg(command)
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }
}

impl Drop for SshLab {
    fn drop(&mut self) {
        for h in &mut self.hosts {
            h.kill();
        }
    }
}

impl Sshd {
    /// How known_hosts names this host: `[127.0.0.N]:PORT`.
    pub fn known_hosts_name(&self) -> String {
        format!("[{}]:{}", self.address, self.port)
    }

    /// The listening sshd's process id (its sessions are its descendants).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn write_config(&self, authorized: &Path) {
        let dir = self.config.parent().expect("lab dir");
        let text = format!(
            "HostKey {}\nPidFile {}\nListenAddress {}:{}\nAuthorizedKeysFile {}\nUsePAM no\nStrictModes no\n\
             PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             MaxStartups 200\nMaxSessions 20\nSetEnv SHLVL=1\nPrintMotd no\nUseDNS no\nLogLevel {}\n",
            self.host_key.display(),
            dir.join(format!("sshd-{}.pid", self.index)).display(),
            self.address,
            self.port,
            authorized.display(),
            self.log_level,
        );
        std::fs::write(&self.config, text).expect("write sshd config");
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open sshd log");
        let child = Command::new(sshd_path())
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start /usr/sbin/sshd");
        self.child = Some(child);
    }

    /// Waits until the port accepts TCP connections; false if sshd exited or the deadline
    /// passed.
    fn wait_ready(&mut self, deadline: Instant) -> bool {
        let addr: SocketAddr = format!("{}:{}", self.address, self.port)
            .parse()
            .expect("socket address");
        loop {
            if !self.is_running() {
                return false;
            }
            if accepts(&addr) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Kills this host's sshd with SIGKILL: the listener and every per-connection sshd under
    /// it, so open connections drop at once (what a crashed or stopped server looks like to a
    /// client). Processes the sessions started (a detached transaction) are left running.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        // Stopped, the listener forks no new connection while its tree is collected.
        let _ = Command::new("kill")
            .args(["-STOP", &pid.to_string()])
            .stderr(Stdio::null())
            .status();
        let mut pids: Vec<String> = sshd_descendants(pid).iter().map(u32::to_string).collect();
        pids.push(pid.to_string());
        let _ = Command::new("kill")
            .arg("-KILL")
            .args(&pids)
            .stderr(Stdio::null())
            .status();
        let _ = child.kill();
        let _ = child.wait();
        let addr: SocketAddr = format!("{}:{}", self.address, self.port)
            .parse()
            .expect("socket address");
        let t = Instant::now();
        while accepts(&addr) && t.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Restarts this host's sshd with `LogLevel VERBOSE`: its log then has a `Connection
    /// from` line for every TCP connection, so a test can tell whether a host was contacted.
    pub fn log_connections(&mut self, lab_client_key: &Path) {
        self.log_level = "VERBOSE";
        self.write_config(&lab_client_key.with_extension("pub"));
        self.restart();
    }

    /// Starts this host's sshd again on the same address, port and config.
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..10 {
            self.spawn();
            if self.wait_ready(Instant::now() + Duration::from_secs(10)) {
                return;
            }
            // The port may be busy for a moment; try again.
            self.kill();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "sshd {}:{} did not restart: {}",
            self.address,
            self.port,
            self.log_text()
        );
    }

    /// Gives the host a new host key and restarts it; `known_hosts` keeps the old one, so
    /// clients must see a changed host key.
    pub fn regenerate_host_key(&mut self) {
        self.kill();
        let old = self.host_pub.clone();
        keygen(&self.host_key, &format!("flotilla-test-host-{}-new", self.index));
        self.host_pub = public_key(&self.host_key.with_extension("pub"));
        assert_ne!(old, self.host_pub, "a new key");
        self.restart();
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        self.kill();
    }
}

/// sshd processes below `pid` (per-connection monitors and their session processes), found
/// through /proc. Only sshd's own processes are followed, not what the sessions run.
fn sshd_descendants(pid: u32) -> Vec<u32> {
    let mut procs: Vec<(u32, u32, String)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0);
        procs.push((p, ppid, comm));
    }
    let mut found = Vec::new();
    let mut queue = vec![pid];
    while let Some(parent) = queue.pop() {
        for (p, ppid, comm) in &procs {
            if *ppid == parent && comm.starts_with("sshd") && !found.contains(p) {
                found.push(*p);
                queue.push(*p);
            }
        }
    }
    found
}

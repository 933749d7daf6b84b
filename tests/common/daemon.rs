//! A `tracerd run` under test: a temporary spool (inbox, work, outbox, failed, archive), its
//! config, the daemon process with its log, an sd_notify socket owned by the test, and the
//! small tools to wait for and account for studies. Shared by `tests/daemon*.rs` and the load
//! benchmark.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Prefix of tracerd's temporary names (`fsio::TEMP_PREFIX`).
pub const TEMP_PREFIX: &str = tracerd::fsio::TEMP_PREFIX;

/// Knobs of the test config; the defaults make a daemon that reacts quickly.
#[derive(Debug, Clone)]
pub struct Settings {
    pub settle_seconds: f64,
    pub rescan_seconds: f64,
    pub stall_seconds: f64,
    pub stop_timeout_seconds: f64,
    pub max_attempts: u32,
    pub ingest_workers: usize,
    pub queue_length: usize,
    pub min_free_mib: u64,
    pub engines: &'static str,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            settle_seconds: 1.0,
            rescan_seconds: 0.5,
            stall_seconds: 600.0,
            stop_timeout_seconds: 30.0,
            max_attempts: 3,
            ingest_workers: 1,
            queue_length: 1,
            min_free_mib: 16,
            engines: r#"["ort-cpu", "tract"]"#,
        }
    }
}

/// The five study folders and a config naming them. Daemons started from it are killed when
/// it is dropped, so a failing test leaves no process behind.
pub struct Spool {
    pub root: tempfile::TempDir,
    pub config: PathBuf,
    pids: std::cell::RefCell<Vec<u32>>,
}

impl Drop for Spool {
    fn drop(&mut self) {
        for pid in self.pids.borrow().iter() {
            if let Some(pid) = rustix::process::Pid::from_raw(*pid as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
            }
        }
    }
}

impl Spool {
    pub fn new(s: &Settings) -> Spool {
        let root = tempfile::tempdir().unwrap();
        let config = root.path().join("tracerd.toml");
        let text = format!(
            "[paths]\ninbox = \"inbox\"\nwork = \"work\"\noutbox = \"outbox\"\nfailed = \"failed\"\n\
             archive = \"archive\"\n\n[watch]\nsettle_seconds = {}\nrescan_seconds = {}\n\
             min_free_mib = {}\n\n[daemon]\ningest_workers = {}\nqueue_length = {}\n\
             stop_timeout_seconds = {}\nstall_seconds = {}\nmax_attempts = {}\n\n\
             [inference]\nengines = {}\n\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
            s.settle_seconds,
            s.rescan_seconds,
            s.min_free_mib,
            s.ingest_workers,
            s.queue_length,
            s.stop_timeout_seconds,
            s.stall_seconds,
            s.max_attempts,
            s.engines
        );
        fs::write(&config, text).unwrap();
        for d in ["inbox", "work", "outbox", "failed", "archive"] {
            fs::create_dir_all(root.path().join(d)).unwrap();
        }
        Spool {
            root,
            config,
            pids: Default::default(),
        }
    }

    pub fn dir(&self, folder: &str) -> PathBuf {
        self.root.path().join(folder)
    }

    /// Entry names of a study folder, sorted, without tracerd's hidden state folder.
    pub fn entries(&self, folder: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.dir(folder))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != ".tracerd-state")
            .collect();
        v.sort();
        v
    }

    /// The studies (and results) in a study folder: its entries without hidden names.
    pub fn studies(&self, folder: &str) -> Vec<String> {
        self.entries(folder)
            .into_iter()
            .filter(|n| !n.starts_with('.'))
            .collect()
    }

    /// Temporary names left anywhere in the spool (outbox, work, archive, inside studies).
    pub fn temporaries(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for folder in ["outbox", "work", "archive", "failed"] {
            for path in walk(&self.dir(folder)) {
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(TEMP_PREFIX))
                {
                    out.push(path);
                }
            }
        }
        out
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir("daemon.log")
    }

    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts `tracerd run --config …`, its log appended to `daemon.log`, with the extra
    /// environment `env` (e.g. `NOTIFY_SOCKET`).
    pub fn command(&self, env: &[(&str, &Path)]) -> Command {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tracerd"));
        cmd.args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    /// The metrics endpoint's address, from the log line that announces it (a free port).
    pub fn metrics_address(&self) -> Option<String> {
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("metrics endpoint listening"))?;
        let at = line.find("address=")? + "address=".len();
        Some(line[at..].split_whitespace().next()?.to_string())
    }

    /// `GET /metrics` from the running daemon: the response body.
    pub fn scrape(&self) -> String {
        use std::io::Write;
        let address = self
            .metrics_address()
            .expect("the daemon announced its metrics endpoint");
        let mut s = std::net::TcpStream::connect(&address).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
            "{head}"
        );
        body.to_string()
    }

    pub fn spawn(&self, env: &[(&str, &Path)]) -> Child {
        let child = self.command(env).spawn().unwrap();
        self.adopt(&child);
        child
    }

    /// Makes the spool kill `child` when it is dropped (for children spawned from
    /// [`Spool::command`] directly).
    pub fn adopt(&self, child: &Child) {
        self.pids.borrow_mut().push(child.id());
    }
}

/// A Unix datagram socket playing systemd's side of sd_notify.
pub struct NotifySocket {
    pub path: PathBuf,
    socket: UnixDatagram,
    _dir: tempfile::TempDir,
}

impl NotifySocket {
    pub fn new() -> NotifySocket {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket {
            path,
            socket,
            _dir: dir,
        }
    }

    /// The next message's lines, or `None` after `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<String>> {
        self.socket.set_read_timeout(Some(timeout)).unwrap();
        let mut buf = vec![0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .map(str::to_string)
                .collect(),
        )
    }

    /// Waits for a message holding `line` (e.g. `READY=1`); returns every line seen until then.
    pub fn wait_for(&self, line: &str, timeout: Duration) -> Vec<String> {
        self.wait_matching(line, timeout, |l| l == line)
    }

    /// Waits for a line starting with `prefix`; returns every line seen until then (that
    /// line last).
    pub fn wait_for_prefix(&self, prefix: &str, timeout: Duration) -> Vec<String> {
        self.wait_matching(prefix, timeout, |l| l.starts_with(prefix))
    }

    fn wait_matching(
        &self,
        line: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(lines) = self.recv(left) {
                let hit = lines.iter().position(|l| matches(l));
                if let Some(i) = hit {
                    seen.extend(lines.into_iter().take(i + 1));
                    return seen;
                }
                seen.extend(lines);
            }
        }
        panic!("no {line} within {timeout:?}; saw {seen:?}");
    }
}

/// One daemon at a time, across every daemon test in the binary: the tests measure pauses and
/// pings, which a machine busy with several daemons' inference would blur. Hold the guard for the
/// whole test.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Writes synthetic study `seed` (small, NIfTI) into `dir`.
pub fn write_study(dir: &Path, seed: u64) {
    let study = tracerd::synth::generate(&tracerd::synth::SynthOptions {
        seed,
        size: tracerd::synth::Size::Small,
    });
    tracerd::synth::write_nifti(&study, dir).unwrap();
}

/// Every file under `dir` (recursively), sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let path = e.unwrap().path();
        if path.is_dir() && !path.is_symlink() {
            out.push(path.clone());
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// SHA-256 of every file under `dir`, by path relative to it.
pub fn checksums(dir: &Path) -> BTreeMap<String, String> {
    walk(dir)
        .into_iter()
        .filter(|p| p.is_file())
        .map(|p| {
            let name = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
            (name, sha256_file(&p))
        })
        .collect()
}

/// SHA-256 of one file, in hex.
pub fn sha256_file(path: &Path) -> String {
    let mut bytes = Vec::new();
    fs::File::open(path)
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Copies the files of `src` into `dest` (created).
pub fn copy_tree(src: &Path, dest: &Path) {
    fs::create_dir_all(dest).unwrap();
    for e in fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &dest.join(e.file_name()));
        } else {
            fs::copy(e.path(), dest.join(e.file_name())).unwrap();
        }
    }
}

/// Polls `done` every 100 ms until it holds; panics with `what` and the daemon log after
/// `timeout`.
pub fn wait_until(spool: &Spool, timeout: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() > deadline {
            panic!(
                "{what}: not within {timeout:?}\n--- daemon log ---\n{}",
                spool.log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends `signal` (e.g. `libc`-free: 15 for SIGTERM) with `kill(1)`.
pub fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{signal} failed");
}

/// Waits for the child to exit, up to `timeout`; returns its exit code.
pub fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the daemon did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

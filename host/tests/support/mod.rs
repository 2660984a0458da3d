//! What the binary's end-to-end tests share: a node process started from the real `mpreg`
//! binary, the example plugins, and the node's resident memory.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_mpreg");

/// A node process, killed when dropped.
pub struct Server(pub Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Server {
    /// Its resident set size in MiB, from `/proc`.
    pub fn rss_mib(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.0.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kib| kib / 1024)
    }

    /// Sends SIGTERM and waits (at most `limit`) for the process to exit; how long it took.
    pub fn terminate(&mut self, limit: Duration) -> Duration {
        let pid = self.0.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .expect("kill")
                .success()
        );
        let t = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                assert!(status.success(), "exit status {status}");
                return t.elapsed();
            }
            assert!(
                t.elapsed() < limit,
                "did not stop within {limit:?} of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Starts `mpreg server start --port 0 <extra>` and returns it with its URL.
pub fn start(extra: &[&str]) -> (Server, String) {
    let mut child = Command::new(BIN)
        .args(["server", "start", "--port", "0"])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mpreg");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("first line");
    let url = line.split_whitespace().last().expect("url").to_owned();
    assert!(url.starts_with("ws://127.0.0.1:"), "{line}");
    (Server(child), url)
}

/// Runs the binary with `args`: success, stdout, stderr.
pub fn mpreg(args: &[&str]) -> (bool, String, String) {
    mpreg_env(args, &[])
}

/// [`mpreg`] with environment variables set.
pub fn mpreg_env(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run mpreg");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An example plugin (`math`, `chaos`, …), built like the tests crate builds them (a no-op
/// when they are fresh).
pub fn example_plugin(name: &str) -> String {
    let plugins = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(&plugins)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(plugins.join("target"))
        .env_remove("CARGO_TARGET_DIR")
        .stderr(Stdio::null())
        .status()
        .expect("cargo");
    assert!(status.success(), "building the example plugins");
    let path = plugins.join(format!(
        "target/wasm32-wasip2/release/mpreg_plugin_{name}.wasm"
    ));
    assert!(path.exists(), "{}", path.display());
    path.display().to_string()
}

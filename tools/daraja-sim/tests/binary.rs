//! The `daraja-sim` binary, driven by the curl session in the README.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Kills the simulator even when an assertion fails first.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn readme_session() -> String {
    let readme = include_str!("../README.md");
    let start = readme
        .find("<!-- curl-session:start -->")
        .expect("README has the session start marker");
    let end = readme
        .find("<!-- curl-session:end -->")
        .expect("README has the session end marker");
    readme[start..end]
        .lines()
        .skip(1)
        .filter(|line| !line.starts_with("```"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn readme_curl_session_runs_against_the_binary() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_daraja-sim"))
        .args(["--listen", "127.0.0.1:0", "--callback-delay-ms", "100"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let sim = Running(child);
    let mut first = String::new();
    BufReader::new(stdout)
        .read_line(&mut first)
        .expect("the binary announces its address");
    let base = first
        .trim()
        .strip_prefix("daraja-sim listening on ")
        .expect("announcement format")
        .to_owned();

    let out = Command::new("bash")
        .arg("-c")
        .arg(format!("set -euo pipefail\n{}", readme_session()))
        .env("SIM", &base)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "session failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(r#""ResponseCode":"0""#), "{stdout}");
    assert!(
        stdout.contains(r#""ResultCode":1032"#),
        "callback: {stdout}"
    );
    assert!(stdout.contains(r#""ResultCode":"1032""#), "query: {stdout}");
    assert!(stdout.contains(r#""callbacks_sent":1"#), "{stdout}");
    drop(sim);
}

#[test]
fn help_lists_every_flag() {
    let out = Command::new(env!("CARGO_BIN_EXE_daraja-sim"))
        .arg("--help")
        .output()
        .expect("the binary runs");
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--shortcode",
        "--passkey",
        "--consumer-key",
        "--consumer-secret",
        "--callback-delay-ms",
        "--token-ttl-secs",
        "--invalidate-previous-tokens",
        "--query-rate-limit",
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
    assert!(
        !help.contains(daraja_sim::SANDBOX_PASSKEY),
        "passkey shown in --help"
    );
}

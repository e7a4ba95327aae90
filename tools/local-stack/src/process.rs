//! Stopping the servers the local tools start.

use std::time::Duration;

use tokio::process::{Child, Command};

/// Sends `signal` (`"INT"`, `"TERM"`) to `child`, or to its whole process group, so it can stop
/// what it started itself; kills it if it is still running after `grace`.
pub async fn stop(child: &mut Child, signal: &str, whole_group: bool, grace: Duration) {
    if let Some(pid) = child.id() {
        let target = if whole_group {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        // Failing to signal means it is gone already; the wait below settles it.
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), "--", &target])
            .status()
            .await;
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

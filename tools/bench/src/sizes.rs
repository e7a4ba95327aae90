//! Size of each release bootstrap (the release profile strips symbols).

use std::process::Command;

use bench::stats::Verdict;

use crate::report::Report;
use crate::{Binary, Paths};

const TARGET_MB: f64 = 8.0;

pub fn run(paths: &Paths, report: &mut Report) -> Result<(), String> {
    println!("\n## Bootstrap size (x86_64, release profile of the root Cargo.toml)\n");
    println!("| binary | bytes | MB | stripped |");
    println!("|---|---|---|---|");
    let mut largest = (0u64, "");
    for binary in Binary::ALL {
        let path = paths.release(binary.name());
        let bytes = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        // `file` says "stripped" or "not stripped"; absent `file` is only a missing detail.
        let stripped = Command::new("file")
            .arg("-b")
            .arg(&path)
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stdout).to_string())
            .map_or("?", |text| {
                if text.contains("not stripped") {
                    "no"
                } else if text.contains("stripped") {
                    "yes"
                } else {
                    "?"
                }
            });
        println!(
            "| {} | {bytes} | {:.2} | {stripped} |",
            binary.name(),
            mb(bytes)
        );
        if matches!(binary, Binary::Function(_)) && bytes > largest.0 {
            largest = (bytes, binary.name());
        }
    }
    report.row(
        "largest function bootstrap (x86_64)",
        format!("{:.2} MB ({})", mb(largest.0), largest.1),
        format!("≤ {TARGET_MB} MB"),
        Verdict::of(mb(largest.0) <= TARGET_MB),
    );
    Ok(())
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

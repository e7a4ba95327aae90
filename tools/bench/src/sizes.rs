//! Size of each release bootstrap (the release profile strips symbols).

use std::path::{Path, PathBuf};
use std::process::Command;

use bench::stats::Verdict;

use local_stack::Function;

use crate::report::Report;
use crate::{Binary, Paths};

const TARGET_MB: f64 = 8.0;

pub fn run(paths: &Paths, report: &mut Report) -> Result<(), String> {
    println!("\n## Bootstrap size (x86_64, release profile of the root Cargo.toml; MB = MiB)\n");
    println!("| binary | bytes | MB | stripped |");
    println!("|---|---|---|---|");
    let mut largest = (0u64, "");
    for binary in Binary::ALL {
        let path = paths.release(binary.name());
        let bytes = std::fs::metadata(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .len();
        let stripped = stripped(&describe(&path));
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
    aarch64(report);
    Ok(())
}

/// `file -b`'s description; empty when `file` is missing (only a detail is lost then).
fn describe(path: &Path) -> String {
    Command::new("file")
        .arg("-b")
        .arg(path)
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).to_string())
        .unwrap_or_default()
}

fn stripped(description: &str) -> &'static str {
    if description.contains("not stripped") {
        "no"
    } else if description.contains("stripped") {
        "yes"
    } else {
        "?"
    }
}

/// The `cargo lambda build --release --arm64` bootstraps, when `BENCH_LAMBDA_DIR` names the
/// `lambda` directory it wrote (`tools/bench/run.sh` sets it when `BENCH_ARM64=1`).
fn aarch64(report: &mut Report) {
    let Some(dir) = std::env::var_os("BENCH_LAMBDA_DIR").map(PathBuf::from) else {
        return;
    };
    println!("\n`cargo lambda build --release --arm64` (aarch64, zig linker):\n");
    println!("| function | bytes | MB | stripped |");
    println!("|---|---|---|---|");
    let mut largest = (0u64, "");
    for function in Function::ALL {
        let path = dir.join(function.name()).join("bootstrap");
        let description = describe(&path);
        let Ok(meta) = std::fs::metadata(&path) else {
            println!("| {function} | missing | | |");
            continue;
        };
        if !description.contains("aarch64") {
            println!("| {function} | not an aarch64 build | | |");
            continue;
        }
        println!(
            "| {function} | {} | {:.2} | {} |",
            meta.len(),
            mb(meta.len()),
            stripped(&description)
        );
        if meta.len() > largest.0 {
            largest = (meta.len(), function.name());
        }
    }
    if largest.0 > 0 {
        report.row(
            "largest function bootstrap (aarch64)",
            format!("{:.2} MB ({})", mb(largest.0), largest.1),
            format!("≤ {TARGET_MB} MB"),
            Verdict::of(mb(largest.0) <= TARGET_MB),
        );
    }
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

//! The medians `cargo bench -p bench --bench handler` left under `<target>/criterion`.

use std::path::Path;
use std::time::Duration;

use bench::stats::Verdict;
use serde_json::Value;

use crate::report::Report;
use crate::Paths;

const TARGET: Duration = Duration::from_micros(100);

/// `(full id, median)` of every benchmark with a result.
fn medians(dir: &Path) -> Vec<(String, Duration)> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir()
                && path
                    .file_name()
                    .is_some_and(|n| n != "report" && n != "base")
            {
                stack.push(path);
            }
        }
        if dir.file_name().is_some_and(|n| n == "new") {
            let read = |name: &str| -> Option<Value> {
                serde_json::from_str(&std::fs::read_to_string(dir.join(name)).ok()?).ok()
            };
            if let (Some(bench), Some(estimates)) = (read("benchmark.json"), read("estimates.json"))
            {
                if let (Some(id), Some(ns)) = (
                    bench["full_id"].as_str(),
                    estimates["median"]["point_estimate"].as_f64(),
                ) {
                    found.push((id.to_string(), Duration::from_secs_f64(ns / 1e9)));
                }
            }
        }
    }
    found.sort();
    found
}

fn micros(d: Duration) -> String {
    format!("{:.2} µs", d.as_secs_f64() * 1e6)
}

pub fn run(paths: &Paths, report: &mut Report) -> Result<(), String> {
    let dir = paths.target.join("criterion");
    let found = medians(&dir);
    if found.is_empty() {
        return Err(format!(
            "no criterion results under {}; run `cargo bench -p bench --bench handler` first",
            dir.display()
        ));
    }
    println!("\n## Handler overhead, no DynamoDB (criterion medians, `cargo bench -p bench --bench handler`)\n");
    println!("| benchmark | median |");
    println!("|---|---|");
    for (id, median) in &found {
        println!("| {id} | {} |", micros(*median));
    }
    let get = |id: &str| found.iter().find(|(f, _)| f == id).map(|(_, d)| *d);
    if let (Some(push), Some(loopback)) = (
        get("service/push: PushService::start, MemoryLedger, stub Daraja on loopback"),
        get("service/the push's HTTP exchange alone (same body, token header, answer size)"),
    ) {
        let own = push.saturating_sub(loopback);
        println!(
            "\npush overhead without its HTTP exchange with Daraja: {} − {} = {}",
            micros(push),
            micros(loopback),
            micros(own)
        );
        report.row(
            "push handler overhead (in-memory ledger; minus the same HTTP exchange alone)",
            format!("{} ({} with it)", micros(own), micros(push)),
            "≤ 100 µs",
            Verdict::of(own <= TARGET),
        );
    }
    if let Some(callback) = get("service/callback: CallbackService::receive, MemoryStore") {
        report.row(
            "callback handler overhead (in-memory store)",
            micros(callback),
            "≤ 100 µs",
            Verdict::of(callback <= TARGET),
        );
    }
    Ok(())
}

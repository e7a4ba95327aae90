//! `bench [SECTION…]`: the figures of BENCHMARKS.md, printed. Sections, in order: `sizes`,
//! `cold`, `startup`, `warm`, `calls`, `criterion` (reads the results `cargo bench -p bench`
//! left). No section: all of them, then the table of targets.
//!
//! Needs the release binaries (`cargo build --release -p stk-push -p stk-callback
//! -p payment-status -p reconcile -p bench-hello -p bench`) and the tools of `make setup`
//! (moto, the runtime emulator). `make bench` does all of it.

mod calls;
mod cold;
mod criterion_summary;
mod e2e;
mod report;
mod sizes;
mod warm;

use std::path::PathBuf;
use std::process::ExitCode;

use local_stack::{Function, LocalStack, Profile, StackOptions};

use report::Report;

/// Where things are.
pub struct Paths {
    pub root: PathBuf,
    pub target: PathBuf,
}

impl Paths {
    fn find() -> Result<Self, String> {
        let root = local_stack::dynamo::workspace_root()
            .ok_or("template.yaml not found above this directory")?;
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .filter(|t| !t.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        Ok(Self { root, target })
    }

    pub fn release(&self, binary: &str) -> PathBuf {
        self.target.join("release").join(binary)
    }
}

/// A binary this benchmark runs: one of the functions or the floor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    Function(Function),
    /// The minimal `lambda_http` function (`tools/bench/hello`).
    Floor,
}

impl Binary {
    pub const ALL: [Binary; 5] = [
        Binary::Function(Function::StkPush),
        Binary::Function(Function::StkCallback),
        Binary::Function(Function::PaymentStatus),
        Binary::Function(Function::Reconcile),
        Binary::Floor,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Binary::Function(f) => f.name(),
            Binary::Floor => "bench-hello",
        }
    }
}

/// The local stack the sections share: moto, the simulator (callbacks held back an hour so
/// they never land during a measurement), the table, and the functions (release builds).
pub async fn start_stack() -> Result<LocalStack, String> {
    LocalStack::start(StackOptions {
        profile: Profile::Release,
        pool_size: 1,
        sim: daraja_sim::SimConfig {
            callback_delay: std::time::Duration::from_secs(3600),
            ..daraja_sim::SimConfig::default()
        },
        extra_env: extra_env(),
        ..StackOptions::default()
    })
    .await
    .map_err(|e| e.to_string())
}

/// `BENCH_EXTRA_ENV="K=V,K=V"`: added to every function's environment (and the start-up probe's),
/// to measure a setting's effect without editing anything.
fn extra_env() -> Vec<(String, String)> {
    std::env::var("BENCH_EXTRA_ENV")
        .unwrap_or_default()
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// `/proc/loadavg`'s first three fields.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_string())
}

const SECTIONS: [&str; 7] = [
    "sizes",
    "cold",
    "startup",
    "warm",
    "calls",
    "e2e",
    "criterion",
];

#[tokio::main]
async fn main() -> ExitCode {
    let mut sections: Vec<String> = std::env::args().skip(1).collect();
    if sections.iter().any(|s| s == "-h" || s == "--help") {
        println!("usage: bench [{}]…", SECTIONS.join("|"));
        return ExitCode::SUCCESS;
    }
    if let Some(unknown) = sections.iter().find(|s| !SECTIONS.contains(&s.as_str())) {
        eprintln!(
            "unknown section {unknown:?}; sections: {}",
            SECTIONS.join(", ")
        );
        return ExitCode::from(2);
    }
    if sections.is_empty() {
        sections = SECTIONS.iter().map(|s| s.to_string()).collect();
    }
    let paths = match Paths::find() {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut report = Report::default();
    println!("load average at start: {}", load_average());
    let mut failed = false;
    for section in &sections {
        let result = match section.as_str() {
            "sizes" => sizes::run(&paths, &mut report),
            "cold" => cold::run(&paths, &mut report).await,
            "startup" => cold::startup(&paths, &mut report).await,
            "warm" => warm::run(&mut report).await,
            "calls" => calls::run(&mut report).await,
            "e2e" => e2e::run(&mut report).await,
            "criterion" => criterion_summary::run(&paths, &mut report),
            _ => unreachable!("sections are checked above"),
        };
        if let Err(e) = result {
            eprintln!("bench {section}: {e}");
            failed = true;
        }
    }
    println!("\nload average at end: {}", load_average());
    report.print();
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

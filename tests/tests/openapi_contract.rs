//! `openapi.yaml` describes the HTTP API exactly: schemathesis generates requests from it
//! against the real local stack and checks every answer against it. Zero 5xx, zero answers
//! that break the spec.

use std::path::PathBuf;
use std::process::Command;

use local_stack::{LocalStack, StackOptions};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_answer_matches_openapi_yaml_and_none_is_a_5xx() {
    let root = workspace();
    let python = root.join(".venv/bin/python");
    assert!(
        root.join(".venv/bin/schemathesis").exists(),
        "schemathesis is missing: run `make setup` (it installs tools/requirements.txt)"
    );
    let stack = LocalStack::start(StackOptions {
        pool_size: 2,
        ..StackOptions::default()
    })
    .await
    .expect("local stack starts");
    let api = stack.api_url();
    let token = stack.unsent_callback_token();
    let max_examples = std::env::var("SCHEMATHESIS_MAX_EXAMPLES").unwrap_or_else(|_| "60".into());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .current_dir(&root)
            .env("SCHEMATHESIS_TELEMETRY", "false")
            .env("NO_COLOR", "1")
            .env("CALLBACK_TOKEN", token)
            .args([
                "tools/schemathesis_run.py",
                "--config-file",
                "tools/schemathesis.toml",
                "run",
                "openapi.yaml",
                "--url",
                &api,
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                &max_examples,
                "--workers",
                "2",
                "--seed",
                "20261127",
                "--request-timeout",
                "30",
            ])
            .output()
    })
    .await
    .unwrap()
    .expect("schemathesis runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    stack.shutdown().await;
    // The run's summary, visible with `cargo test -- --nocapture`.
    let summary: Vec<&str> = stdout.lines().rev().take(12).collect();
    println!(
        "{}",
        summary.into_iter().rev().collect::<Vec<_>>().join("\n")
    );
    assert!(
        output.status.success(),
        "schemathesis found answers that break openapi.yaml:\n{stdout}\n{stderr}"
    );
}

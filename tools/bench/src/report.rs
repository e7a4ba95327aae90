//! The closing table: each figure beside its target.

use bench::stats::Verdict;

pub struct Row {
    figure: String,
    measured: String,
    target: String,
    verdict: Verdict,
}

#[derive(Default)]
pub struct Report {
    rows: Vec<Row>,
}

impl Report {
    pub fn row(
        &mut self,
        figure: impl Into<String>,
        measured: impl Into<String>,
        target: impl Into<String>,
        verdict: Verdict,
    ) {
        self.rows.push(Row {
            figure: figure.into(),
            measured: measured.into(),
            target: target.into(),
            verdict,
        });
    }

    pub fn print(&self) {
        if self.rows.is_empty() {
            return;
        }
        println!("\n## Targets\n");
        println!("| figure | measured | target | |");
        println!("|---|---|---|---|");
        for row in &self.rows {
            println!(
                "| {} | {} | {} | {} |",
                row.figure,
                row.measured,
                row.target,
                row.verdict.as_str()
            );
        }
    }
}

//! The benchmark table: one row per measured operation, with its baseline and ratio.

use crate::inproc::AbResult;

/// One measured operation.
#[derive(Debug, Clone)]
pub struct Row {
    pub operation: String,
    pub backend: String,
    pub throughput: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub baseline: String,
    /// The ratio to the baseline and the target it should reach, if there is one.
    pub ratio: Option<f64>,
    pub target: String,
}

impl Row {
    pub fn inproc(r: &AbResult) -> Row {
        let jwt = r.jsonwebtoken_per_second.map_or_else(
            || "jsonwebtoken: unsupported".to_owned(),
            |j| {
                format!(
                    "jsonwebtoken {j:.0}/s (keyward {:.2}×)",
                    r.full_per_second / j
                )
            },
        );
        let jose = match &r.jose {
            Some(Ok(rate)) => format!(
                "; jose (npm) {rate:.0}/s (keyward {:.2}×)",
                r.full_per_second / rate
            ),
            Some(Err(why)) => format!("; jose (npm) refuses it: {why}"),
            None => "; jose (npm): not measured".to_owned(),
        };
        let choice = r.ed25519.map_or_else(String::new, |c| {
            format!(
                "; keyward checks with {} (measured at its start: ed25519-dalek {:.1} µs, aws-lc-rs {:.1} µs; ed25519-dalek placed {} bytes into a stack page)",
                c.chosen.name(),
                c.dalek_micros,
                c.aws_lc_micros,
                c.dalek_stack_offset
            )
        });
        let others: Vec<String> = r
            .alternatives
            .iter()
            .filter(|(name, _)| *name != r.raw_crate)
            .map(|(name, rate)| format!("{name} {rate:.0}/s"))
            .collect();
        Row {
            operation: format!("verify in-process {}", r.curve.alg()),
            backend: "-".into(),
            throughput: r.full_per_second,
            p50_us: r.full_p50_us,
            p99_us: r.full_p99_us,
            baseline: format!(
                "raw {} ({}) {:.0}/s (others, raw: {}); {jwt}{jose}{choice}",
                r.curve.name(),
                r.raw_crate,
                r.raw_per_second,
                others.join(", ")
            ),
            ratio: Some(r.ratio),
            target: "≥ 0.93".into(),
        }
    }
}

/// The whole report.
#[derive(Debug)]
pub struct Report {
    quick: bool,
    rows: Vec<Row>,
    notes: Vec<String>,
}

impl Report {
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn push(&mut self, row: Row) {
        eprintln!(
            "[{:>7.2} s] {:<34} {:<10} {:>9.0}/s p50 {:>7.0}µs p99 {:>7.0}µs ratio {}",
            crate::since_start(),
            row.operation,
            row.backend,
            row.throughput,
            row.p50_us,
            row.p99_us,
            row.ratio.map_or("-".into(), |r| format!("{r:.2}"))
        );
        self.rows.push(row);
    }

    pub fn note(&mut self, note: String) {
        eprintln!("note: {note}");
        self.notes.push(note);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "# keyward benchmark ({})\n\n",
            if self.quick { "quick" } else { "full" }
        ));
        out.push_str(&machine());
        out.push_str("\n| operation | backend | throughput (/s) | p50 (µs) | p99 (µs) | baseline | ratio | target |\n");
        out.push_str("|---|---|---:|---:|---:|---|---:|---|\n");
        for r in &self.rows {
            out.push_str(&format!(
                "| {} | {} | {:.0} | {:.0} | {:.0} | {} | {} | {} |\n",
                r.operation,
                r.backend,
                r.throughput,
                r.p50_us,
                r.p99_us,
                r.baseline,
                r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
                r.target
            ));
        }
        if !self.notes.is_empty() {
            out.push_str("\nNotes:\n");
            for n in &self.notes {
                out.push_str(&format!("- {n}\n"));
            }
        }
        out
    }
}

/// The machine, as far as the report needs it.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("Machine: {cpu}, {cores} cores available. Load generator: single-threaded, on the same machine, loopback.\n")
}

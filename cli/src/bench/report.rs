//! Benchmark results: a human table on stdout and, with `--json`, a file with
//! every figure and the full configuration.

use std::path::Path;

use hdrhistogram::Histogram;
use serde_json::{Map, Value, json};

pub struct Report {
    pub workload: String,
    pub config: Value,
    figures: Vec<(String, f64, &'static str)>,
}

impl Report {
    pub fn new(workload: &str, config: Value) -> Self {
        Self { workload: workload.to_owned(), config, figures: Vec::new() }
    }

    pub fn add(&mut self, name: &str, value: f64, unit: &'static str) {
        self.figures.push((name.to_owned(), value, unit));
    }

    /// p50, p90, p99, p99.9 and max of a histogram of microseconds, in ms.
    pub fn latency(&mut self, name: &str, h: &Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        for (label, q) in [("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p99.9", 0.999)] {
            self.add(&format!("{name} {label}"), h.value_at_quantile(q) as f64 / 1000.0, "ms");
        }
        self.add(&format!("{name} max"), h.max() as f64 / 1000.0, "ms");
    }

    pub fn get(&self, name: &str) -> Option<f64> {
        self.figures.iter().find(|(n, _, _)| n == name).map(|(_, v, _)| *v)
    }

    /// Appends another report's figures, prefixed.
    pub fn merge(&mut self, prefix: &str, other: &Report) {
        for (name, value, unit) in &other.figures {
            self.figures.push((format!("{prefix} {name}"), *value, unit));
        }
    }

    pub fn print(&self) {
        println!("\n{}", self.workload);
        let width = self.figures.iter().map(|(n, _, _)| n.len()).max().unwrap_or(0);
        for (name, value, unit) in &self.figures {
            let shown = if value.fract() == 0.0 && value.abs() < 1e15 {
                format!("{value:.0}")
            } else {
                format!("{value:.2}")
            };
            println!("  {name:<width$}  {shown:>12} {unit}");
        }
    }

    pub fn to_json(&self) -> Value {
        let mut results = Map::new();
        let mut units = Map::new();
        for (name, value, unit) in &self.figures {
            results.insert(name.clone(), json!(value));
            units.insert(name.clone(), json!(unit));
        }
        json!({"workload": self.workload, "config": self.config, "results": results, "units": units})
    }

    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(&self.to_json())?)?;
        Ok(())
    }
}

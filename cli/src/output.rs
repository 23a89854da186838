//! Tables for people, JSON for scripts.

use comfy_table::{Table, presets::UTF8_FULL_CONDENSED};
use serde_json::Value;

/// How to print.
#[derive(Debug, Clone, Copy)]
pub struct Out {
    /// JSON instead of tables.
    pub json: bool,
    /// Progress bars even when standard error is not a terminal.
    pub progress: bool,
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

impl Out {
    /// A list as a table with `columns`.
    pub fn rows(&self, items: &Value, columns: &[&str]) {
        if self.json {
            println!(
                "{}",
                serde_json::to_string_pretty(items).unwrap_or_default()
            );
            return;
        }
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED)
            .set_header(columns.to_vec());
        for item in items.as_array().into_iter().flatten() {
            t.add_row(columns.iter().map(|c| cell(&item[*c])).collect::<Vec<_>>());
        }
        println!("{t}");
    }

    /// One object: the given fields as a two-column table.
    pub fn value(&self, v: &Value, fields: &[&str]) {
        if self.json {
            println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
            return;
        }
        let mut t = Table::new();
        t.load_preset(UTF8_FULL_CONDENSED);
        for f in fields {
            if !v[*f].is_null() {
                t.add_row(vec![(*f).to_string(), cell(&v[*f])]);
            }
        }
        println!("{t}");
    }
}

/// Workers as the API lists them, each with `running_jobs`: how many jobs
/// it runs now (the table shows the count, not every job id).
pub fn with_job_counts(workers: &Value) -> Value {
    workers
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            let mut w = w.clone();
            let n = w["current_jobs"].as_array().map_or(0, Vec::len);
            w["running_jobs"] = n.into();
            w
        })
        .collect()
}

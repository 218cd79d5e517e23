//! `-o json`: the [`TraceReport`] as documented in docs/schema.json.

use crate::model::TraceReport;

pub fn render(r: &TraceReport) -> String {
    serde_json::to_string_pretty(r)
        .unwrap_or_else(|e| format!("{{\"error\": \"cannot encode report: {e}\"}}"))
}

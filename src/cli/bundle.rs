//! `--output-dir DIR`: the trace for a ticket, written beside whatever
//! `-o` prints: `report.json`, `report.md` and `events.jsonl` (the events
//! exactly as `-o events` prints them, so `meshtrace replay` shows them).
//! Everything goes through the same renderers, so the same sanitizer.

use super::UsageError;
use crate::model::{TraceEvent, TraceReport};
use crate::render;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

/// The files a bundle holds, in the order they are written.
pub const FILES: [&str; 3] = ["report.json", "report.md", "events.jsonl"];

pub struct Bundle {
    dir: PathBuf,
    events: Arc<Mutex<Vec<TraceEvent>>>,
}

/// Hands each run's events to the bundle on their way to the front end.
#[derive(Clone)]
pub struct Recorder(Arc<Mutex<Vec<TraceEvent>>>);

impl Recorder {
    /// Copies every event of `rx` into the recording (a new run, one that
    /// starts with `trace-started`, replaces the previous one) and passes it on.
    pub fn tee(
        &self,
        mut rx: mpsc::UnboundedReceiver<TraceEvent>,
    ) -> mpsc::UnboundedReceiver<TraceEvent> {
        let (tx, out) = mpsc::unbounded_channel();
        let rec = self.0.clone();
        tokio::spawn(async move {
            while let Some(e) = rx.recv().await {
                if let Ok(mut v) = rec.lock() {
                    if matches!(e, TraceEvent::TraceStarted { .. }) {
                        v.clear();
                    }
                    v.push(e.clone());
                }
                if tx.send(e).is_err() {
                    break;
                }
            }
        });
        out
    }
}

impl Bundle {
    /// Checks DIR before anything runs: it is made if missing, and must be
    /// a directory meshtrace can write. `--watch` runs forever, so it has
    /// no last run to bundle.
    pub fn open(dir: &Path, watching: bool) -> Result<Self, UsageError> {
        if watching {
            return Err(UsageError(format!(
                "--output-dir {} bundles one run, and --watch runs until stopped: drop one of them (record a watch with -o events)",
                dir.display()
            )));
        }
        if dir.exists() && !dir.is_dir() {
            return Err(UsageError(format!(
                "--output-dir {}: exists and is not a directory",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| {
            UsageError(format!(
                "--output-dir {}: cannot create it: {e}",
                dir.display()
            ))
        })?;
        let probe = dir.join(".meshtrace-write-test");
        std::fs::write(&probe, b"")
            .and_then(|_| std::fs::remove_file(&probe))
            .map_err(|e| {
                UsageError(format!(
                    "--output-dir {}: cannot write there: {e}",
                    dir.display()
                ))
            })?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            events: Arc::default(),
        })
    }

    pub fn recorder(&self) -> Recorder {
        Recorder(self.events.clone())
    }

    /// Writes the three files for `report`, the last run; says where on stderr.
    pub fn write(&self, report: &TraceReport) -> Result<(), String> {
        let events: String = self
            .events
            .lock()
            .map(|v| {
                v.iter()
                    .filter_map(|e| serde_json::to_string(e).ok())
                    .map(|l| l + "\n")
                    .collect()
            })
            .unwrap_or_default();
        let mut json = render::json::render(report);
        if !json.ends_with('\n') {
            json.push('\n');
        }
        let contents = [json, render::markdown::render(report), events];
        for (name, text) in FILES.iter().zip(contents) {
            let path = self.dir.join(name);
            std::fs::write(&path, text)
                .map_err(|e| format!("--output-dir: cannot write {}: {e}", path.display()))?;
        }
        eprintln!(
            "meshtrace: wrote {} in {}",
            FILES.join(", "),
            self.dir.display()
        );
        Ok(())
    }
}

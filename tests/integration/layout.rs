//! The module layout's rules, read from the sources: probes and the sans-IO
//! parsers never reach into the engine, and the lab uses only the probe
//! modules meant to be shared, not a probe's internals.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

fn src(sub: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(sub)
}

#[test]
fn probes_and_parsers_never_import_the_engine() {
    let mut files = rust_files(&src("probe"));
    files.extend(rust_files(&src("inspect")));
    // Empty directories would make the check vacuous.
    assert!(files.len() >= 8, "{files:?}");
    let offenders: Vec<String> = files
        .iter()
        .flat_map(|f| {
            let text = std::fs::read_to_string(f).unwrap();
            text.lines()
                .enumerate()
                .filter(|(_, l)| l.contains("crate::engine") || l.contains("meshtrace::engine"))
                .map(|(i, l)| format!("{}:{}: {}", f.display(), i + 1, l.trim()))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

/// The probe modules the lab may use outside its tests: shared helpers, not
/// one probe's internals.
const SHARED_PROBE_MODULES: &[&str] = &["http1", "kube_error", "kube_stack"];

#[test]
fn the_lab_uses_only_shared_probe_modules() {
    let mut seen = 0;
    for f in rust_files(&src("lab")) {
        if f.file_name().is_some_and(|n| n == "tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        // Unit tests may drive the lab with meshtrace's own clients.
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (i, line) in code.lines().enumerate() {
            let mut rest = line;
            while let Some(at) = rest.find("probe::") {
                rest = &rest[at + "probe::".len()..];
                let module: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                seen += 1;
                assert!(
                    SHARED_PROBE_MODULES.contains(&module.as_str()),
                    "{}:{}: the lab uses probe::{module}: {}",
                    f.display(),
                    i + 1,
                    line.trim()
                );
            }
        }
    }
    // The lab's pod proxy forwards through the shared HTTP/1.1 helper.
    assert!(seen > 0, "no probe use found: is the scan reading the lab?");
}

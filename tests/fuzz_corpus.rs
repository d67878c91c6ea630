//! Replays the fuzz corpus and every saved crash input on stable Rust: each
//! file under `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` goes
//! through the same check as the fuzz target of that name
//! (`fuzz/checks.rs`, shared with `fuzz/fuzz_targets/`), and none may panic.
//! The fuzzers themselves need nightly; `fuzz/run.sh` runs them.

#[allow(dead_code)]
#[path = "../fuzz/checks.rs"]
mod checks;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

/// The files of `fuzz/<kind>/<target>/`, by target, sorted.
fn inputs(kind: &str) -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind);
    let mut out = Vec::new();
    let Ok(targets) = std::fs::read_dir(&root) else {
        return out;
    };
    for target in targets {
        let target = target.expect("readable directory entry").path();
        if !target.is_dir() {
            continue;
        }
        let name =
            target.file_name().and_then(|n| n.to_str()).expect("target directories have UTF-8 names").to_string();
        for file in std::fs::read_dir(&target).expect("readable target directory") {
            let file = file.expect("readable directory entry").path();
            if file.is_file() && !is_scratch(&file) {
                out.push((name.clone(), file));
            }
        }
    }
    out.sort();
    out
}

/// libFuzzer's scratch files (`.gitignore` keeps them out of git).
fn is_scratch(file: &Path) -> bool {
    file.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("tmp") || n.starts_with('.'))
}

/// Runs every input through its target's check; returns how many ran and
/// what failed.
fn replay(kind: &str) -> (usize, Vec<String>) {
    let schemas = checks::schemas(env!("CARGO_MANIFEST_DIR"));
    let mut failures = Vec::new();
    let all = inputs(kind);
    for (target, file) in &all {
        let Some((_, check)) = checks::TARGETS.iter().find(|(t, _)| t == target) else {
            failures.push(format!("{}: no check named '{target}' in fuzz/checks.rs TARGETS", file.display()));
            continue;
        };
        let data = std::fs::read(file).expect("readable input");
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| check(&data, schemas))) {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            failures.push(format!("{}: {why}", file.display()));
        }
    }
    (all.len(), failures)
}

#[test]
fn corpus_replays_without_a_panic() {
    let (count, failures) = replay("corpus");
    assert!(count > 0, "fuzz/corpus/ is empty or missing");
    assert!(failures.is_empty(), "{} of {count} corpus inputs failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn saved_crash_inputs_replay_without_a_panic() {
    let (count, failures) = replay("artifacts");
    assert!(failures.is_empty(), "{} of {count} crash inputs still fail:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn every_target_has_a_corpus() {
    let corpus = inputs("corpus");
    for (target, _) in checks::TARGETS {
        assert!(corpus.iter().any(|(t, _)| t == target), "fuzz/corpus/{target}/ has no inputs");
    }
}

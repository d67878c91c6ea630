//! The arrows of STYLE.md 2.2: each module may name only the modules its
//! row allows. Scans `src/**/*.rs` for `crate::<module>` paths.

use std::collections::BTreeMap;
use std::path::Path;

/// module -> modules it may use.
fn allowed() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("codec", &[][..]),
        ("fault", &["codec", "envelope"][..]),
        ("sync", &[][..]),
        ("config", &[][..]),
        ("envelope", &[][..]),
        ("auth", &["fault", "sync", "config"][..]),
        ("telemetry", &["fault", "sync", "config"][..]),
        ("transport", &["fault", "sync", "telemetry"][..]),
        ("fanout", &["fault", "sync", "transport", "telemetry"][..]),
        ("pipeline", &["fault", "sync", "codec", "envelope", "fanout", "config", "telemetry"][..]),
        ("ingest", &["fault", "sync", "pipeline", "envelope", "config", "telemetry"][..]),
        ("presence", &["fault", "sync", "ingest", "config", "telemetry"][..]),
        ("push", &["fault", "sync", "pipeline", "fanout", "ingest", "envelope", "config", "telemetry"][..]),
        (
            "hub",
            &[
                "fault",
                "sync",
                "codec",
                "envelope",
                "transport",
                "fanout",
                "ingest",
                "presence",
                "push",
                "config",
                "telemetry",
                "auth",
            ][..],
        ),
        (
            "continuity",
            &["fault", "sync", "hub", "ingest", "pipeline", "fanout", "envelope", "config", "transport"][..],
        ),
        ("introspect", &["fault", "sync", "fanout", "ingest", "config", "telemetry"][..]),
        (
            "history",
            &[
                "fault",
                "sync",
                "codec",
                "config",
                "envelope",
                "fanout",
                "pipeline",
                "ingest",
                "hub",
                "transport",
                "telemetry",
            ][..],
        ),
        (
            "http",
            &[
                "fault",
                "sync",
                "hub",
                "push",
                "transport",
                "ingest",
                "introspect",
                "envelope",
                "telemetry",
                "config",
                "auth",
            ][..],
        ),
    ])
}

fn scan(dir: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            scan(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push((path.display().to_string(), std::fs::read_to_string(&path).expect("utf-8 source")));
        }
    }
}

#[test]
fn modules_only_use_what_their_row_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    scan(&root, &mut files);
    let rules = allowed();
    let mut broken = Vec::new();
    for (path, text) in &files {
        let rel = path.strip_prefix(&*root.display().to_string()).unwrap_or(path).trim_start_matches('/');
        let module = rel.split(['/', '.']).next().unwrap_or("");
        let Some(allowed) = rules.get(module) else {
            continue; // lib.rs, main.rs, app.rs wire everything
        };
        for (n, line) in text.lines().enumerate() {
            let mut rest = line;
            while let Some(pos) = rest.find("crate::") {
                rest = &rest[pos + 7..];
                let used: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if used != module && !allowed.contains(&used.as_str()) {
                    broken.push(format!("{rel}:{}: {module} uses crate::{used}", n + 1));
                }
            }
        }
    }
    assert!(broken.is_empty(), "imports against STYLE.md 2.2:\n{}", broken.join("\n"));
}

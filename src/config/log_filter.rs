//! A check of the log filter's words: `tracing`'s EnvFilter takes any bare
//! word for a target, so `SIDECAR_LOG=debu` silently logged nothing but
//! that (non-existent) target's lines instead of being refused.

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Why `filter` looks wrong: a directive without `=` that is no level yet
/// lies within two typing mistakes of one (`debu`, `inf`) or spells one
/// out (`warning`, `information`). A
/// bare target (`hyper`, `signalr_sidecar::hub`) is left alone.
pub(super) fn misspelt_level(filter: &str) -> Option<String> {
    filter.split(',').map(str::trim).filter(|d| !d.is_empty() && !d.contains(['=', '[', ':'])).find_map(|word| {
        let lower = word.to_ascii_lowercase();
        // Digits are levels too (`0` off to `5` trace).
        if LEVELS.contains(&lower.as_str()) || lower.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let near = LEVELS.iter().find(|level| {
            distance(&lower, level) <= 2
                || lower.strip_prefix(**level).is_some_and(|rest| rest.bytes().all(|b| b.is_ascii_alphabetic()))
        })?;
        Some(format!(
            "'{word}' is no level (did you mean '{near}'?); a target at every level is written '{word}=trace'"
        ))
    })
}

/// Edits (insertions, deletions, substitutions) from `a` to `b`.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_level_is_named_and_targets_pass() {
        for bad in ["debu", "inf", "WARNING", "Information", "info,debg", "eror"] {
            assert!(misspelt_level(bad).is_some(), "{bad}");
        }
        assert!(misspelt_level("debu").is_some_and(|e| e.contains("'debug'")));
        for good in
            ["info", "DEBUG", "2", "warn,hyper=info", "signalr_sidecar::hub=debug", "hyper", "tower_http", "off", ""]
        {
            assert_eq!(misspelt_level(good), None, "{good}");
        }
    }
}

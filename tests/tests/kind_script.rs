//! Issue 12: the kind end-to-end script cannot run here (kind needs a container engine
//! that pulls its node image), so what can be checked without a cluster is: shellcheck
//! finds nothing, and every file of this repository it uses exists.
use std::path::Path;

use anyhow::{Context, Result, ensure};

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn the_kind_script_is_shellcheck_clean_and_its_files_exist() -> Result<()> {
    let script = repo().join("deploy/kind/e2e.sh");
    let out = std::process::Command::new("shellcheck")
        .arg(&script)
        .output()
        .context("running shellcheck (cargo xtask setup installs it)")?;
    ensure!(
        out.status.success(),
        "shellcheck {}:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    let text = std::fs::read_to_string(&script)?;
    // `$ROOT/<path>` and `$FIXTURES/<file>`: the repository's files it reads.
    let fixtures = "tests/fixtures/istio-bookinfo";
    let mut used = Vec::new();
    for (prefix, base) in [("$ROOT/", ""), ("$FIXTURES/", fixtures)] {
        for part in text.split(prefix).skip(1) {
            let path: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || "/._-".contains(*c))
                .collect();
            used.push(Path::new(base).join(path));
        }
    }
    ensure!(used.len() >= 4, "found only {used:?}");
    for path in &used {
        ensure!(
            repo().join(path).exists(),
            "the script uses {}, which is missing",
            path.display()
        );
    }
    Ok(())
}

//! `scripts/msrv-check` (a CI step) fails when `rust-version` is below what the resolved dependency
//! graph needs, or when a feature needing more says nothing; it passes on the manifest as it is.
#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::Command;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A copy of the crate's manifest and lock file in a fresh directory, with the sources linked in
/// (cargo reads the targets the manifest names), the manifest edited by `edit`.
struct Copy(PathBuf);

impl Copy {
    fn new(name: &str, edit: impl Fn(&str) -> String) -> Copy {
        let dir = std::env::temp_dir().join(format!("sgw-msrv-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
        let edited = edit(&manifest);
        assert_ne!(edited, manifest, "the edit changed nothing");
        std::fs::write(dir.join("Cargo.toml"), edited).unwrap();
        std::fs::copy(Path::new(ROOT).join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        for sub in ["src", "examples", "benches", "tests", "README.md"] {
            std::os::unix::fs::symlink(Path::new(ROOT).join(sub), dir.join(sub)).unwrap();
        }
        Copy(dir)
    }
}

impl Drop for Copy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the check on `manifest`: (passed, what it printed).
fn check(manifest: &Path) -> (bool, String) {
    let out = Command::new("python3")
        .arg(Path::new(ROOT).join("scripts/msrv-check"))
        .arg(manifest)
        .output()
        .expect("python3 runs scripts/msrv-check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn declared(manifest: &str) -> String {
    manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("Cargo.toml declares rust-version")
        .to_owned()
}

#[test]
fn the_manifest_states_what_the_graph_needs() {
    let (ok, text) = check(&Path::new(ROOT).join("Cargo.toml"));
    assert!(ok, "{text}");
    let manifest = std::fs::read_to_string(Path::new(ROOT).join("Cargo.toml")).unwrap();
    let line = format!(
        "default features: the graph needs Rust {} (",
        declared(&manifest)
    );
    assert!(
        text.contains(&line),
        "rust-version is exactly the need:\n{text}"
    );
}

#[test]
fn a_rust_version_below_the_graph_fails() {
    let copy = Copy::new("low", |m| {
        let v = declared(m);
        m.replace(
            &format!("rust-version = \"{v}\""),
            "rust-version = \"1.70\"",
        )
    });
    let (ok, text) = check(&copy.0.join("Cargo.toml"));
    assert!(!ok, "1.70 must fail:\n{text}");
    assert!(
        text.contains("error: rust-version 1.70 is below 1."),
        "{text}"
    );
    assert!(text.contains("with the default features"), "{text}");
}

#[test]
fn a_feature_needing_more_unsaid_fails() {
    let copy = Copy::new("unsaid", |m| {
        m.replace("needs Rust 1.88", "needs a newer Rust")
    });
    let (ok, text) = check(&copy.0.join("Cargo.toml"));
    assert!(!ok, "{text}");
    assert!(
        text.contains("error: feature `redis` needs Rust 1.88"),
        "{text}"
    );
}

//! Keeps the docs honest: every source file says what it is for, every command is in the README,
//! every crate is on the map in ARCHITECTURE.md, and the README's example file is valid.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if !matches!(name, "target" | ".git" | "snapshots") {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_source_file_starts_with_a_module_doc() {
    let mut files = Vec::new();
    for dir in ["crates", "bin"] {
        rust_files(&root().join(dir), &mut files);
    }
    assert!(files.len() > 20, "found only {} files", files.len());
    let undocumented: Vec<_> = files
        .iter()
        .filter(|f| !read(f).starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert!(
        undocumented.is_empty(),
        "these files do not start with a `//!` comment saying what they are for: {undocumented:#?}"
    );
}

#[test]
fn every_command_is_in_the_readme() {
    let help = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("--help")
        .output()
        .expect("run slipway --help");
    let help = String::from_utf8(help.stdout).expect("utf-8 help");
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(commands.len() >= 10, "parsed commands: {commands:?}");
    let readme = read(&root().join("README.md"));
    let missing: Vec<_> = commands
        .iter()
        .filter(|c| !readme.contains(&format!("| `{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md's command table lacks {missing:?}"
    );
}

#[test]
fn every_crate_is_on_the_architecture_map() {
    let manifest = read(&root().join("Cargo.toml"));
    let architecture = read(&root().join("ARCHITECTURE.md"));
    let members: Vec<&str> = manifest
        .lines()
        .skip_while(|l| !l.starts_with("members"))
        .skip(1)
        .take_while(|l| !l.starts_with(']'))
        .map(|l| l.trim().trim_end_matches(',').trim_matches('"'))
        .filter(|l| !l.is_empty())
        .collect();
    assert!(members.len() >= 5, "parsed members: {members:?}");
    let missing: Vec<_> = members
        .iter()
        .filter(|m| !architecture.contains(&format!("`{m}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md does not map {missing:?}"
    );
}

#[test]
fn the_readme_example_file_is_valid() {
    let readme = read(&root().join("README.md"));
    let toml: String = readme
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README.md has a ```toml block")
        .to_owned();
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("slipway.toml");
    std::fs::write(&file, toml).expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_slipway"))
        .arg("-f")
        .arg(&file)
        .arg("validate")
        .output()
        .expect("run slipway validate");
    assert!(
        out.status.success(),
        "README.md's example slipway.toml is invalid:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

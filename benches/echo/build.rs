//! Building the examples and finding them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// `<target dir>/release/examples`: from `CARGO_TARGET_DIR` when it is set, else from where
/// this bench binary was built (`<target>/release/deps/echo-HASH`).
pub fn examples_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() {
            Path::new(env!("CARGO_MANIFEST_DIR")).join(dir)
        } else {
            dir
        };
        return dir.join("release").join("examples");
    }
    let exe = env::current_exe().unwrap_or_default();
    match exe.ancestors().nth(3) {
        Some(target) if target.join("release").is_dir() => target.join("release/examples"),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/examples"),
    }
}

fn build(args: &[&str]) -> Result<(), String> {
    let out = Command::new(cargo())
        .args(["build", "--release"])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error"))
        .take(6)
        .collect();
    Err(errors.join(" / "))
}

/// Builds every example in release. When that fails, builds the load generator and the
/// tokio server alone (they must build) and reports why gnet's `echo` did not.
pub fn build_examples() -> Result<Option<String>, String> {
    eprintln!("echo bench: cargo build --release --examples");
    if build(&["--examples"]).is_ok() {
        return Ok(None);
    }
    build(&["--example", "loadgen", "--example", "tokio_echo"])
        .map_err(|e| format!("the load generator or tokio_echo does not build:\n{e}"))?;
    match build(&["--example", "echo"]) {
        Ok(()) => Ok(None),
        Err(e) => Ok(Some(format!("the gnet echo example does not build: {e}"))),
    }
}

//! Building the examples and finding them.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

/// The workspace's root (this package is `benches/` in it).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_path_buf()
}

/// `<target dir>/release`, where `loadgen` and `tokio_echo` are, with gnet's examples under
/// `examples/`: from `CARGO_TARGET_DIR` when it is set, else from where this bench binary was
/// built (`<target>/release/deps/echo-HASH`).
pub fn release_dir() -> PathBuf {
    if let Some(dir) = env::var_os("CARGO_TARGET_DIR") {
        let dir = PathBuf::from(dir);
        let dir = if dir.is_relative() {
            workspace_dir().join(dir)
        } else {
            dir
        };
        return dir.join("release");
    }
    let exe = env::current_exe().unwrap_or_default();
    match exe.ancestors().nth(3) {
        Some(target) if target.join("release").is_dir() => target.join("release"),
        _ => workspace_dir().join("target/release"),
    }
}

fn build(args: &[&str]) -> Result<(), String> {
    let out = Command::new(cargo())
        .args(["build", "--release"])
        .args(args)
        .current_dir(workspace_dir())
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

/// Builds, in release, the load generator and the tokio server (they must build), then gnet's
/// `echo` and `udp_echo` examples; reports why those did not build if they did not.
pub fn build_examples() -> Result<Option<String>, String> {
    eprintln!("echo bench: cargo build --release -p gnet-bench --bins; -p gnet --example echo --example udp_echo");
    build(&["-p", "gnet-bench", "--bins"])
        .map_err(|e| format!("the load generator or tokio_echo does not build:\n{e}"))?;
    match build(&["-p", "gnet", "--example", "echo", "--example", "udp_echo"]) {
        Ok(()) => Ok(None),
        Err(e) => Ok(Some(format!("the gnet examples do not build: {e}"))),
    }
}

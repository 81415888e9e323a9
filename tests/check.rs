//! `evhost check`, through the real binary.

mod support;

use std::process::Command;

fn check(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evhost"))
        .arg("check")
        .args(args)
        .output()
        .expect("evhost runs")
}

#[test]
fn check_prints_what_a_valid_plugin_describes() {
    let path = support::plugin("welcome");
    let out = check(&[path.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("welcome"), "{stdout}");
    assert!(stdout.contains("user.created"), "{stdout}");

    let out = check(&[path.as_os_str(), "--json".as_ref()]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("--json prints JSON");
    assert_eq!(json["name"], "welcome");
    assert_eq!(json["digest"].as_str().map(str::len), Some(64));
}

#[test]
fn check_fails_with_the_loader_error() {
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm at all, just text").unwrap();
    let out = check(&[junk.as_os_str()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("junk.wasm") && stderr.contains("not a WebAssembly file"),
        "{stderr}"
    );

    let missing = dir.path().join("missing.wasm");
    let out = check(&[missing.as_os_str()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
}

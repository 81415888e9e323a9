//! The plugin author's tools without a daemon, `evhost check` and `evhost
//! call`, through the real binary.

mod support;

use std::process::Command;

/// The author commands' compile cache, kept inside the build's target directory.
fn cache_dir() -> std::path::PathBuf {
    support::workspace_root()
        .join("target")
        .join("author-test-cache")
}

fn check(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evhost"))
        .arg("check")
        .args(args)
        .env("EVHOST_CACHE_DIR", cache_dir())
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

/// What `plugins/bad-describe` panics with in `describe()`.
const DESCRIBE_PANIC: &str = "bad-describe: no plugin info today (deliberate panic in describe)";

#[test]
fn check_reports_the_panic_message_of_a_failing_describe() {
    let path = support::plugin("bad-describe");
    let out = check(&[path.as_os_str()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let error = stderr
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("no error line in {stderr}"));
    assert!(
        error.contains("describe() failed") && error.contains(DESCRIBE_PANIC),
        "the error itself carries the guest's message: {error}"
    );

    let out = check(&[path.as_os_str(), "--json".as_ref()]);
    assert!(!out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json prints JSON on failure too ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    assert_eq!(json["error"]["code"], "describe_failed", "{json}");
    let message = json["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(DESCRIBE_PANIC), "{json}");
}

fn call(file: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_evhost"))
        .arg("call")
        .arg(file)
        .args(args)
        .env("EVHOST_CACHE_DIR", cache_dir())
        .output()
        .expect("evhost runs")
}

#[test]
fn call_reports_the_panic_message_of_a_failing_describe() {
    let out = call(&support::plugin("bad-describe"), &["--type", "bad.thing"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .any(|l| l.starts_with("error:") && l.contains(DESCRIBE_PANIC)),
        "{stderr}"
    );
}

#[test]
fn call_without_a_grant_is_rejected_and_says_how_to_grant() {
    let counter = support::plugin("counter");
    let out = call(&counter, &["--type", "order.created"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("rejected")
            && stdout.contains("no `state` grant")
            && stdout.contains("--grant-all"),
        "{stdout}"
    );
    let out = call(&counter, &["--type", "order.created", "--grant-all"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

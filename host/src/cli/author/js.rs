//! Plugins in JavaScript: built with jco's `componentize` over the SDK in
//! `plugin-sdk/js` (a copy of which `evhost new --lang js` writes into the
//! project, so the project builds and tests anywhere).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, anyhow, bail};

use super::lang;

/// The jco release the toolchain lock (`plugin-sdk/js/toolchain`) pins; it
/// brings componentize-js 0.23.0 and componentize-qjs 0.4.5.
pub const JCO_VERSION: &str = "1.35.0";
/// Names the jco executable to use, overriding the search.
pub const TOOL_ENV: &str = "EVHOST_JCO";

/// Every flag of `jco componentize` the build passes, in one place.
///
/// The engine is QuickJS (`--backend qjs`), not the default StarlingMonkey:
/// measured here, a QuickJS component is 1.6-1.8 MB and the daemon's first
/// compile of it takes 2-4 s, against 12 MB and 17-31 s for StarlingMonkey
/// (which would also need `-d http -d fetch-event`: its default build
/// imports `wasi:http`, which the host does not link today). Both interpret
/// JavaScript (`--aot` would download at build time, so it is not used);
/// QuickJS has no Web APIs (`fetch`, `TextEncoder`), which the SDK does
/// without. `--backend-qjs-disable-async` because the engine does not enable
/// component-model async. `--bundle` inlines the project's imports (the SDK,
/// its own files, npm packages) so the sources can live anywhere.
const COMPONENTIZE_FLAGS: [&str; 5] = [
    "--backend",
    "qjs",
    "--backend-qjs-disable-async",
    "--bundle",
    "--world-name=plugin",
];

macro_rules! sdk_file {
    ($rel:literal) => {
        (
            concat!("evhost-sdk/", $rel),
            include_str!(concat!("../../../../plugin-sdk/js/", $rel)),
        )
    };
}

/// The SDK, copied into every new project.
const SDK: [(&str, &str); 8] = [
    sdk_file!("index.js"),
    sdk_file!("context.js"),
    sdk_file!("errors.js"),
    sdk_file!("event.js"),
    sdk_file!("plugin.js"),
    sdk_file!("testing.js"),
    sdk_file!("utf8.js"),
    sdk_file!("wasm.js"),
];

macro_rules! template {
    ($rel:literal) => {
        include_str!(concat!("../../../../plugin-sdk/js/template/", $rel))
    };
}

/// true when `dir` holds a JavaScript project: `package.json`.
pub fn detect(dir: &Path) -> bool {
    dir.join("package.json").is_file()
}

/// Writes a new project for plugin `name` (already validated) into the
/// empty or new directory `dir`: the handler, its `node --test` test, the
/// sidecar granting exactly what the handler uses, a README, a
/// `package.json` pinning the toolchain, and the SDK.
pub fn scaffold(dir: &Path, name: &str) -> anyhow::Result<()> {
    let templates = [
        ("app.js".to_owned(), template!("app.js")),
        ("app.test.js".to_owned(), template!("app.test.js")),
        (format!("{name}.toml"), template!("sidecar.toml")),
        ("package.json".to_owned(), template!("package.json")),
        ("README.md".to_owned(), template!("README.md")),
    ];
    lang::write_project(
        dir,
        name,
        &[("__JCO__", JCO_VERSION)],
        &templates,
        template!("gitignore"),
        &SDK,
    )
}

/// Builds the project's `main` module (`app.js`, which exports `plugin`)
/// into `dir/build/app.wasm` with the jco found in `$EVHOST_JCO`,
/// `dir/node_modules/.bin/` or on `PATH`.
pub fn compile(dir: &Path) -> anyhow::Result<PathBuf> {
    let local = [dir.join("node_modules").join(".bin").join("jco")];
    let tool = lang::find_tool(TOOL_ENV, &local, "jco").ok_or_else(|| {
        anyhow!(
            "jco not found (looked at ${TOOL_ENV}, {} and PATH): run `npm install` in {}",
            local[0].display(),
            dir.display()
        )
    })?;
    compile_with(dir, &tool)
}

/// [`compile`] with a given jco executable.
pub fn compile_with(dir: &Path, tool: &Path) -> anyhow::Result<PathBuf> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("cannot open {}", dir.display()))?;
    let (main, sdk) = project(&dir)?;
    let wit = lang::write_wit(&dir)?;
    let build = dir.join(lang::BUILD_DIR);
    // The component's entry: the project's plugin wired to the WIT imports
    // through the SDK's glue. Generated, because the glue imports modules
    // (`evhost:plugin/...`) that exist only inside a component, so neither
    // app.js nor its tests can import it.
    let entry = build.join("entry.js");
    let text = format!(
        "import {{ plugin }} from {main};\nimport {{ exportsFor }} from {glue};\n\
         const world = exportsFor(plugin);\n\
         export function describe() {{ return world.describe(); }}\n\
         export function handle(event) {{ return world.handle(event); }}\n",
        main = js_string(&main),
        glue = js_string(&sdk.join("wasm.js")),
    );
    std::fs::write(&entry, text).with_context(|| format!("cannot write {}", entry.display()))?;
    let out = build.join("app.wasm");
    let mut cmd = Command::new(tool);
    cmd.current_dir(&dir)
        .arg("componentize")
        .arg(&entry)
        .arg("--wit")
        .arg(&wit)
        .args(COMPONENTIZE_FLAGS)
        .arg("-o")
        .arg(&out);
    lang::run(&mut cmd, "jco componentize")?;
    Ok(out)
}

/// The main module and the SDK directory, from `package.json` (`main`,
/// default `app.js`; `evhost.sdk`, default `./evhost-sdk`).
fn project(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let file = dir.join("package.json");
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("cannot read {}", file.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).with_context(|| format!("{}", file.display()))?;
    let main = dir.join(doc["main"].as_str().unwrap_or("app.js"));
    let sdk = dir.join(doc["evhost"]["sdk"].as_str().unwrap_or("./evhost-sdk"));
    if !main.is_file() {
        bail!(
            "{} does not exist: the module that exports `plugin` (package.json `main`)",
            main.display()
        );
    }
    if !sdk.join("wasm.js").is_file() {
        bail!(
            "no SDK at {} (package.json `evhost.sdk`): it should hold wasm.js",
            sdk.display()
        );
    }
    let canonical = |p: &Path| {
        p.canonicalize()
            .with_context(|| format!("cannot open {}", p.display()))
    };
    Ok((canonical(&main)?, canonical(&sdk)?))
}

/// `path` as a JavaScript string literal.
fn js_string(path: &Path) -> String {
    serde_json::Value::String(path.display().to_string()).to_string()
}

/// What `evhost dev` ignores: build output and installed packages.
pub fn ignored(_dir: &Path) -> Vec<PathBuf> {
    [lang::BUILD_DIR, "node_modules"]
        .iter()
        .map(PathBuf::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scaffold_writes_the_project_and_the_sdk() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("invoice-ledger");
        scaffold(&dir, "invoice-ledger").unwrap();
        assert!(detect(&dir));
        let sidecar = std::fs::read_to_string(dir.join("invoice-ledger.toml")).unwrap();
        assert!(
            sidecar.contains(r#"emit = ["invoice-ledger.done"]"#),
            "{sidecar}"
        );
        let (main, sdk) = project(&dir).unwrap();
        assert_eq!(main, dir.canonicalize().unwrap().join("app.js"));
        assert!(sdk.join("testing.js").is_file());
        let package = std::fs::read_to_string(dir.join("package.json")).unwrap();
        assert!(package.contains(&format!(r#""@bytecodealliance/jco": "{JCO_VERSION}""#)));
    }
}

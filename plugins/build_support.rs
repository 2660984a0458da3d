// Shared by the build scripts of the `tests` and `examples` crates (via `include!`): builds the
// example plugins for wasm32-wasip2 and returns the folder holding the `.wasm` files.

/// Builds `plugins/` (its own workspace) in release mode into `plugins/target`.
fn build_example_plugins() -> std::path::PathBuf {
    use std::path::PathBuf;
    use std::process::Command;

    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir.parent().expect("crate lives in the workspace").to_path_buf();
    let plugins = root.join("plugins");
    println!("cargo:rerun-if-changed={}", root.join("wit").display());
    println!("cargo:rerun-if-changed={}", root.join("plugin-sdk").join("src").display());
    println!("cargo:rerun-if-changed={}", root.join("plugin-sdk").join("Cargo.toml").display());
    for entry in std::fs::read_dir(&plugins).expect("plugins/ exists").flatten() {
        // Not `plugins/target`: watching build output would rerun this script on every build.
        if entry.file_name() != "target" {
            println!("cargo:rerun-if-changed={}", entry.path().display());
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&plugins)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(plugins.join("target"));
    // What the outer build set for itself must not leak into the plugin build.
    for (key, _) in std::env::vars() {
        let outer = key.starts_with("CARGO_FEATURE_")
            || key.starts_with("CARGO_CFG_")
            || matches!(
                key.as_str(),
                "RUSTFLAGS" | "CARGO_ENCODED_RUSTFLAGS" | "CARGO_TARGET_DIR" | "CARGO_BUILD_TARGET" | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER" | "TARGET" | "HOST" | "OUT_DIR" | "PROFILE" | "OPT_LEVEL" | "DEBUG"
                    | "CARGO_MANIFEST_DIR" | "CARGO_PKG_NAME" | "CARGO_PRIMARY_PACKAGE"
            );
        if outer {
            cmd.env_remove(&key);
        }
    }
    let status = cmd.status().expect("running cargo to build the example plugins");
    if !status.success() {
        panic!(
            "building the example plugins failed. Is the wasm32-wasip2 target installed? \
             Run `rustup target add wasm32-wasip2` (the README's commands do this)."
        );
    }
    plugins.join("target").join("wasm32-wasip2").join("release")
}

/// Builds the Python (componentize-py) and JavaScript (componentize-js) example plugins into
/// `out` as `mpreg_plugin_pystats.wasm` and `mpreg_plugin_jstext.wasm`. Their toolchains come
/// from PyPI and npm, installed under `plugins/target` (a virtualenv and an npm prefix), pinned.
/// Each plugin is rebuilt only when one of its sources is newer than its component.
#[allow(dead_code)]
fn build_other_language_plugins(out: &std::path::Path) {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    const COMPONENTIZE_PY: &str = "componentize-py==0.25.0";

    fn newest(path: &Path) -> std::time::SystemTime {
        let mut t = std::fs::metadata(path).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        if path.is_dir() {
            for e in std::fs::read_dir(path).into_iter().flatten().flatten() {
                t = t.max(newest(&e.path()));
            }
        }
        t
    }
    fn stale(output: &Path, inputs: &[PathBuf]) -> bool {
        let built = match std::fs::metadata(output).and_then(|m| m.modified()) {
            Ok(t) => t,
            Err(_) => return true,
        };
        inputs.iter().any(|i| newest(i) > built)
    }
    fn run(cmd: &mut Command, what: &str) {
        let status = cmd.status().unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
        if !status.success() {
            panic!("{what} failed ({status}): {cmd:?}");
        }
    }

    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let plugins = manifest_dir.parent().expect("crate lives in the workspace").join("plugins");
    let tools = plugins.join("target").join("tools");
    let wit = plugins.parent().expect("workspace root").join("wit");

    // The two builds are independent and partly single-threaded: run them side by side.
    std::thread::scope(|scope| {
        let python = scope.spawn(|| {
            // Python.
            let py = plugins.join("python-stats");
            let py_out = out.join("mpreg_plugin_pystats.wasm");
            if stale(&py_out, &[py.join("app.py"), py.join("wit"), wit.clone()]) {
                let venv = tools.join("python-venv");
                let bin = venv.join("bin");
                if !bin.join("componentize-py").exists() {
                    let python = std::env::var("PYTHON").unwrap_or_else(|_| "python3".into());
                    run(Command::new(python).args(["-m", "venv"]).arg(&venv), "creating a Python virtualenv");
                    run(
                        Command::new(bin.join("pip")).args(["install", "--quiet", "--disable-pip-version-check", COMPONENTIZE_PY]),
                        "installing componentize-py from PyPI",
                    );
                }
                run(
                    Command::new(bin.join("componentize-py"))
                        .current_dir(&py)
                        .args(["-d", "wit", "-w", "pystats", "componentize", "app", "-o"])
                        .arg(&py_out),
                    "building the Python plugin with componentize-py",
                );
            }
        });
        let javascript = scope.spawn(|| {
            // JavaScript.
            let js = plugins.join("js-text");
            let js_out = out.join("mpreg_plugin_jstext.wasm");
            if stale(&js_out, &[js.join("app.js"), js.join("wit"), js.join("package-lock.json"), wit.clone()]) {
                let npm_dir = tools.join("js");
                let cli = npm_dir.join("node_modules").join(".bin").join("componentize-js");
                if !cli.exists() || stale(&cli, &[js.join("package-lock.json")]) {
                    std::fs::create_dir_all(&npm_dir).expect("creating plugins/target/tools/js");
                    for f in ["package.json", "package-lock.json"] {
                        std::fs::copy(js.join(f), npm_dir.join(f)).expect("copying the npm manifest");
                    }
                    run(
                        Command::new("npm").current_dir(&npm_dir).args(["install", "--no-audit", "--no-fund", "--loglevel=error"]),
                        "installing componentize-js from npm",
                    );
                }
                run(
                    Command::new(&cli)
                        .current_dir(&js)
                        .args(["app.js", "--wit", "wit", "--world-name", "jstext", "-d", "http", "-d", "fetch-event", "-o"])
                        .arg(&js_out),
                    "building the JavaScript plugin with componentize-js",
                );
            }
        });
        for (name, handle) in [("Python", python), ("JavaScript", javascript)] {
            if handle.join().is_err() {
                panic!("building the {name} example plugin failed (see above)");
            }
        }
    });
}

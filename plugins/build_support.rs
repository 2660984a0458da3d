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

//! Builds the example plugins (Rust, Python, JavaScript) so the scenarios can load them from `MPREG_PLUGIN_DIR`.

include!("../plugins/build_support.rs");

fn main() {
    let dir = build_example_plugins();
    build_other_language_plugins(&dir);
    println!("cargo:rustc-env=MPREG_PLUGIN_DIR={}", dir.display());
}

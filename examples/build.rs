//! Builds the example plugins so the demos can load them from `MPREG_PLUGIN_DIR`.

include!("../plugins/build_support.rs");

fn main() {
    let dir = build_example_plugins();
    println!("cargo:rustc-env=MPREG_PLUGIN_DIR={}", dir.display());
}

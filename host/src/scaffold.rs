//! `mpreg plugin new` and `mpreg plugin build`: a ready-to-build plugin project in Rust, Python
//! or JavaScript, and building one into a component whose metadata is then read back and shown.
//!
//! Every project carries its own copy of our WIT package (`wit/deps/mpreg-plugin/plugin.wit`,
//! written from the copy compiled into this binary), so it builds outside this repository.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The plugin ABI, as compiled into this binary.
pub const PLUGIN_WIT: &str = include_str!("../../wit/plugin.wit");

/// Where the Rust SDK lives when this binary was built from a checkout of the repository.
pub const SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

/// Pinned toolchains of the other languages.
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.0";
/// The npm package (and version) that builds JavaScript plugins.
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// A plugin language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust with the MPREG SDK (cargo, wasm32-wasip2).
    Rust,
    /// Python with componentize-py.
    Python,
    /// JavaScript with componentize-js.
    Js,
}

/// Why a project could not be created or built.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name cannot be a plugin (and crate, and WIT package) name.
    #[error(
        "plugin name '{0}' must start with a lowercase letter and contain only a-z, 0-9 and '-'"
    )]
    BadName(String),
    /// The target folder exists.
    #[error("{0} already exists; choose another name or --dir")]
    Exists(PathBuf),
    /// No project recognised in the folder.
    #[error(
        "{0} holds no plugin project (expected Cargo.toml, app.py or package.json with app.js)"
    )]
    NoProject(PathBuf),
    /// A file could not be written or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A build tool is missing or failed.
    #[error("{0}")]
    Build(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ScaffoldError + '_ {
    move |source| ScaffoldError::Io {
        path: path.to_owned(),
        source,
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z'))
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// Creates `dir` with a project for plugin `name` in `lang`. `sdk` is the Rust SDK folder the
/// Rust template depends on. Returns the files written.
pub fn new_project(
    dir: &Path,
    name: &str,
    lang: Lang,
    sdk: &Path,
) -> Result<Vec<PathBuf>, ScaffoldError> {
    if !valid_name(name) {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    if dir.exists() {
        return Err(ScaffoldError::Exists(dir.to_owned()));
    }
    let snake = name.replace('-', "_");
    let world = format!(
        "package local:{name};\n\n\
         /// The functions of this plugin. Add exports here, implement them, and list them in\n\
         /// the manifest that `describe` returns.\n\
         world {name} {{\n    include mpreg:plugin/plugin@0.1.0;\n\n    \
         /// Greets `name`.\n    export hello: func(name: string) -> string;\n    \
         /// `a + b`, or an error when it overflows.\n    \
         export add: func(a: s32, b: s32) -> result<s32, string>;\n}}\n"
    );
    let mut files: Vec<(PathBuf, String)> = vec![
        (PathBuf::from("wit/world.wit"), world),
        (
            PathBuf::from("wit/deps/mpreg-plugin/plugin.wit"),
            PLUGIN_WIT.to_owned(),
        ),
    ];
    match lang {
        Lang::Rust => {
            let sdk = sdk.canonicalize().map_err(|_| {
                ScaffoldError::Build(format!(
                    "the Rust SDK was not found at {}; pass --sdk <path to mpreg's plugin-sdk>",
                    sdk.display()
                ))
            })?;
            files.push(("Cargo.toml".into(), rust_cargo_toml(name, &sdk)));
            files.push(("src/lib.rs".into(), rust_lib(name, &snake)));
        }
        Lang::Python => files.push(("app.py".into(), python_app(name, &snake))),
        Lang::Js => {
            files.push(("app.js".into(), js_app(name, &snake)));
            files.push(("package.json".into(), js_package(name)));
        }
    }
    files.push((
        ".gitignore".into(),
        "target/\nnode_modules/\n*.wasm\n".into(),
    ));
    let mut written = Vec::new();
    for (rel, text) in files {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

fn rust_cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n\
         [dependencies]\nmpreg-plugin-sdk = {{ path = {:?} }}\n\n\
         [profile.release]\nopt-level = 3\nlto = true\ncodegen-units = 1\nstrip = true\n\n\
         # A project of its own, even when created inside another workspace.\n[workspace]\n",
        sdk.display().to_string()
    )
}

fn rust_lib(name: &str, snake: &str) -> String {
    format!(
        r#"//! `{name}`: an MPREG plugin. Build with `mpreg plugin build`, publish with
//! `mpreg plugin publish {name}.wasm --node ws://127.0.0.1:6666 --token …`.

use mpreg_plugin_sdk::{{Command, Manifest}};

mpreg_plugin_sdk::plugin! {{
    wit: "wit",
    world: "local:{name}/{name}",
    export: Plugin,
    describe: {{
        Manifest::new("{name}", env!("CARGO_PKG_VERSION"))
            .command(
                Command::new("{snake}_hello")
                    .export("hello")
                    .function_id("{name}.hello")
                    .describe("greets someone"),
            )
            .command(
                Command::new("{snake}_add")
                    .export("add")
                    .function_id("{name}.add")
                    .describe("adds two numbers"),
            )
    }},
}}

struct Plugin;

impl Guest for Plugin {{
    fn hello(name: String) -> String {{
        mpreg_plugin_sdk::log::info(&format!("greeting {{name}}"));
        format!("hello, {{name}}, from {name}")
    }}

    fn add(a: i32, b: i32) -> Result<i32, String> {{
        a.checked_add(b).ok_or_else(|| format!("{{a}} + {{b}} overflows s32"))
    }}
}}
"#
    )
}

fn python_app(name: &str, snake: &str) -> String {
    format!(
        r#""""{name}: an MPREG plugin in Python.

Build:   mpreg plugin build      (runs: componentize-py -d wit -w {name} componentize app -o {name}.wasm)
Needs:   pip install {COMPONENTIZE_PY}
"""

import wit_world
from wit_world import exports
from wit_world.imports import log, types
from componentize_py_types import Err

VERSION = "0.1.0"


class WitWorld(wit_world.WitWorld):
    def hello(self, name):
        log.log(log.Level.INFO, f"greeting {{name}}")
        return f"hello, {{name}}, from {name}"

    def add(self, a, b):
        total = a + b
        if not -(2**31) <= total < 2**31:
            raise Err(f"{{a}} + {{b}} overflows s32")
        return total


class Metadata(exports.Metadata):
    def describe(self):
        return types.Manifest(
            name="{name}",
            version=VERSION,
            resources=[],
            commands=[
                types.Command("{snake}_hello", "hello", "{name}.hello", [], "greets someone"),
                types.Command("{snake}_add", "add", "{name}.add", [], "adds two numbers"),
            ],
        )
"#
    )
}

fn js_app(name: &str, snake: &str) -> String {
    format!(
        r#"// {name}: an MPREG plugin in JavaScript.
//
// Build: mpreg plugin build   (runs componentize-js; `npm install` first fetches it)

import {{ log }} from "mpreg:plugin/log@0.1.0";

export function hello(name) {{
  log("info", `greeting ${{name}}`);
  return `hello, ${{name}}, from {name}`;
}}

export function add(a, b) {{
  const total = a + b;
  if (total > 2147483647 || total < -2147483648) {{
    throw `${{a}} + ${{b}} overflows s32`;
  }}
  return total;
}}

export const metadata = {{
  describe() {{
    return {{
      name: "{name}",
      version: "0.1.0",
      resources: [],
      commands: [
        {{ name: "{snake}_hello", exportName: "hello", functionId: "{name}.hello", resources: [], description: "greets someone" }},
        {{ name: "{snake}_add", exportName: "add", functionId: "{name}.add", resources: [], description: "adds two numbers" }},
      ],
    }};
  }},
}};
"#
    )
}

fn js_package(name: &str) -> String {
    let (pkg, version) = COMPONENTIZE_JS
        .rsplit_once('@')
        .unwrap_or((COMPONENTIZE_JS, "latest"));
    format!(
        "{{\n  \"name\": \"{name}\",\n  \"private\": true,\n  \"type\": \"module\",\n  \
         \"dependencies\": {{\n    \"{pkg}\": \"{version}\",\n    \
         \"@bytecodealliance/preview2-shim\": \"0.25.0\"\n  }}\n}}\n"
    )
}

/// Which language the project in `dir` is written in.
pub fn detect(dir: &Path) -> Result<Lang, ScaffoldError> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Lang::Rust)
    } else if dir.join("app.py").is_file() {
        Ok(Lang::Python)
    } else if dir.join("app.js").is_file() && dir.join("package.json").is_file() {
        Ok(Lang::Js)
    } else {
        Err(ScaffoldError::NoProject(dir.to_owned()))
    }
}

/// The world name in `wit/world.wit` (`world <name> {`).
fn world_name(dir: &Path) -> Result<String, ScaffoldError> {
    let path = dir.join("wit").join("world.wit");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    text.lines()
        .find_map(|l| {
            let rest = l.trim().strip_prefix("world ")?;
            Some(rest.trim_end_matches('{').trim().to_owned())
        })
        .ok_or_else(|| ScaffoldError::Build(format!("{} declares no world", path.display())))
}

/// Finds `tool` in the project's `node_modules/.bin`, then in `extra`, then on `PATH`.
fn find_tool(dir: &Path, tool: &str, extra: &[PathBuf]) -> Option<PathBuf> {
    let local = dir.join("node_modules").join(".bin").join(tool);
    if local.is_file() {
        return Some(local);
    }
    let path: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    extra
        .iter()
        .chain(&path)
        .map(|p| p.join(tool))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), ScaffoldError> {
    let status = cmd
        .status()
        .map_err(|e| ScaffoldError::Build(format!("{what}: cannot run {cmd:?}: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(ScaffoldError::Build(format!("{what} failed ({status})")))
    }
}

/// Builds the project in `dir` into a component and returns its path.
pub fn build(dir: &Path) -> Result<PathBuf, ScaffoldError> {
    build_with(dir, &[])
}

/// [`build`], looking for componentize-py / componentize-js in `tool_dirs` before `PATH`.
pub fn build_with(dir: &Path, tool_dirs: &[PathBuf]) -> Result<PathBuf, ScaffoldError> {
    let dir = dir.canonicalize().map_err(io(dir))?;
    match detect(&dir)? {
        Lang::Rust => {
            let manifest = dir.join("Cargo.toml");
            let text = std::fs::read_to_string(&manifest).map_err(io(&manifest))?;
            let crate_name = text
                .lines()
                .find_map(|l| {
                    let v = l.trim().strip_prefix("name")?.trim().strip_prefix('=')?;
                    Some(v.trim().trim_matches('"').to_owned())
                })
                .ok_or_else(|| ScaffoldError::Build("Cargo.toml has no package name".into()))?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(
                Command::new(cargo).current_dir(&dir).args([
                    "build",
                    "--release",
                    "--target",
                    "wasm32-wasip2",
                ]),
                "cargo build --target wasm32-wasip2 (install the target with \
                 `rustup target add wasm32-wasip2`)",
            )?;
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| dir.join("target"));
            let built = target
                .join("wasm32-wasip2")
                .join("release")
                .join(format!("{}.wasm", crate_name.replace('-', "_")));
            let out = dir.join(format!("{crate_name}.wasm"));
            std::fs::copy(&built, &out).map_err(io(&built))?;
            Ok(out)
        }
        Lang::Python => {
            let world = world_name(&dir)?;
            let tool = find_tool(&dir, "componentize-py", tool_dirs).ok_or_else(|| {
                ScaffoldError::Build(format!(
                    "componentize-py is not installed: pip install {COMPONENTIZE_PY}"
                ))
            })?;
            let out = dir.join(format!("{world}.wasm"));
            run(
                Command::new(tool)
                    .current_dir(&dir)
                    .args(["-d", "wit", "-w", &world, "componentize", "app", "-o"])
                    .arg(&out),
                "componentize-py",
            )?;
            Ok(out)
        }
        Lang::Js => {
            let world = world_name(&dir)?;
            let tool = match find_tool(&dir, "componentize-js", tool_dirs) {
                Some(t) => t,
                None => {
                    run(
                        Command::new("npm").current_dir(&dir).args([
                            "install",
                            "--no-audit",
                            "--no-fund",
                        ]),
                        "npm install (fetches componentize-js)",
                    )?;
                    find_tool(&dir, "componentize-js", tool_dirs).ok_or_else(|| {
                        ScaffoldError::Build(format!(
                            "componentize-js missing after npm install; add {COMPONENTIZE_JS}"
                        ))
                    })?
                }
            };
            let out = dir.join(format!("{world}.wasm"));
            run(
                Command::new(tool)
                    .current_dir(&dir)
                    .args([
                        "app.js",
                        "--wit",
                        "wit",
                        "--world-name",
                        &world,
                        "-d",
                        "http",
                        "-d",
                        "fetch-event",
                        "-o",
                    ])
                    .arg(&out),
                "componentize-js",
            )?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_projects_are_complete() {
        assert!(valid_name("my-plugin2"));
        for bad in ["", "My", "1a", "a_b", "a-", "a--b", "a b"] {
            assert!(!valid_name(bad), "{bad}");
        }
        let tmp = tempfile::tempdir().expect("tempdir");
        for (lang, marker) in [
            (Lang::Rust, "Cargo.toml"),
            (Lang::Python, "app.py"),
            (Lang::Js, "app.js"),
        ] {
            let dir = tmp.path().join(format!("{lang:?}"));
            let files = new_project(&dir, "demo-fn", lang, Path::new(SDK_PATH)).expect("new");
            assert!(files.iter().any(|f| f.ends_with(marker)));
            assert_eq!(detect(&dir).expect("detect"), lang);
            assert_eq!(world_name(&dir).expect("world"), "demo-fn");
            let wit = std::fs::read_to_string(dir.join("wit/deps/mpreg-plugin/plugin.wit"))
                .expect("wit copy");
            assert!(wit.contains("package mpreg:plugin@0.1.0"));
            assert!(matches!(
                new_project(&dir, "demo-fn", lang, Path::new(SDK_PATH)),
                Err(ScaffoldError::Exists(_))
            ));
        }
        assert!(matches!(
            new_project(
                &tmp.path().join("x"),
                "Bad",
                Lang::Rust,
                Path::new(SDK_PATH)
            ),
            Err(ScaffoldError::BadName(_))
        ));
        assert!(matches!(
            detect(tmp.path()),
            Err(ScaffoldError::NoProject(_))
        ));
    }
}

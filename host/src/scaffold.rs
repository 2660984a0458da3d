//! `mpreg plugin new` and `mpreg plugin build`: a ready-to-build plugin project in Rust, Python
//! or JavaScript, and building one into a component whose metadata is then read back and shown.
//!
//! Every project carries its own copy of our WIT package (`wit/deps/mpreg-plugin/plugin.wit`,
//! written from the copy compiled into this binary), so it builds outside this repository.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::runtime::stamp::JsonStyle;

/// The plugin ABI, as compiled into this binary.
pub const PLUGIN_WIT: &str = include_str!("../../wit/plugin.wit");

/// Where the Rust SDK lives in the checkout this binary was built from (tests build against it;
/// `mpreg plugin new` uses [`installed_sdk`]).
pub const SDK_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugin-sdk");

/// The Rust SDK's source and manifest, compiled into this binary so that a project builds on a
/// machine without MPREG's repository ([`installed_sdk`] writes them out).
const SDK_LIB: &str = include_str!("../../plugin-sdk/src/lib.rs");
const SDK_MANIFEST: &str = include_str!("../../plugin-sdk/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../Cargo.toml");

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

impl From<crate::project::Language> for Lang {
    fn from(l: crate::project::Language) -> Lang {
        match l {
            crate::project::Language::Rust => Lang::Rust,
            crate::project::Language::Python => Lang::Python,
            crate::project::Language::Js => Lang::Js,
        }
    }
}

impl From<Lang> for crate::project::Language {
    fn from(l: Lang) -> crate::project::Language {
        match l {
            Lang::Rust => crate::project::Language::Rust,
            Lang::Python => crate::project::Language::Python,
            Lang::Js => crate::project::Language::Js,
        }
    }
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
    // Python and JavaScript plugins are typed: their WIT is generated when they build
    // (crate::typed).
    let mut files: Vec<(PathBuf, String)> = Vec::new();
    if lang == Lang::Rust {
        files.push((PathBuf::from("wit/world.wit"), world));
        files.push((
            PathBuf::from("wit/deps/mpreg-plugin/plugin.wit"),
            PLUGIN_WIT.to_owned(),
        ));
    }
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
        Lang::Python => files.push(("app.py".into(), python_app(name))),
        Lang::Js => {
            files.push(("app.js".into(), js_app(name)));
            files.push(("package.json".into(), js_package(name)));
        }
    }
    files.push((
        crate::project::FILE.into(),
        crate::project::Manifest::new(name, lang.into()).to_toml(),
    ));
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

/// The SDK's `Cargo.toml` on its own: the workspace's inherited keys and dependency versions
/// filled in, and a `[workspace]` of its own.
fn standalone_sdk_manifest() -> Result<String, ScaffoldError> {
    let bad = |why: &str| ScaffoldError::Build(format!("the SDK manifest compiled in: {why}"));
    let sdk: toml::Table = toml::from_str(SDK_MANIFEST).map_err(|e| bad(&e.to_string()))?;
    let ws: toml::Table = toml::from_str(WORKSPACE_MANIFEST).map_err(|e| bad(&e.to_string()))?;
    let ws = ws
        .get("workspace")
        .and_then(|w| w.as_table())
        .ok_or_else(|| bad("no workspace"))?;
    let inherited = |section: &str, key: &str| {
        ws.get(section)
            .and_then(|t| t.as_table())
            .and_then(|t| t.get(key))
            .cloned()
    };
    // Each key of `[package]` and `[dependencies]` as written, or the workspace's where it
    // says `workspace = true`.
    let mut out = toml::Table::new();
    for section in ["package", "dependencies"] {
        let mut filled = toml::Table::new();
        let own = sdk.get(section).and_then(|t| t.as_table());
        for (key, value) in own.into_iter().flatten() {
            let value = match value.get("workspace") {
                Some(_) => inherited(section, key).ok_or_else(|| bad(key))?,
                None => value.clone(),
            };
            filled.insert(key.clone(), value);
        }
        out.insert(section.into(), filled.into());
    }
    out.insert("workspace".into(), toml::Table::new().into());
    toml::to_string(&out).map_err(|e| bad(&e.to_string()))
}

/// The per-user data folder of MPREG's tools (`$XDG_DATA_HOME/mpreg` or
/// `~/.local/share/mpreg`).
pub fn data_dir() -> PathBuf {
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("mpreg")
}

/// The Rust SDK this binary carries, written once per SDK version into the per-user data folder
/// (`<data>/sdk/<version>-<digest>/plugin-sdk`); the Rust template depends on it by path, so a
/// project builds wherever this binary runs, with no checkout of MPREG.
pub fn installed_sdk() -> Result<PathBuf, ScaffoldError> {
    let manifest = standalone_sdk_manifest()?;
    let digest = crate::digest::sha256_hex(format!("{manifest}{SDK_LIB}{PLUGIN_WIT}").as_bytes());
    let root =
        data_dir()
            .join("sdk")
            .join(format!("{}-{}", env!("CARGO_PKG_VERSION"), &digest[..12]));
    let sdk = root.join("plugin-sdk");
    if sdk.join("src/lib.rs").is_file() {
        return Ok(sdk);
    }
    // Written beside, then renamed: a half-written SDK is never seen by a build.
    let parent = data_dir().join("sdk");
    std::fs::create_dir_all(&parent).map_err(io(&parent))?;
    let staging = parent.join(format!(".staging-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    for (rel, text) in [
        ("plugin-sdk/Cargo.toml", manifest.as_str()),
        ("plugin-sdk/src/lib.rs", SDK_LIB),
        ("wit/plugin.wit", PLUGIN_WIT),
    ] {
        let path = staging.join(rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    match std::fs::rename(&staging, &root) {
        Ok(()) => Ok(sdk),
        // Another process wrote it first.
        Err(_) if sdk.join("src/lib.rs").is_file() => {
            let _ = std::fs::remove_dir_all(&staging);
            Ok(sdk)
        }
        Err(e) => Err(ScaffoldError::Io {
            path: root,
            source: e,
        }),
    }
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

fn python_app(name: &str) -> String {
    format!(
        r#""""{name}: an MPREG plugin in Python.

Plain functions with type hints: `mpreg dev` (or `mpreg plugin build`) writes the WIT world and
the plugin's metadata from them and builds with componentize-py ({COMPONENTIZE_PY}). Each
public function is a command of that name; a name starting with _ stays private. Records are
dataclasses, enums are Enum classes, `Optional[...]` may be null, `dict[str, ...]` is a JSON
object. Raising an exception fails the call with its message; `logging` goes to the node's log.
"""

import logging
from dataclasses import dataclass
from typing import Optional


@dataclass
class Greeting:
    text: str
    shouted: bool


def hello(name: str) -> str:
    """Greets `name`."""
    logging.info("greeting %s", name)
    return f"hello, {{name}}, from {name}"


def add(a: int, b: int) -> int:
    """`a + b`; more than 64 bits is an error."""
    return a + b


def greet(name: str, punctuation: Optional[str] = None) -> Greeting:
    """A greeting record; `punctuation` may be null."""
    text = f"hello, {{name}}{{punctuation or '!'}}"
    return Greeting(text=text, shouted=text.isupper())
"#
    )
}

fn js_app(name: &str) -> String {
    format!(
        r#"// {name}: an MPREG plugin in JavaScript.
//
// Exported functions with JSDoc types: `mpreg dev` (or `mpreg plugin build`) writes the WIT
// world and the plugin's metadata from the comments and builds with componentize-js (`npm
// install` fetches it). Each exported function is a command of that name. Records are
// `@typedef {{Object}}` with `@property` lines, enums `@typedef {{"a"|"b"}}`, `?T` may be null,
// `Object<string, T>` is a JSON object; `number` is a float (whole numbers come back as JSON
// integers), `bigint` a 64-bit integer. Throwing fails the call with the error's message;
// `console` goes to the node's log.

/**
 * @typedef {{Object}} Greeting
 * @property {{string}} text
 * @property {{boolean}} shouted
 */

/**
 * Greets `name`.
 * @param {{string}} name
 * @returns {{string}}
 */
export function hello(name) {{
  console.log(`greeting ${{name}}`);
  return `hello, ${{name}}, from {name}`;
}}

/**
 * `a + b`; past 2^53 is an error.
 * @param {{number}} a
 * @param {{number}} b
 * @returns {{number}}
 */
export function add(a, b) {{
  const total = a + b;
  if (!Number.isSafeInteger(total)) {{
    throw new RangeError(`${{a}} + ${{b}} is past 2^53`);
  }}
  return total;
}}

/**
 * A greeting record; `punctuation` may be null.
 * @param {{string}} name
 * @param {{?string}} punctuation
 * @returns {{Greeting}}
 */
export function greet(name, punctuation) {{
  const text = `hello, ${{name}}${{punctuation ?? "!"}}`;
  return {{ text, shouted: text === text.toUpperCase() }};
}}
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

/// A built component.
#[derive(Debug)]
pub struct Built {
    /// Where it was written.
    pub path: PathBuf,
    /// Its bytes (stamped when the project has an `mpreg.toml`).
    pub bytes: Vec<u8>,
    /// The project's manifest, when it has one.
    pub manifest: Option<crate::project::Manifest>,
}

impl From<Built> for PathBuf {
    fn from(b: Built) -> PathBuf {
        b.path
    }
}

/// Builds the project in `dir` into a component and returns it.
pub fn build(dir: &Path) -> Result<Built, ScaffoldError> {
    build_with(dir, &[])
}

/// [`build`], looking for componentize-py / componentize-js in `tool_dirs` before `PATH`.
/// With an `mpreg.toml`, its build command (if any) is run and the component is stamped with
/// its name, version and cache rules ([`crate::runtime::stamp`]), in place.
pub fn build_with(dir: &Path, tool_dirs: &[PathBuf]) -> Result<Built, ScaffoldError> {
    let dir = dir.canonicalize().map_err(io(dir))?;
    let manifest =
        crate::project::Manifest::find(&dir).map_err(|e| ScaffoldError::Build(e.to_string()))?;
    let path = match manifest.as_ref().map(|m| &m.plugin) {
        Some(crate::project::PluginSection {
            build: Some(command),
            output: Some(output),
            ..
        }) => {
            run(
                Command::new("sh").current_dir(&dir).args(["-c", command]),
                &format!("the build command `{command}` of {}", crate::project::FILE),
            )?;
            (dir.join(output), JsonStyle::Wit)
        }
        Some(m) => language_build(&dir, m.language.into(), tool_dirs, manifest.as_ref())?,
        None => language_build(&dir, detect(&dir)?, tool_dirs, None)?,
    };
    let (path, style) = path;
    let mut bytes = std::fs::read(&path).map_err(io(&path))?;
    if let Some(m) = &manifest {
        let mut stamp = m.stamp();
        stamp.style = style;
        bytes = crate::runtime::stamp::write(&bytes, &stamp);
        std::fs::write(&path, &bytes).map_err(io(&path))?;
    }
    Ok(Built {
        path,
        bytes,
        manifest,
    })
}

/// The per-user cache folder of MPREG's tools (`$XDG_CACHE_HOME/mpreg` or `~/.cache/mpreg`).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("mpreg")
}

/// Whether rustup reports the wasm32-wasip2 target missing (`None`: no rustup to ask).
fn wasm_target_missing() -> Option<bool> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| !String::from_utf8_lossy(&out.stdout).contains("wasm32-wasip2"))
}

/// The language's own build of the project in `dir`; returns the component's path and how
/// its values look in JSON.
fn language_build(
    dir: &Path,
    lang: Lang,
    tool_dirs: &[PathBuf],
    manifest: Option<&crate::project::Manifest>,
) -> Result<(PathBuf, JsonStyle), ScaffoldError> {
    let dir = dir.to_owned();
    if !dir.join("wit").join("world.wit").is_file() {
        match lang {
            Lang::Python => {
                return typed_python_build(&dir, tool_dirs, manifest)
                    .map(|p| (p, JsonStyle::Python));
            }
            Lang::Js => {
                return typed_js_build(&dir, tool_dirs, manifest).map(|p| (p, JsonStyle::Js));
            }
            Lang::Rust => {}
        }
    }
    match lang {
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
            if wasm_target_missing() == Some(true) {
                return Err(ScaffoldError::Build(
                    "the Rust target wasm32-wasip2 is not installed: \
                     rustup target add wasm32-wasip2"
                        .into(),
                ));
            }
            // One target folder per user: every project shares the SDK's compiled
            // dependencies instead of building them again.
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| cache_dir().join("target"));
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            run(
                Command::new(cargo)
                    .current_dir(&dir)
                    .env("CARGO_TARGET_DIR", &target)
                    .args(["build", "--release", "--target", "wasm32-wasip2"]),
                "cargo build (the compiler's errors are above)",
            )?;
            let built = target
                .join("wasm32-wasip2")
                .join("release")
                .join(format!("{}.wasm", crate_name.replace('-', "_")));
            let out = dir.join(format!("{crate_name}.wasm"));
            std::fs::copy(&built, &out).map_err(io(&built))?;
            Ok((out, JsonStyle::Wit))
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
            Ok((out, JsonStyle::Wit))
        }
        Lang::Js => {
            let world = world_name(&dir)?;
            let out = dir.join(format!("{world}.wasm"));
            componentize_js(
                &dir,
                tool_dirs,
                Path::new("app.js"),
                Path::new("wit"),
                &world,
                &out,
            )?;
            Ok((out, JsonStyle::Wit))
        }
    }
}

/// Runs componentize-js on `entry` (fetching it with `npm install` when the project has not).
fn componentize_js(
    dir: &Path,
    tool_dirs: &[PathBuf],
    entry: &Path,
    wit: &Path,
    world: &str,
    out: &Path,
) -> Result<(), ScaffoldError> {
    let tool = match find_tool(dir, "componentize-js", tool_dirs) {
        Some(t) => t,
        None => {
            run(
                Command::new("npm")
                    .current_dir(dir)
                    .args(["install", "--no-audit", "--no-fund"]),
                "npm install (fetches componentize-js)",
            )?;
            find_tool(dir, "componentize-js", tool_dirs).ok_or_else(|| {
                ScaffoldError::Build(format!(
                    "componentize-js missing after npm install; add {COMPONENTIZE_JS}"
                ))
            })?
        }
    };
    run(
        Command::new(tool)
            .current_dir(dir)
            .arg(entry)
            .arg("--wit")
            .arg(wit)
            .args([
                "--world-name",
                world,
                "-d",
                "http",
                "-d",
                "fetch-event",
                "-o",
            ])
            .arg(out),
        "componentize-js (its report is above)",
    )
}

/// Writes the generated world (and the MPREG package beside it) and the glue module into
/// `target/mpreg-typed/` of `dir`; returns that folder.
fn write_generated(
    dir: &Path,
    world: String,
    glue_name: &str,
    glue: String,
) -> Result<PathBuf, ScaffoldError> {
    let generated = dir.join("target").join("mpreg-typed");
    let files = [
        (generated.join("wit").join("world.wit"), world),
        (
            generated
                .join("wit")
                .join("deps")
                .join("mpreg-plugin")
                .join("plugin.wit"),
            PLUGIN_WIT.to_owned(),
        ),
        (generated.join(glue_name), glue),
    ];
    for (path, text) in files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
    }
    Ok(generated)
}

/// The manifest a typed build needs (for the plugin's name and version).
fn typed_manifest<'a>(
    manifest: Option<&'a crate::project::Manifest>,
    lang: &str,
    source: &str,
) -> Result<&'a crate::project::Manifest, ScaffoldError> {
    manifest.ok_or_else(|| {
        ScaffoldError::Build(format!(
            "a {lang} plugin without wit/world.wit is built from {source} and needs {} for \
             its name and version (mpreg plugin new writes one)",
            crate::project::FILE
        ))
    })
}

/// Builds a JavaScript project with no `wit/`: WIT world and glue generated from `app.js`'s
/// JSDoc into `target/mpreg-typed/` ([`crate::typed::js`]).
fn typed_js_build(
    dir: &Path,
    tool_dirs: &[PathBuf],
    manifest: Option<&crate::project::Manifest>,
) -> Result<PathBuf, ScaffoldError> {
    use crate::typed::{self, js};
    let m = typed_manifest(manifest, "JavaScript", "its JSDoc")?;
    let path = dir.join(js::APP);
    let src = std::fs::read_to_string(&path).map_err(io(&path))?;
    let checked = typed::check(js::read(&src), js::APP, js::DECLARED)
        .map_err(|e| ScaffoldError::Build(e.to_string()))?;
    let name = &m.plugin.name;
    let generated = write_generated(
        dir,
        typed::world(name, &checked),
        js::GLUE,
        js::glue(name, &m.plugin.version, &checked),
    )?;
    let out = dir.join(format!("{name}.wasm"));
    componentize_js(
        dir,
        tool_dirs,
        &generated.join(js::GLUE),
        &generated.join("wit"),
        name,
        &out,
    )?;
    Ok(out)
}

/// The Python beside `componentize` (its virtual environment's), or `python3` on `PATH`.
fn python_for(componentize: &Path, dir: &Path, tool_dirs: &[PathBuf]) -> Option<PathBuf> {
    componentize
        .parent()
        .map(|bin| bin.join("python3"))
        .filter(|p| p.is_file())
        .or_else(|| find_tool(dir, "python3", tool_dirs))
}

/// Builds a Python project with no `wit/`: WIT world and glue generated from `app.py`'s type
/// hints into `target/mpreg-typed/` ([`crate::typed::python`]).
fn typed_python_build(
    dir: &Path,
    tool_dirs: &[PathBuf],
    manifest: Option<&crate::project::Manifest>,
) -> Result<PathBuf, ScaffoldError> {
    use crate::typed::{self, python};
    let m = typed_manifest(manifest, "Python", "its type hints")?;
    let tool = find_tool(dir, "componentize-py", tool_dirs).ok_or_else(|| {
        ScaffoldError::Build(format!(
            "componentize-py is not installed: pip install {COMPONENTIZE_PY}"
        ))
    })?;
    let python = python_for(&tool, dir, tool_dirs).ok_or_else(|| {
        ScaffoldError::Build("python3 is needed to read app.py's type hints".into())
    })?;
    let typed_err = |e: typed::TypedError| ScaffoldError::Build(e.to_string());
    let report = python::read(dir, &python).map_err(typed_err)?;
    let checked = typed::check(report.sig, "app.py", python::DECLARED).map_err(typed_err)?;
    let name = &m.plugin.name;
    let generated = write_generated(
        dir,
        typed::world(name, &checked),
        &format!("{}.py", python::GLUE),
        python::glue(name, &m.plugin.version, &checked, &report.imports),
    )?;
    let out = dir.join(format!("{name}.wasm"));
    run(
        Command::new(tool)
            .current_dir(dir)
            .arg("-d")
            .arg(generated.join("wit"))
            .env("RUST_BACKTRACE", "0")
            .args(["-w", name, "componentize", python::GLUE, "-p"])
            .arg(&generated)
            .arg("-p")
            .arg(dir)
            .arg("-o")
            .arg(&out),
        "componentize-py (its report is above)",
    )?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sdk_manifest_stands_alone() {
        let text = standalone_sdk_manifest().expect("manifest");
        let t: toml::Table = toml::from_str(&text).expect("toml");
        assert_eq!(t["package"]["name"].as_str(), Some("mpreg-plugin-sdk"));
        assert!(t["package"]["version"].is_str(), "{text}");
        assert!(t["dependencies"]["wit-bindgen"].is_str(), "{text}");
        assert!(!text.contains("workspace = true"), "{text}");
    }

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
            if lang != Lang::Rust {
                // Typed: the WIT is generated when it builds.
                assert!(!dir.join("wit").exists());
            } else {
                assert_eq!(world_name(&dir).expect("world"), "demo-fn");
                let wit = std::fs::read_to_string(dir.join("wit/deps/mpreg-plugin/plugin.wit"))
                    .expect("wit copy");
                assert!(wit.contains("package mpreg:plugin@0.1.0"));
            }
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

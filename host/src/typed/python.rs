//! Typed Python: `app.py` with plain functions and type hints. The reader
//! (`analyze_py.py`, run with the Python beside componentize-py) parses the source without
//! running it; [`glue`] writes `mpreg_app.py`, the module componentize-py builds, which
//! converts between the user's dataclasses/enums/dicts and the bindings' types, turns an
//! exception into the call's error (its traceback goes to the plugin log), routes `logging`
//! to the node's log, answers `describe`, and imports at build time every module the code
//! imports (lazily imported ones included) so the component carries them — or fails the build
//! naming the module.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use super::{Checked, Signatures, Ty, TypedError, kebab, upper_camel};

/// The reader, run as `python3 - DIR MODULE`.
pub const READER: &str = include_str!("analyze_py.py");

/// The module name of the user's code.
pub const APP: &str = "app";

/// What a named type must be, for error messages.
pub const DECLARED: &str = "a dataclass or enum of app.py";

/// The module componentize-py builds.
pub const GLUE: &str = "mpreg_app";

/// A module the code imports.
#[derive(Debug, Clone, Deserialize)]
pub struct Import {
    /// Dotted module name.
    pub module: String,
    /// `file:line`.
    pub at: String,
    /// Inside a `try` that handles `ImportError`: missing is fine.
    #[serde(default)]
    pub optional: bool,
}

/// What the reader reports.
#[derive(Debug, Clone, Deserialize)]
pub struct Report {
    /// Signatures.
    #[serde(flatten)]
    pub sig: Signatures,
    /// Every import found.
    #[serde(default)]
    pub imports: Vec<Import>,
    /// The project's own modules the app uses.
    #[serde(default)]
    pub local: Vec<String>,
}

/// Runs the reader on `<dir>/app.py` with `python`.
pub fn read(dir: &Path, python: &Path) -> Result<Report, TypedError> {
    use std::io::Write as _;
    let mut child = Command::new(python)
        .arg("-")
        .arg(dir)
        .arg(APP)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| TypedError::Reader(format!("cannot run {}: {e}", python.display())))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(READER.as_bytes())
            .map_err(|e| TypedError::Reader(format!("{}: {e}", python.display())))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| TypedError::Reader(format!("{}: {e}", python.display())))?;
    if !out.status.success() {
        return Err(TypedError::Reader(format!(
            "reading app.py's signatures failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| TypedError::Reader(format!("the signature reader answered nonsense: {e}")))
}

/// Modules the build must not import itself (generated bindings, compiler directives).
fn generated(module: &str) -> bool {
    let top = module.split('.').next().unwrap_or(module);
    matches!(
        top,
        "__future__"
            | "wit_world"
            | "componentize_py_types"
            | "componentize_py_runtime"
            | "componentize_py_async_support"
    ) || top == APP
        || top == GLUE
}

/// A Python string literal.
fn lit(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// How componentize-py spells a WIT name as a Python attribute.
fn snake(src: &str) -> String {
    kebab(src).unwrap_or_default().replace('-', "_")
}

/// Writes converter functions, one per distinct type, and names them.
struct Converters<'a> {
    checked: &'a Checked,
    code: String,
    names: BTreeMap<(bool, String), Option<String>>,
    next: usize,
}

impl<'a> Converters<'a> {
    /// The converter for `ty` towards the bindings (`out`) or towards the user's code, or
    /// `None` when the value passes as is.
    fn conv(&mut self, ty: &Ty, out: bool) -> Option<String> {
        let key = (out, format!("{ty:?}"));
        if let Some(done) = self.names.get(&key) {
            return done.clone();
        }
        let id = self.next;
        self.next += 1;
        let name = format!("_{}{id}", if out { "o" } else { "i" });
        let apply = |c: &Option<String>, v: &str| match c {
            Some(f) => format!("{f}({v})"),
            None => v.to_owned(),
        };
        let body = match ty {
            // Values returned are checked here, so a wrong one is the call's error with a
            // clear message instead of a trap in the bindings.
            Ty::Str => out.then(|| "_str(v)".to_owned()),
            Ty::Int => out.then(|| "_s64(v)".to_owned()),
            Ty::Float => out.then(|| "_f64(v)".to_owned()),
            Ty::Bool => out.then(|| "_bool(v)".to_owned()),
            Ty::None => None,
            Ty::Bytes => out.then(|| "bytes(v)".to_owned()),
            Ty::List { of } => {
                let c = self.conv(of, out);
                c.is_some()
                    .then(|| format!("[{} for x in v]", apply(&c, "x")))
            }
            Ty::Option { of } => {
                let c = self.conv(of, out);
                c.is_some()
                    .then(|| format!("None if v is None else {}", apply(&c, "v")))
            }
            Ty::Tuple { items } => {
                let cs: Vec<Option<String>> = items.iter().map(|t| self.conv(t, out)).collect();
                cs.iter().any(Option::is_some).then(|| {
                    let parts: Vec<String> = cs
                        .iter()
                        .enumerate()
                        .map(|(i, c)| apply(c, &format!("v[{i}]")))
                        .collect();
                    format!("({},)", parts.join(", "))
                })
            }
            Ty::Dict { value } => {
                let c = self.conv(value, out);
                Some(if out {
                    format!("[(_key(k), {}) for k, x in v.items()]", apply(&c, "x"))
                } else {
                    format!("{{k: {} for k, x in v}}", apply(&c, "x"))
                })
            }
            Ty::Named { name: n, .. } => {
                if let Some(r) = self.checked.record(n).cloned() {
                    let mut args = Vec::new();
                    for (field, fty) in &r.fields {
                        let c = self.conv(fty, out);
                        let get = if out {
                            format!("_field(v, {})", lit(field))
                        } else {
                            format!("v.{}", snake(field))
                        };
                        let target = if out { snake(field) } else { field.clone() };
                        args.push(format!("{target}={}", apply(&c, &get)));
                    }
                    let class = if out {
                        format!("wit_world.{}", upper_camel(&kebab(n).unwrap_or_default()))
                    } else {
                        format!("_app.{n}")
                    };
                    Some(format!("{class}({})", args.join(", ")))
                } else if let Some(e) = self.checked.enumeration(n).cloned() {
                    let wit_class =
                        format!("wit_world.{}", upper_camel(&kebab(n).unwrap_or_default()));
                    let pairs: Vec<String> = e
                        .cases
                        .iter()
                        .map(|c| {
                            let wit_case = kebab(c)
                                .unwrap_or_default()
                                .replace('-', "_")
                                .to_uppercase();
                            if out {
                                format!("_app.{n}.{c}: {wit_class}.{wit_case}")
                            } else {
                                format!("{wit_class}.{wit_case}: _app.{n}.{c}")
                            }
                        })
                        .collect();
                    let table = format!("{name}_table");
                    let _ = writeln!(self.code, "{table} = {{{}}}", pairs.join(", "));
                    Some(if out {
                        format!("{table}[v if isinstance(v, _app.{n}) else _app.{n}[v]]")
                    } else {
                        format!("{table}[v]")
                    })
                } else {
                    None
                }
            }
        };
        let result = body.map(|b| {
            let _ = writeln!(self.code, "def {name}(v):\n    return {b}\n");
            name.clone()
        });
        self.names.insert(key, result.clone());
        result
    }
}

/// `mpreg_app.py` for plugin `plugin` at `version`.
pub fn glue(plugin: &str, version: &str, checked: &Checked, imports: &[Import]) -> String {
    let mut conv = Converters {
        checked,
        code: String::new(),
        names: BTreeMap::new(),
        next: 0,
    };
    let mut methods = String::new();
    let mut commands = Vec::new();
    for f in &checked.sig.functions {
        let args: Vec<String> = f
            .params
            .iter()
            .enumerate()
            .map(|(i, (_, ty))| match conv.conv(ty, false) {
                Some(c) => format!("{c}(a{i})"),
                None => format!("a{i}"),
            })
            .collect();
        let params: Vec<String> = (0..f.params.len()).map(|i| format!("a{i}")).collect();
        let call = format!("_app.{}({})", f.name, args.join(", "));
        let body = match conv.conv(&f.returns, true) {
            Some(c) => format!("{c}({call})"),
            None => call,
        };
        let _ = write!(
            methods,
            "    def {method}(self{sep}{params}):\n        try:\n            return {body}\n        \
             except Err:\n            raise\n        except Exception as e:\n            \
             _fail({name}, e)\n\n",
            method = snake(&f.name),
            sep = if params.is_empty() { "" } else { ", " },
            params = params.join(", "),
            name = lit(&f.name),
        );
        commands.push(format!(
            "            types.Command({}, {}, {}, [], {}),",
            lit(&f.name),
            lit(&kebab(&f.name).unwrap_or_default()),
            lit(&format!("{plugin}.{}", f.name)),
            f.doc.as_deref().map_or_else(|| "None".to_owned(), lit),
        ));
    }
    let mut wanted: Vec<(String, String, bool)> = Vec::new();
    for i in imports.iter().filter(|i| !generated(&i.module)) {
        match wanted.iter_mut().find(|(m, _, _)| *m == i.module) {
            // A module imported anywhere without a guard must be there.
            Some(w) => w.2 &= i.optional,
            None => wanted.push((i.module.clone(), i.at.clone(), i.optional)),
        }
    }
    let preload: Vec<String> = wanted
        .iter()
        .map(|(m, at, opt)| {
            format!(
                "    ({}, {}, {}),",
                lit(m),
                lit(at),
                if *opt { "True" } else { "False" }
            )
        })
        .collect();
    format!(
        r#"# Generated by `mpreg plugin build` from app.py's signatures; do not edit.
import importlib as _importlib
import logging as _logging
import traceback as _traceback

import wit_world
from wit_world import exports
from wit_world.imports import log as _log, types
from componentize_py_types import Err

import {APP} as _app

# Every module the code imports, lazily imported ones included, is imported now, while the
# component is built, so the component carries it.
_MISSING = []
for _name, _at, _optional in [
{preload}
]:
    try:
        _importlib.import_module(_name)
    except ImportError as _e:
        if not _optional:
            _MISSING.append(f"{{_name}} (imported at {{_at}}): {{_e}}")
if _MISSING:
    raise ImportError(
        "mpreg: the component cannot carry these modules:\n  "
        + "\n  ".join(_MISSING)
        + "\n(install them into the environment componentize-py runs in, or remove the import)"
    )


class _ToNode(_logging.Handler):
    LEVELS = [(40, _log.Level.ERROR), (30, _log.Level.WARN), (20, _log.Level.INFO), (10, _log.Level.DEBUG)]

    def emit(self, record):
        level = next((l for n, l in self.LEVELS if record.levelno >= n), _log.Level.TRACE)
        _log.log(level, self.format(record))


_logging.basicConfig(level=_logging.DEBUG, handlers=[_ToNode()], format="%(message)s")


def _fail(name, e):
    _log.log(_log.Level.ERROR, f"{{name}} raised:\n" + _traceback.format_exc())
    raise Err(f"{{type(e).__name__}}: {{e}}")


def _field(v, name):
    return v[name] if isinstance(v, dict) else getattr(v, name)


def _wrong(what, v):
    return TypeError(f"expected {{what}}, got {{type(v).__name__}} {{v!r:.60}}")


def _str(v):
    if not isinstance(v, str):
        raise _wrong("str", v)
    return v


def _s64(v):
    if isinstance(v, bool) or not isinstance(v, int):
        raise _wrong("int", v)
    if not -(2**63) <= v < 2**63:
        raise OverflowError(f"{{v}} does not fit in a 64-bit integer")
    return v


def _f64(v):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _wrong("float", v)
    return float(v)


def _bool(v):
    if not isinstance(v, bool):
        raise _wrong("bool", v)
    return v


def _key(k):
    if not isinstance(k, str):
        raise TypeError(f"a dictionary key must be str, got {{type(k).__name__}}")
    return k


{converters}
class WitWorld(wit_world.WitWorld):
{methods}

class Metadata(exports.Metadata):
    def describe(self):
        return types.Manifest(
            name={plugin_lit},
            version={version_lit},
            resources=[],
            commands=[
{commands}
            ],
        )
"#,
        converters = conv.code,
        plugin_lit = lit(plugin),
        version_lit = lit(version),
        commands = commands.join("\n"),
        preload = preload.join("\n"),
    )
}

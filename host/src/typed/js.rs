//! Typed JavaScript: `app.js` with exported functions documented in JSDoc. [`read`] takes the
//! signatures from the comments (`@param {string} text`, `@returns {Object<string, number>}`,
//! `@typedef {Object} Point` with `@property` lines, `@typedef {"red"|"blue"} Color` for an
//! enum) without running the code; [`glue`] writes `mpreg_app.js`, the module
//! componentize-js builds, which imports `app.js`, converts maps, records and enums to what
//! the bindings expect, turns a thrown error into the call's error (its stack goes to the
//! plugin log), routes `console` to the node's log and answers `describe`.
//!
//! Types: `string`, `number` (f64; whole numbers come back as JSON integers), `bigint` (s64),
//! `boolean`, `Uint8Array` (bytes), `T[]` / `Array<T>`, `[A, B]` tuples, `?T` / `T|null` /
//! `T|undefined` (option), `Object<string, T>` / `Record<string, T>` / `{[k: string]: T}`
//! (maps), a typedef's name; `void` / `undefined` as a return type.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Checked, Enum, Function, Record, Signatures, Ty, kebab};

/// The user's module.
pub const APP: &str = "app.js";

/// What a named type must be, for error messages.
pub const DECLARED: &str = "a @typedef of app.js";

/// The module componentize-js builds.
pub const GLUE: &str = "mpreg_app.js";

/// The 1-based line of byte offset `at` in `src`.
fn line_of(src: &str, at: usize) -> u32 {
    u32::try_from(src[..at.min(src.len())].matches('\n').count() + 1).unwrap_or(u32::MAX)
}

/// One `/** … */` block: its tags as (tag, rest of the tag's text).
fn tags(block: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for raw in block.lines() {
        let line = raw.trim().trim_start_matches("/**").trim_end_matches("*/");
        let line = line.trim().trim_start_matches('*').trim();
        if let Some(rest) = line.strip_prefix('@') {
            let (tag, text) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
            out.push((tag.to_owned(), text.trim().to_owned()));
        } else if let Some(last) = out.last_mut() {
            // A tag's text may continue on the next line.
            if !line.is_empty() {
                last.1.push(' ');
                last.1.push_str(line);
            }
        } else if !line.is_empty() {
            out.push((String::new(), line.to_owned()));
        }
    }
    out
}

/// `{type} rest` → (type, rest), braces balanced.
fn braced(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    let body = text.strip_prefix('{')?;
    let mut depth = 1;
    for (i, c) in body.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some((body[..i].trim(), body[i + 1..].trim()));
                }
            }
            _ => {}
        }
    }
    None
}

/// A parsed JSDoc type, before enums are told apart.
#[derive(Debug, Clone, PartialEq)]
enum Doc {
    Ty(Ty),
    Literals(Vec<String>),
}

/// A small recursive-descent parser for JSDoc type expressions.
struct TypeParser<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> TypeParser<'a> {
    fn parse(text: &'a str) -> Result<Doc, String> {
        let mut p = TypeParser {
            s: text.as_bytes(),
            at: 0,
        };
        let t = p.union()?;
        p.ws();
        if p.at != p.s.len() {
            return Err(format!("unexpected '{}'", &text[p.at..]));
        }
        Ok(t)
    }

    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> String {
        self.ws();
        let start = self.at;
        while self
            .s
            .get(self.at)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'$')
        {
            self.at += 1;
        }
        String::from_utf8_lossy(&self.s[start..self.at]).into_owned()
    }

    fn union(&mut self) -> Result<Doc, String> {
        let mut members = vec![self.postfix()?];
        while self.eat(b'|') {
            members.push(self.postfix()?);
        }
        if members.len() == 1 {
            return members.pop().ok_or_else(String::new);
        }
        let nothing = |d: &Doc| matches!(d, Doc::Ty(Ty::None));
        let rest: Vec<Doc> = members.iter().filter(|d| !nothing(d)).cloned().collect();
        if rest.len() < members.len() && rest.len() == 1 {
            return match rest.into_iter().next() {
                Some(Doc::Ty(t)) => Ok(Doc::Ty(Ty::Option { of: Box::new(t) })),
                _ => Err("null | \"a\" | … has no WIT form".into()),
            };
        }
        let mut literals = Vec::new();
        for m in members {
            match m {
                Doc::Literals(l) => literals.extend(l),
                _ => {
                    return Err(
                        "only `T|null` and unions of string literals (an enum) have a WIT form"
                            .into(),
                    );
                }
            }
        }
        Ok(Doc::Literals(literals))
    }

    fn postfix(&mut self) -> Result<Doc, String> {
        let mut t = self.prefix()?;
        while self.eat(b'[') {
            if !self.eat(b']') {
                return Err("expected ']'".into());
            }
            t = Doc::Ty(Ty::List {
                of: Box::new(ty(t)?),
            });
        }
        Ok(t)
    }

    fn prefix(&mut self) -> Result<Doc, String> {
        if self.eat(b'?') {
            let inner = ty(self.prefix()?)?;
            return Ok(Doc::Ty(Ty::Option {
                of: Box::new(inner),
            }));
        }
        self.primary()
    }

    fn args(&mut self) -> Result<Vec<Doc>, String> {
        let mut items = vec![self.union()?];
        while self.eat(b',') {
            items.push(self.union()?);
        }
        Ok(items)
    }

    fn primary(&mut self) -> Result<Doc, String> {
        self.ws();
        match self.s.get(self.at) {
            Some(b'(') => {
                self.at += 1;
                let t = self.union()?;
                if !self.eat(b')') {
                    return Err("expected ')'".into());
                }
                Ok(t)
            }
            Some(b'[') => {
                self.at += 1;
                let items = self.args()?;
                if !self.eat(b']') {
                    return Err("expected ']' after a tuple".into());
                }
                let items = items.into_iter().map(ty).collect::<Result<_, _>>()?;
                Ok(Doc::Ty(Ty::Tuple { items }))
            }
            Some(b'{') => {
                // {[key: string]: T}
                self.at += 1;
                if !self.eat(b'[') {
                    return Err("an object type needs a @typedef (or {[key: string]: T})".into());
                }
                self.ident();
                if !self.eat(b':') || self.ident() != "string" || !self.eat(b']') || !self.eat(b':')
                {
                    return Err("expected {[key: string]: T}".into());
                }
                let value = ty(self.union()?)?;
                if !self.eat(b'}') {
                    return Err("expected '}'".into());
                }
                Ok(Doc::Ty(Ty::Dict {
                    value: Box::new(value),
                }))
            }
            Some(q @ (b'"' | b'\'')) => {
                let q = *q;
                self.at += 1;
                let start = self.at;
                while self.s.get(self.at).is_some_and(|c| *c != q) {
                    self.at += 1;
                }
                let lit = String::from_utf8_lossy(&self.s[start..self.at]).into_owned();
                self.at += 1;
                Ok(Doc::Literals(vec![lit]))
            }
            _ => {
                let name = self.ident();
                if name.is_empty() {
                    return Err("expected a type".into());
                }
                self.eat(b'.');
                let args = if self.eat(b'<') {
                    let a = self.args()?;
                    if !self.eat(b'>') {
                        return Err("expected '>'".into());
                    }
                    a
                } else {
                    Vec::new()
                };
                named(&name, args)
            }
        }
    }
}

fn ty(d: Doc) -> Result<Ty, String> {
    match d {
        Doc::Ty(t) => Ok(t),
        Doc::Literals(_) => Err("string literal types belong in a @typedef (an enum)".into()),
    }
}

fn named(name: &str, args: Vec<Doc>) -> Result<Doc, String> {
    let mut args = args.into_iter();
    let (a, b) = (args.next(), args.next());
    let t = match (name, a, b) {
        ("string" | "String", None, _) => Ty::Str,
        ("number" | "Number", None, _) => Ty::Float,
        ("bigint" | "BigInt", None, _) => Ty::Int,
        ("boolean" | "Boolean", None, _) => Ty::Bool,
        ("Uint8Array", None, _) => Ty::Bytes,
        ("void" | "undefined" | "null", None, _) => Ty::None,
        ("Array", Some(of), None) => Ty::List {
            of: Box::new(ty(of)?),
        },
        ("Object" | "Record" | "Map", Some(k), Some(v)) => {
            if k != Doc::Ty(Ty::Str) {
                return Err("map keys must be string (JSON objects)".into());
            }
            Ty::Dict {
                value: Box::new(ty(v)?),
            }
        }
        ("any" | "*" | "Object" | "object" | "Array" | "unknown", _, _) => {
            return Err(format!(
                "'{name}' has no WIT form; name the type (string, number, boolean, T[], \
                 Object<string, T>, [A, B], ?T or a @typedef)"
            ));
        }
        (other, None, _) => Ty::Named {
            name: other.to_owned(),
            line: 0,
        },
        (other, _, _) => return Err(format!("'{other}<…>' has no WIT form")),
    };
    Ok(Doc::Ty(t))
}

/// The signatures of `src` (the text of `app.js`).
pub fn read(src: &str) -> Signatures {
    let mut sig = Signatures::default();
    let mut documented = Vec::new();
    let mut from = 0;
    while let Some(open) = src[from..].find("/**").map(|i| i + from) {
        let Some(close) = src[open..].find("*/").map(|i| i + open + 2) else {
            break;
        };
        from = close;
        let block = &src[open..close];
        let line = line_of(src, open);
        let mut problem = |msg: String| sig.problems.push(format!("{APP}:{line}: {msg}"));
        let tags = tags(block);
        if let Some((_, text)) = tags.iter().find(|(t, _)| t == "typedef") {
            let Some((t, name)) = braced(text) else {
                problem("@typedef needs {type} and a name".into());
                continue;
            };
            let name = name
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
            let parsed = if t == "Object" || t == "object" {
                Ok(Doc::Ty(Ty::None))
            } else {
                TypeParser::parse(t)
            };
            match parsed {
                Ok(Doc::Literals(cases)) => sig.enums.push(Enum { name, cases, line }),
                Ok(Doc::Ty(Ty::None)) if t == "Object" || t == "object" => {
                    let mut fields = Vec::new();
                    for (_, text) in tags.iter().filter(|(t, _)| t == "property" || t == "prop") {
                        let Some((t, rest)) = braced(text) else {
                            problem(format!("a @property of {name} needs {{type}} name"));
                            continue;
                        };
                        let (field, optional) = param_name(rest);
                        match TypeParser::parse(t).and_then(ty) {
                            Ok(t) => fields.push((field, maybe(t, optional))),
                            Err(e) => problem(format!("property '{field}' of {name}: {e}")),
                        }
                    }
                    sig.records.push(Record { name, fields, line });
                }
                Ok(_) => problem(format!(
                    "@typedef {name}: only {{Object}} with @property lines (a record) or a \
                     union of string literals (an enum) can be declared"
                )),
                Err(e) => problem(format!("@typedef {name}: {e}")),
            }
            continue;
        }
        let after = src[close..].trim_start();
        let Some(header) = after.strip_prefix("export ") else {
            continue;
        };
        let header = header.trim_start();
        if header.starts_with("async ") {
            problem("async functions cannot be exported".into());
            continue;
        }
        let Some(rest) = header.strip_prefix("function") else {
            if header.starts_with("const ") || header.starts_with("let ") {
                problem(
                    "only `export function name(…)` declarations become commands; write this one \
                     as a function declaration"
                        .into(),
                );
            }
            continue;
        };
        let Some((name, params)) = function_header(rest) else {
            problem("expected `export function name(params)` after the comment".into());
            continue;
        };
        documented.push(name.clone());
        let mut types: BTreeMap<String, Ty> = BTreeMap::new();
        let mut returns = None;
        for (tag, text) in &tags {
            match tag.as_str() {
                "param" | "arg" | "argument" => {
                    let Some((t, rest)) = braced(text) else {
                        problem(format!("{name}: @param needs {{type}} name"));
                        continue;
                    };
                    let (p, optional) = param_name(rest);
                    match TypeParser::parse(t).and_then(ty) {
                        Ok(t) => {
                            types.insert(p, maybe(t, optional));
                        }
                        Err(e) => problem(format!("parameter '{p}' of {name}: {e}")),
                    }
                }
                "returns" | "return" => match braced(text).map(|(t, _)| TypeParser::parse(t)) {
                    Some(Ok(d)) => match ty(d) {
                        Ok(t) => returns = Some(t),
                        Err(e) => problem(format!("the return type of {name}: {e}")),
                    },
                    Some(Err(e)) => problem(format!("the return type of {name}: {e}")),
                    None => problem(format!("{name}: @returns needs {{type}}")),
                },
                _ => {}
            }
        }
        let mut ordered = Vec::new();
        for p in &params {
            match types.remove(p) {
                Some(t) => ordered.push((p.clone(), t)),
                None => problem(format!(
                    "parameter '{p}' of {name} needs a @param {{type}} {p}"
                )),
            }
        }
        for extra in types.keys() {
            problem(format!(
                "@param {extra} of {name} is not one of its parameters"
            ));
        }
        let doc = tags
            .iter()
            .find(|(t, _)| t.is_empty())
            .map(|(_, text)| text.split(". ").next().unwrap_or(text).trim().to_owned());
        sig.functions.push(Function {
            name,
            params: ordered,
            returns: returns.unwrap_or(Ty::None),
            doc,
            line,
        });
    }
    // Exported functions without a comment cannot be typed.
    let mut from = 0;
    while let Some(i) = src[from..].find("export function").map(|i| i + from) {
        from = i + 1;
        if let Some((name, _)) = function_header(&src[i + "export function".len()..])
            && !documented.contains(&name)
        {
            sig.problems.push(format!(
                "{APP}:{}: {name} needs a JSDoc comment (/** @param {{type}} name … @returns \
                 {{type}} */) to be exported",
                line_of(src, i)
            ));
        }
    }
    sig
}

/// `name`, `[name]` or `[name=default]` → (name, optional).
fn param_name(rest: &str) -> (String, bool) {
    let word = rest.split_whitespace().next().unwrap_or_default();
    match word.strip_prefix('[') {
        Some(inner) => (
            inner
                .trim_end_matches(']')
                .split('=')
                .next()
                .unwrap_or_default()
                .to_owned(),
            true,
        ),
        None => (word.to_owned(), false),
    }
}

fn maybe(t: Ty, optional: bool) -> Ty {
    match t {
        Ty::Option { .. } => t,
        t if optional => Ty::Option { of: Box::new(t) },
        t => t,
    }
}

/// ` name(a, b = 1) {` → (`name`, [`a`, `b`]).
fn function_header(rest: &str) -> Option<(String, Vec<String>)> {
    let rest = rest.trim_start();
    let open = rest.find('(')?;
    let name = rest[..open].trim();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '$')
    {
        return None;
    }
    let close = rest[open..].find(')')? + open;
    let params = rest[open + 1..close]
        .split(',')
        .map(|p| p.split('=').next().unwrap_or_default().trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect();
    Some((name.to_owned(), params))
}

/// How the bindings spell a WIT name in JavaScript (`word-count` → `wordCount`).
fn camel(src: &str) -> String {
    let k = kebab(src).unwrap_or_default();
    let mut out = String::new();
    for (i, part) in k.split('-').enumerate() {
        if i == 0 {
            out.push_str(part);
        } else {
            let mut c = part.chars();
            if let Some(f) = c.next() {
                out.push(f.to_ascii_uppercase());
                out.push_str(c.as_str());
            }
        }
    }
    out
}

fn lit(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Converter functions, one per distinct type.
struct Converters<'a> {
    checked: &'a Checked,
    code: String,
    names: BTreeMap<(bool, String), Option<String>>,
    next: usize,
}

impl Converters<'_> {
    fn conv(&mut self, t: &Ty, out: bool) -> Option<String> {
        let key = (out, format!("{t:?}"));
        if let Some(done) = self.names.get(&key) {
            return done.clone();
        }
        let name = format!("_{}{}", if out { "o" } else { "i" }, self.next);
        self.next += 1;
        let apply = |c: &Option<String>, v: &str| match c {
            Some(f) => format!("{f}({v})"),
            None => v.to_owned(),
        };
        let body = match t {
            Ty::Str => out.then(|| "_check(v, \"string\")".to_owned()),
            Ty::Float => out.then(|| "_check(v, \"number\")".to_owned()),
            Ty::Bool => out.then(|| "_check(v, \"boolean\")".to_owned()),
            Ty::Int => out.then(|| "_bigint(v)".to_owned()),
            Ty::Bytes | Ty::None => None,
            Ty::List { of } => {
                let c = self.conv(of, out);
                c.is_some()
                    .then(|| format!("v.map((x) => {})", apply(&c, "x")))
            }
            Ty::Option { of } => {
                let c = self.conv(of, out);
                Some(if out {
                    format!("v == null ? undefined : {}", apply(&c, "v"))
                } else {
                    format!("v === undefined ? null : {}", apply(&c, "v"))
                })
            }
            Ty::Tuple { items } => {
                let cs: Vec<Option<String>> = items.iter().map(|t| self.conv(t, out)).collect();
                cs.iter().any(Option::is_some).then(|| {
                    let parts: Vec<String> = cs
                        .iter()
                        .enumerate()
                        .map(|(i, c)| apply(c, &format!("v[{i}]")))
                        .collect();
                    format!("[{}]", parts.join(", "))
                })
            }
            Ty::Dict { value } => {
                let c = self.conv(value, out);
                Some(if out {
                    format!(
                        "Object.entries(_check(v, \"object\")).map(([k, x]) => [k, {}])",
                        apply(&c, "x")
                    )
                } else {
                    format!(
                        "Object.fromEntries(v.map(([k, x]) => [k, {}]))",
                        apply(&c, "x")
                    )
                })
            }
            Ty::Named { name: n, .. } => {
                if let Some(r) = self.checked.record(n).cloned() {
                    let fields: Vec<String> = r
                        .fields
                        .iter()
                        .map(|(f, ft)| {
                            let c = self.conv(ft, out);
                            let (to, from) = if out {
                                (camel(f), f.clone())
                            } else {
                                (f.clone(), camel(f))
                            };
                            format!("{}: {}", lit(&to), apply(&c, &format!("v[{}]", lit(&from))))
                        })
                        .collect();
                    Some(format!("({{ {} }})", fields.join(", ")))
                } else if let Some(e) = self.checked.enumeration(n).cloned() {
                    let pairs: Vec<String> = e
                        .cases
                        .iter()
                        .map(|c| {
                            let wit = kebab(c).unwrap_or_default();
                            if out {
                                format!("{}: {}", lit(c), lit(&wit))
                            } else {
                                format!("{}: {}", lit(&wit), lit(c))
                            }
                        })
                        .collect();
                    let table = format!("{name}Table");
                    let _ = writeln!(self.code, "const {table} = {{ {} }};", pairs.join(", "));
                    Some(if out {
                        format!("_case({table}, v, {})", lit(n))
                    } else {
                        format!("{table}[v]")
                    })
                } else {
                    None
                }
            }
        };
        let result = body.map(|b| {
            let _ = writeln!(self.code, "function {name}(v) {{\n  return {b};\n}}\n");
            name.clone()
        });
        self.names.insert(key, result.clone());
        result
    }
}

/// `mpreg_app.js` (written to `target/mpreg-typed/`, importing `../../app.js`).
pub fn glue(plugin: &str, version: &str, checked: &Checked) -> String {
    let mut conv = Converters {
        checked,
        code: String::new(),
        names: BTreeMap::new(),
        next: 0,
    };
    let mut exports = String::new();
    let mut commands = Vec::new();
    for f in &checked.sig.functions {
        let params: Vec<String> = (0..f.params.len()).map(|i| format!("a{i}")).collect();
        let args: Vec<String> = f
            .params
            .iter()
            .enumerate()
            .map(|(i, (_, t))| match conv.conv(t, false) {
                Some(c) => format!("{c}(a{i})"),
                None => format!("a{i}"),
            })
            .collect();
        let call = format!("app.{}({})", f.name, args.join(", "));
        let body = match conv.conv(&f.returns, true) {
            Some(c) => format!("{c}({call})"),
            None => call,
        };
        let _ = write!(
            exports,
            "export function {js}({params}) {{\n  try {{\n    return {body};\n  }} catch (e) {{\n    \
             _fail({name}, e);\n  }}\n}}\n\n",
            js = camel(&f.name),
            params = params.join(", "),
            name = lit(&f.name),
        );
        commands.push(format!(
            "      {{ name: {}, exportName: {}, functionId: {}, resources: [], description: {} }},",
            lit(&f.name),
            lit(&kebab(&f.name).unwrap_or_default()),
            lit(&format!("{plugin}.{}", f.name)),
            f.doc.as_deref().map_or_else(|| "undefined".to_owned(), lit),
        ));
    }
    format!(
        r#"// Generated by `mpreg plugin build` from app.js's JSDoc; do not edit.
import {{ log }} from "mpreg:plugin/log@0.1.0";
import * as app from "../../{APP}";

for (const [method, level] of [["debug", "debug"], ["log", "info"], ["info", "info"], ["warn", "warn"], ["error", "error"]]) {{
  console[method] = (...parts) => log(level, parts.map((p) => (typeof p === "string" ? p : JSON.stringify(p))).join(" "));
}}

function _fail(name, e) {{
  const what = e instanceof Error ? `${{e.name}}: ${{e.message}}` : String(e);
  log("error", `${{name}} threw ${{what}}\n${{(e && e.stack) || ""}}`);
  throw what;
}}

function _check(v, type) {{
  if (typeof v !== type || v === null) {{
    throw new TypeError(`expected ${{type}}, got ${{v === null ? "null" : typeof v}}`);
  }}
  return v;
}}

function _bigint(v) {{
  if (typeof v === "bigint") return v;
  if (Number.isInteger(v)) return BigInt(v);
  throw new TypeError(`expected an integer, got ${{v}}`);
}}

function _case(table, v, name) {{
  if (!(v in table)) throw new TypeError(`${{JSON.stringify(v)}} is not a case of ${{name}}`);
  return table[v];
}}

{converters}
{exports}export const metadata = {{
  describe() {{
    return {{
      name: {plugin_lit},
      version: {version_lit},
      resources: [],
      commands: [
{commands}
      ],
    }};
  }},
}};
"#,
        converters = conv.code,
        plugin_lit = lit(plugin),
        version_lit = lit(version),
        commands = commands.join("\n"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const APP_JS: &str = r#"
/**
 * @typedef {Object} Point
 * @property {number} x
 * @property {number} [y_offset]
 */

/** @typedef {"red" | "LIGHT_BLUE"} Color */

/**
 * Counts each word. Spaces split.
 * @param {string} text
 * @returns {Object<string, number>}
 */
export function wordCount(text) {
  return {};
}

/**
 * @param {Point[]} pts the points
 * @param {?Color} color
 * @param {[string, bigint]} pair
 * @returns {Point|null}
 */
export function first(pts, color, pair = ["a", 1n]) { return pts[0] ?? null; }

export function undocumented(x) { return x; }

/**
 * @param {any} x
 * @returns {void}
 */
export function loose(x) {}

/**
 * @param {string} s
 * @returns {string}
 */
export const arrow = (s) => s;
"#;

    #[test]
    fn jsdoc_gives_signatures_and_names_the_gaps() {
        let sig = read(APP_JS);
        let names: Vec<&str> = sig.functions.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["wordCount", "first", "loose"]);
        let wc = &sig.functions[0];
        assert_eq!(wc.params, [("text".to_owned(), Ty::Str)]);
        assert_eq!(
            wc.returns,
            Ty::Dict {
                value: Box::new(Ty::Float)
            }
        );
        assert_eq!(wc.doc.as_deref(), Some("Counts each word"));
        let first = &sig.functions[1];
        assert!(
            matches!(&first.params[0].1, Ty::List { of } if matches!(&**of, Ty::Named { name, .. } if name == "Point"))
        );
        assert!(matches!(&first.params[1].1, Ty::Option { .. }));
        assert_eq!(
            first.params[2].1,
            Ty::Tuple {
                items: vec![Ty::Str, Ty::Int]
            }
        );
        assert!(matches!(&first.returns, Ty::Option { .. }));
        assert_eq!(sig.records.len(), 1);
        assert!(
            matches!(&sig.records[0].fields[1].1, Ty::Option { .. }),
            "[y_offset] is optional"
        );
        assert_eq!(sig.enums[0].cases, ["red", "LIGHT_BLUE"]);
        let problems = sig.problems.join("\n");
        assert!(
            problems.contains("undocumented needs a JSDoc comment"),
            "{problems}"
        );
        assert!(
            problems.contains("parameter 'x' of loose: 'any' has no WIT form"),
            "{problems}"
        );
        assert!(
            problems.contains("only `export function name(…)` declarations"),
            "{problems}"
        );
    }

    #[test]
    fn the_glue_converts_what_the_bindings_spell_differently()
    -> Result<(), super::super::TypedError> {
        let mut sig = read(APP_JS);
        sig.functions.retain(|f| f.name != "loose");
        sig.problems.clear();
        let checked = super::super::check(sig, APP, DECLARED)?;
        let g = glue("demo", "0.1.0", &checked);
        for want in [
            "export function wordCount(a0)",
            "Object.entries(",
            "\"yOffset\"",
            "\"light-blue\": \"LIGHT_BLUE\"",
            "name: \"wordCount\", exportName: \"word-count\", functionId: \"demo.wordCount\"",
        ] {
            assert!(g.contains(want), "{want} missing from:\n{g}");
        }
        Ok(())
    }
}

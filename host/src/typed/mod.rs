//! Typed plugins: Python functions with type hints (and JavaScript functions with JSDoc) built
//! into components without hand-written WIT. The language's reader turns the source into
//! [`Signatures`]; this module checks them and writes the WIT world; the language's glue module
//! adapts the plain functions to what the component bindings expect (records, maps, errors)
//! and answers `describe`. `mpreg plugin build` does all of it under `target/mpreg-typed/`.
//!
//! How a type maps: `str`/`string` → `string`, `int` → `s64`, `float`/`number` → `f64`,
//! `bool` → `bool`, `bytes` → `list<u8>`, lists → `list<T>`, tuples → `tuple<…>`,
//! `Optional`/`X | None` → `option<T>`, string-keyed dicts → `list<tuple<string, T>>` (JSON
//! objects on the wire, see [`crate::runtime::stamp::JsonStyle`]), dataclasses / typedefs →
//! records, enums → enums. Every function returns `result<T, string>`: an exception (a thrown
//! error) is the call's error.

pub mod js;
pub mod python;

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// A type as the readers report it.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Ty {
    /// Text.
    Str,
    /// A 64-bit signed integer.
    Int,
    /// A 64-bit float.
    Float,
    /// A boolean.
    Bool,
    /// Bytes (`list<u8>`).
    Bytes,
    /// Nothing (only as a return type).
    None,
    /// A list.
    List {
        /// Element type.
        of: Box<Ty>,
    },
    /// A value or nothing.
    Option {
        /// The value's type.
        of: Box<Ty>,
    },
    /// A fixed tuple.
    Tuple {
        /// Its element types.
        items: Vec<Ty>,
    },
    /// A string-keyed map.
    Dict {
        /// The values' type.
        value: Box<Ty>,
    },
    /// A record or enum declared in the source.
    Named {
        /// Its name in the source.
        name: String,
        /// Where it is used.
        #[serde(default)]
        line: u32,
    },
}

/// An exported function.
#[derive(Debug, Clone, Deserialize)]
pub struct Function {
    /// Its name in the source (the command's name).
    pub name: String,
    /// Parameters in order.
    pub params: Vec<(String, Ty)>,
    /// What it returns.
    pub returns: Ty,
    /// The first line of its doc comment.
    #[serde(default)]
    pub doc: Option<String>,
    /// Where it is defined.
    #[serde(default)]
    pub line: u32,
}

/// A record (dataclass, JSDoc typedef).
#[derive(Debug, Clone, Deserialize)]
pub struct Record {
    /// Its name in the source.
    pub name: String,
    /// Fields in order.
    pub fields: Vec<(String, Ty)>,
    /// Where it is defined.
    #[serde(default)]
    pub line: u32,
}

/// An enum.
#[derive(Debug, Clone, Deserialize)]
pub struct Enum {
    /// Its name in the source.
    pub name: String,
    /// Its cases as the source spells them.
    pub cases: Vec<String>,
    /// Where it is defined.
    #[serde(default)]
    pub line: u32,
}

/// What a reader found in a plugin's source.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Signatures {
    /// The exported functions.
    #[serde(default)]
    pub functions: Vec<Function>,
    /// Records.
    #[serde(default)]
    pub records: Vec<Record>,
    /// Enums.
    #[serde(default)]
    pub enums: Vec<Enum>,
    /// What is wrong (`file:line: message`); the build fails when any.
    #[serde(default)]
    pub problems: Vec<String>,
}

/// Why a typed build cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum TypedError {
    /// The source's signatures have no WIT form.
    #[error("the plugin's signatures cannot be built:\n  {}", .0.join("\n  "))]
    Signatures(Vec<String>),
    /// The reader could not run or answered nonsense.
    #[error("{0}")]
    Reader(String),
}

/// A source name as a WIT identifier (`word_count`, `wordCount`, `WordCount`, `WORD_COUNT` →
/// `word-count`), or `None` when it has none (a part starting with a digit, `__`).
pub fn kebab(name: &str) -> Option<String> {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::with_capacity(name.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c == '_' || c == '-' {
            out.push('-');
        } else if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1);
            let boundary = prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
                || (prev.is_some_and(|p| p.is_ascii_uppercase())
                    && next.is_some_and(|n| n.is_ascii_lowercase()));
            if boundary {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else {
            return None;
        }
    }
    let ok = !out.is_empty()
        && out
            .split('-')
            .all(|part| part.chars().next().is_some_and(|c| c.is_ascii_lowercase()));
    ok.then_some(out)
}

/// `word-count` → `WordCount` (how the bindings name a WIT type).
pub fn upper_camel(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// Checked signatures, ready to be written as WIT.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The source's findings.
    pub sig: Signatures,
    /// Records in an order where each comes after the records it uses.
    pub record_order: Vec<usize>,
}

impl Checked {
    /// The record named `name`.
    pub fn record(&self, name: &str) -> Option<&Record> {
        self.sig.records.iter().find(|r| r.name == name)
    }

    /// The enum named `name`.
    pub fn enumeration(&self, name: &str) -> Option<&Enum> {
        self.sig.enums.iter().find(|e| e.name == name)
    }
}

/// Checks `sig` (names, references, no recursion, `None` only as a return) for `file`;
/// `declared` says what a named type must be (`a dataclass or enum of app.py`).
pub fn check(sig: Signatures, file: &str, declared_as: &str) -> Result<Checked, TypedError> {
    let mut problems = sig.problems.clone();
    let mut at = |line: u32, msg: String| problems.push(format!("{file}:{line}: {msg}"));
    let declared: BTreeSet<&str> = sig
        .records
        .iter()
        .map(|r| r.name.as_str())
        .chain(sig.enums.iter().map(|e| e.name.as_str()))
        .collect();
    if sig.functions.is_empty() && sig.problems.is_empty() {
        at(
            1,
            "no public function with type hints to export (a name starting with _ is private)"
                .into(),
        );
    }
    fn walk(ty: &Ty, top: bool, f: &mut dyn FnMut(&Ty, bool)) {
        f(ty, top);
        match ty {
            Ty::List { of } | Ty::Option { of } | Ty::Dict { value: of } => walk(of, false, f),
            Ty::Tuple { items } => items.iter().for_each(|t| walk(t, false, f)),
            _ => {}
        }
    }
    let check_ty = |ty: &Ty,
                    line: u32,
                    where_: &str,
                    may_be_none: bool,
                    at: &mut dyn FnMut(u32, String)| {
        walk(ty, true, &mut |t, top| match t {
            Ty::None if !(top && may_be_none) => at(
                line,
                format!("{where_}: None is only a return type (use Optional[...])"),
            ),
            Ty::Named { name, line: l } if !declared.contains(name.as_str()) => at(
                if *l > 0 { *l } else { line },
                format!("{where_}: '{name}' is not {declared_as} (or a type MPREG can pass)"),
            ),
            Ty::List { of } if matches!(&**of, Ty::Tuple { items } if items.len() == 2 && items[0] == Ty::Str) => {
                at(
                    line,
                    format!(
                        "{where_}: a list of (str, x) pairs reads as a map in JSON; use dict[str, x] \
                     or a dataclass for the pair"
                    ),
                )
            }
            _ => {}
        });
    };
    let mut seen_names = BTreeSet::new();
    for f in &sig.functions {
        if kebab(&f.name).is_none() {
            at(
                f.line,
                format!(
                    "function '{}' has no WIT name (use letters, digits, single _)",
                    f.name
                ),
            );
        }
        if !seen_names.insert(kebab(&f.name)) {
            at(
                f.line,
                format!("function '{}' has the same WIT name as another", f.name),
            );
        }
        for (p, ty) in &f.params {
            if kebab(p).is_none() {
                at(
                    f.line,
                    format!("parameter '{p}' of {} has no WIT name", f.name),
                );
            }
            check_ty(
                ty,
                f.line,
                &format!("parameter '{p}' of {}", f.name),
                false,
                &mut at,
            );
        }
        check_ty(
            &f.returns,
            f.line,
            &format!("the return type of {}", f.name),
            true,
            &mut at,
        );
    }
    for r in &sig.records {
        if kebab(&r.name).is_none() {
            at(r.line, format!("record '{}' has no WIT name", r.name));
        }
        if r.fields.is_empty() {
            at(r.line, format!("dataclass {} has no typed fields", r.name));
        }
        for (n, ty) in &r.fields {
            if kebab(n).is_none() {
                at(r.line, format!("field '{n}' of {} has no WIT name", r.name));
            }
            check_ty(
                ty,
                r.line,
                &format!("field '{n}' of {}", r.name),
                false,
                &mut at,
            );
        }
    }
    for e in &sig.enums {
        if e.cases.is_empty() {
            at(e.line, format!("enum {} has no cases", e.name));
        }
        for c in &e.cases {
            if kebab(c).is_none() {
                at(e.line, format!("case '{c}' of {} has no WIT name", e.name));
            }
        }
    }
    // Records after the records they use; a cycle has no WIT form.
    let uses = |r: &Record| -> Vec<String> {
        let mut names = Vec::new();
        for (_, ty) in &r.fields {
            walk(ty, true, &mut |t, _| {
                if let Ty::Named { name, .. } = t {
                    names.push(name.clone());
                }
            });
        }
        names
    };
    let index: BTreeMap<&str, usize> = sig
        .records
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let mut order = Vec::new();
    let mut state = vec![0u8; sig.records.len()];
    fn visit(
        i: usize,
        records: &[Record],
        index: &BTreeMap<&str, usize>,
        uses: &dyn Fn(&Record) -> Vec<String>,
        state: &mut [u8],
        order: &mut Vec<usize>,
    ) -> Result<(), String> {
        match state[i] {
            2 => return Ok(()),
            1 => return Err(records[i].name.clone()),
            _ => {}
        }
        state[i] = 1;
        for u in uses(&records[i]) {
            if let Some(&j) = index.get(u.as_str()) {
                visit(j, records, index, uses, state, order)?;
            }
        }
        state[i] = 2;
        order.push(i);
        Ok(())
    }
    for i in 0..sig.records.len() {
        if let Err(name) = visit(i, &sig.records, &index, &uses, &mut state, &mut order) {
            at(
                sig.records[i].line,
                format!("dataclass {name} refers to itself; WIT types cannot be recursive"),
            );
            break;
        }
    }
    if problems.is_empty() {
        Ok(Checked {
            sig,
            record_order: order,
        })
    } else {
        Err(TypedError::Signatures(problems))
    }
}

/// The WIT spelling of a type.
pub fn wit_type(ty: &Ty) -> String {
    let name = |n: &str| format!("%{}", kebab(n).unwrap_or_default());
    match ty {
        Ty::Str => "string".into(),
        Ty::Int => "s64".into(),
        Ty::Float => "f64".into(),
        Ty::Bool => "bool".into(),
        Ty::Bytes => "list<u8>".into(),
        Ty::None => "_".into(),
        Ty::List { of } => format!("list<{}>", wit_type(of)),
        Ty::Option { of } => format!("option<{}>", wit_type(of)),
        Ty::Tuple { items } => format!(
            "tuple<{}>",
            items.iter().map(wit_type).collect::<Vec<_>>().join(", ")
        ),
        Ty::Dict { value } => format!("list<tuple<string, {}>>", wit_type(value)),
        Ty::Named { name: n, .. } => name(n),
    }
}

/// The world for plugin `plugin` (its package is `local:<plugin>`).
pub fn world(plugin: &str, checked: &Checked) -> String {
    let sig = &checked.sig;
    let mut w = format!(
        "// Generated by `mpreg plugin build` from the plugin's signatures; do not edit.\n\
         package local:{plugin};\n\nworld {plugin} {{\n    include mpreg:plugin/plugin@0.1.0;\n"
    );
    for &i in &checked.record_order {
        let r = &sig.records[i];
        w.push_str(&format!(
            "\n    record %{} {{\n",
            kebab(&r.name).unwrap_or_default()
        ));
        for (n, ty) in &r.fields {
            w.push_str(&format!(
                "        %{}: {},\n",
                kebab(n).unwrap_or_default(),
                wit_type(ty)
            ));
        }
        w.push_str("    }\n");
    }
    for e in &sig.enums {
        w.push_str(&format!(
            "\n    enum %{} {{\n",
            kebab(&e.name).unwrap_or_default()
        ));
        for c in &e.cases {
            w.push_str(&format!("        %{},\n", kebab(c).unwrap_or_default()));
        }
        w.push_str("    }\n");
    }
    w.push('\n');
    for f in &sig.functions {
        if let Some(doc) = &f.doc {
            w.push_str(&format!("    /// {doc}\n"));
        }
        let params: Vec<String> = f
            .params
            .iter()
            .map(|(n, t)| format!("%{}: {}", kebab(n).unwrap_or_default(), wit_type(t)))
            .collect();
        w.push_str(&format!(
            "    export %{}: func({}) -> result<{}, string>;\n",
            kebab(&f.name).unwrap_or_default(),
            params.join(", "),
            wit_type(&f.returns)
        ));
    }
    w.push_str("}\n");
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_wit_identifiers() {
        for (src, wit) in [
            ("word_count", "word-count"),
            ("wordCount", "word-count"),
            ("WordStat", "word-stat"),
            ("LIGHT_BLUE", "light-blue"),
            ("HTTPCode", "http-code"),
            ("vec2", "vec2"),
        ] {
            assert_eq!(kebab(src).as_deref(), Some(wit), "{src}");
        }
        for bad in ["x_1", "a__b", "_x", "é", ""] {
            assert_eq!(kebab(bad), None, "{bad}");
        }
        assert_eq!(upper_camel("word-stat"), "WordStat");
    }

    fn sig(json: &str) -> Result<Signatures, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn a_checked_signature_writes_a_world() -> Result<(), Box<dyn std::error::Error>> {
        let s = sig(r#"{
            "functions": [{"name": "word_count", "params": [["text", {"t": "str"}]],
                           "returns": {"t": "dict", "value": {"t": "int"}}, "doc": "Counts."},
                          {"name": "nearest", "params": [["pts", {"t": "list", "of": {"t": "named", "name": "Point"}}]],
                           "returns": {"t": "option", "of": {"t": "named", "name": "Seg"}}}],
            "records": [{"name": "Seg", "fields": [["a", {"t": "named", "name": "Point"}], ["color", {"t": "named", "name": "Color"}]]},
                        {"name": "Point", "fields": [["x_coord", {"t": "float"}]]}],
            "enums": [{"name": "Color", "cases": ["RED", "LIGHT_BLUE"]}]
        }"#)?;
        let checked = check(s, "app.py", "a dataclass")?;
        let w = world("demo", &checked);
        let point = w.find("record %point").ok_or("no point")?;
        let seg = w.find("record %seg").ok_or("no seg")?;
        assert!(point < seg, "records come after what they use:\n{w}");
        for want in [
            "%x-coord: f64,",
            "%light-blue,",
            "/// Counts.",
            "export %word-count: func(%text: string) -> result<list<tuple<string, s64>>, string>;",
            "export %nearest: func(%pts: list<%point>) -> result<option<%seg>, string>;",
        ] {
            assert!(w.contains(want), "{want} missing from:\n{w}");
        }
        Ok(())
    }

    #[test]
    fn bad_signatures_name_the_line_and_the_fix() -> Result<(), serde_json::Error> {
        let s = sig(r#"{
            "functions": [{"name": "f", "line": 3, "params": [["x", {"t": "none"}]], "returns": {"t": "named", "name": "Nope"}},
                          {"name": "g", "line": 7, "params": [], "returns": {"t": "list", "of": {"t": "tuple", "items": [{"t": "str"}, {"t": "int"}]}}}],
            "records": [{"name": "Node", "line": 9, "fields": [["next", {"t": "option", "of": {"t": "named", "name": "Node"}}]]}],
            "problems": ["app.py:1: from the reader"]
        }"#)?;
        let Err(TypedError::Signatures(p)) = check(s, "app.py", "a dataclass or enum") else {
            panic!("bad signatures were accepted");
        };
        let text = p.join("\n");
        for want in [
            "app.py:1: from the reader",
            "app.py:3: parameter 'x' of f: None is only a return type",
            "app.py:3: the return type of f: 'Nope' is not a dataclass or enum",
            "app.py:7: the return type of g: a list of (str, x) pairs",
            "app.py:9: dataclass Node refers to itself",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
        Ok(())
    }
}

//! JSON ⇄ component values, driven by the types the component declares for its exports.
//!
//! The mapping (also in `docs/plugins.md`): integers and floats ↔ numbers (range-checked; an
//! integral float is accepted for an integer), bool ↔ bool, char ↔ one-character string,
//! string ↔ string, list/tuple ↔ array, record ↔ object (WIT field names; `_` accepted for `-`),
//! option ↔ `null` or the value, enum ↔ case name, variant ↔ `"case"` or `{"case": payload}`,
//! result ↔ `{"ok": v}` / `{"err": e}`, flags ↔ array of set flag names. Non-finite floats have no
//! JSON form and come back as `null`.
//!
//! A plugin built from typed Python or JavaScript signatures (its build stamp says which,
//! [`JsonStyle`]) speaks its language's JSON: record fields come back as `snake_case` or
//! `camelCase`, and a `list<tuple<string, T>>` (what a `dict[str, T]` / `Record<string, T>`
//! becomes in WIT, which has no map type) comes back as an object. An object is accepted for
//! such a list from every plugin, and a record field under any of the three spellings.

use serde_json::{Map, Number, Value};
use wasmtime::component::{Type, Val};

use super::signature::type_name;
pub use super::stamp::JsonStyle;

/// A JSON value that does not fit the declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: expected {expected}, got {got}")]
pub struct ConvertError {
    /// Where in the arguments: `argument 'points'[2].x`.
    pub path: String,
    /// The WIT type expected there.
    pub expected: String,
    /// A short rendering of what was sent.
    pub got: String,
}

/// Short description of a JSON value for error messages.
fn describe(v: &Value) -> String {
    let text = match v {
        Value::Null => return "null".into(),
        Value::Bool(b) => return format!("bool {b}"),
        Value::Number(n) => return format!("number {n}"),
        Value::String(s) => format!("string {}", Value::String(s.clone())),
        Value::Array(a) => format!("array of {} element(s)", a.len()),
        Value::Object(_) => "object".to_owned(),
    };
    if text.len() > 60 {
        let mut cut = 57;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}...", &text[..cut])
    } else {
        text
    }
}

fn mismatch(path: &str, ty: &Type, v: &Value) -> ConvertError {
    ConvertError {
        path: path.to_owned(),
        expected: type_name(ty),
        got: describe(v),
    }
}

fn int<T: TryFrom<i64> + TryFrom<u64>>(v: &Value) -> Option<T> {
    match v {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                T::try_from(i).ok()
            } else if let Some(u) = n.as_u64() {
                T::try_from(u).ok()
            } else {
                let f = n.as_f64()?;
                (f.fract() == 0.0 && f.abs() < 9.0e15).then(|| T::try_from(f as i64).ok())?
            }
        }
        _ => None,
    }
}

/// `kebab-case` → `camelCase`.
pub(super) fn camel(wit_name: &str) -> String {
    let mut out = String::with_capacity(wit_name.len());
    let mut upper = false;
    for c in wit_name.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether `key` spells the WIT field `wit_name` (as is, snake_case or camelCase).
fn spells(key: &str, wit_name: &str) -> bool {
    key == wit_name
        || (wit_name.contains('-') && (key == wit_name.replace('-', "_") || key == camel(wit_name)))
}

/// The record field named `wit_name`, under any spelling [`spells`] accepts.
fn field<'a>(obj: &'a Map<String, Value>, wit_name: &str) -> Option<(&'a String, &'a Value)> {
    obj.get_key_value(wit_name)
        .or_else(|| obj.iter().find(|(k, _)| spells(k, wit_name)))
}

/// Whether `list` is `list<tuple<string, T>>`: a map in typed plugins.
fn is_pair_list(elem: &Type) -> bool {
    matches!(elem, Type::Tuple(t) if t.types().len() == 2 && matches!(t.types().next(), Some(Type::String)))
}

/// Converts `v` to a value of type `ty`; `path` names the spot for errors.
pub fn to_val(v: &Value, ty: &Type, path: &str) -> Result<Val, ConvertError> {
    let bad = || mismatch(path, ty, v);
    Ok(match ty {
        Type::Bool => Val::Bool(v.as_bool().ok_or_else(bad)?),
        Type::S8 => Val::S8(int(v).ok_or_else(bad)?),
        Type::U8 => Val::U8(int(v).ok_or_else(bad)?),
        Type::S16 => Val::S16(int(v).ok_or_else(bad)?),
        Type::U16 => Val::U16(int(v).ok_or_else(bad)?),
        Type::S32 => Val::S32(int(v).ok_or_else(bad)?),
        Type::U32 => Val::U32(int(v).ok_or_else(bad)?),
        Type::S64 => Val::S64(int(v).ok_or_else(bad)?),
        Type::U64 => Val::U64(int(v).ok_or_else(bad)?),
        Type::Float32 => Val::Float32(v.as_f64().ok_or_else(bad)? as f32),
        Type::Float64 => Val::Float64(v.as_f64().ok_or_else(bad)?),
        Type::Char => {
            let s = v.as_str().ok_or_else(bad)?;
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Val::Char(c),
                _ => return Err(bad()),
            }
        }
        Type::String => Val::String(v.as_str().ok_or_else(bad)?.to_owned()),
        Type::List(list) if v.is_object() && is_pair_list(&list.ty()) => {
            // An object for a list of (string, T) pairs: a map.
            let value_ty = match list.ty() {
                Type::Tuple(t) => t.types().nth(1).ok_or_else(bad)?,
                _ => return Err(bad()),
            };
            let obj = v.as_object().ok_or_else(bad)?;
            let pairs = obj
                .iter()
                .map(|(k, item)| {
                    let val = to_val(item, &value_ty, &format!("{path}.{k}"))?;
                    Ok(Val::Tuple(vec![Val::String(k.clone()), val]))
                })
                .collect::<Result<_, ConvertError>>()?;
            Val::List(pairs)
        }
        Type::List(list) => {
            let items = v.as_array().ok_or_else(bad)?;
            let elem = list.ty();
            let vals = items
                .iter()
                .enumerate()
                .map(|(i, item)| to_val(item, &elem, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?;
            Val::List(vals)
        }
        Type::Tuple(tuple) => {
            let items = v.as_array().ok_or_else(bad)?;
            if items.len() != tuple.types().len() {
                return Err(bad());
            }
            let vals = tuple
                .types()
                .zip(items)
                .enumerate()
                .map(|(i, (t, item))| to_val(item, &t, &format!("{path}[{i}]")))
                .collect::<Result<_, _>>()?;
            Val::Tuple(vals)
        }
        Type::Record(record) => {
            let obj = v.as_object().ok_or_else(bad)?;
            let mut used = 0;
            let mut fields = Vec::with_capacity(record.fields().len());
            for f in record.fields() {
                let fpath = format!("{path}.{}", f.name);
                let val = match field(obj, f.name) {
                    Some((_, fv)) => {
                        used += 1;
                        to_val(fv, &f.ty, &fpath)?
                    }
                    None if matches!(f.ty, Type::Option(_)) => Val::Option(None),
                    None => {
                        return Err(ConvertError {
                            path: fpath,
                            expected: type_name(&f.ty),
                            got: "nothing (missing field)".into(),
                        });
                    }
                };
                fields.push((f.name.to_owned(), val));
            }
            if used != obj.len() {
                let unknown: Vec<&str> = obj
                    .keys()
                    .filter(|k| !record.fields().any(|f| spells(k, f.name)))
                    .map(String::as_str)
                    .collect();
                return Err(ConvertError {
                    path: path.to_owned(),
                    expected: type_name(ty),
                    got: format!("unknown field(s) {}", unknown.join(", ")),
                });
            }
            Val::Record(fields)
        }
        Type::Variant(variant) => {
            let (case_name, payload) = tagged(v).ok_or_else(bad)?;
            let case = variant
                .cases()
                .find(|c| c.name == case_name)
                .ok_or_else(bad)?;
            let payload = match (case.ty, payload) {
                (Some(t), Some(p)) => {
                    Some(Box::new(to_val(p, &t, &format!("{path}.{case_name}"))?))
                }
                (None, None | Some(Value::Null)) => None,
                _ => return Err(bad()),
            };
            Val::Variant(case_name.to_owned(), payload)
        }
        Type::Enum(en) => {
            // The WIT case, or the source's spelling of it (`LIGHT_BLUE`, `lightBlue`).
            let s = v.as_str().ok_or_else(bad)?;
            let case = en
                .names()
                .find(|n| *n == s || spells(s, n) || s.replace('_', "-").to_lowercase() == *n)
                .ok_or_else(bad)?;
            Val::Enum(case.to_owned())
        }
        Type::Option(opt) => match v {
            Value::Null => Val::Option(None),
            other => Val::Option(Some(Box::new(to_val(other, &opt.ty(), path)?))),
        },
        Type::Result(res) => {
            let (tag, payload) = tagged(v).ok_or_else(bad)?;
            let side = match tag {
                "ok" => res.ok(),
                "err" => res.err(),
                _ => return Err(bad()),
            };
            let inner = match (side, payload) {
                (Some(t), Some(p)) => Some(Box::new(to_val(p, &t, &format!("{path}.{tag}"))?)),
                (None, None | Some(Value::Null)) => None,
                _ => return Err(bad()),
            };
            Val::Result(if tag == "ok" { Ok(inner) } else { Err(inner) })
        }
        Type::Flags(flags) => {
            let items = v.as_array().ok_or_else(bad)?;
            let mut set = Vec::with_capacity(items.len());
            for item in items {
                let name = item
                    .as_str()
                    .filter(|s| flags.names().any(|n| n == *s))
                    .ok_or_else(bad)?;
                set.push(name.to_owned());
            }
            Val::Flags(set)
        }
        _ => return Err(bad()),
    })
}

/// `"case"` or `{"case": payload}`.
fn tagged(v: &Value) -> Option<(&str, Option<&Value>)> {
    match v {
        Value::String(s) => Some((s.as_str(), None)),
        Value::Object(obj) if obj.len() == 1 => {
            obj.iter().next().map(|(k, p)| (k.as_str(), Some(p)))
        }
        _ => None,
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

/// Converts a component value to JSON (the inverse of [`to_val`]) in WIT's own style.
pub fn to_json(v: Val) -> Value {
    to_json_styled(v, None, JsonStyle::Wit)
}

/// Converts a component value of type `ty` to JSON in `style` (see the module's doc).
pub fn to_json_as(v: Val, ty: &Type, style: JsonStyle) -> Value {
    to_json_styled(v, Some(ty), style)
}

fn to_json_styled(v: Val, ty: Option<&Type>, style: JsonStyle) -> Value {
    // Child types are followed only where a style needs them (pair lists, record names).
    let styled = !style.is_wit();
    let child = |t: Option<Type>| -> Option<Type> { t.filter(|_| styled) };
    match v {
        Val::Bool(b) => Value::Bool(b),
        Val::S8(i) => i.into(),
        Val::U8(i) => i.into(),
        Val::S16(i) => i.into(),
        Val::U16(i) => i.into(),
        Val::S32(i) => i.into(),
        Val::U32(i) => i.into(),
        Val::S64(i) => i.into(),
        Val::U64(i) => i.into(),
        Val::Float32(f) => float(f64::from(f)),
        // JavaScript has one number type: a whole f64 prints as an integer, as JSON.stringify.
        Val::Float64(f) if style == JsonStyle::Js && f.fract() == 0.0 && f.abs() < 9.0e15 => {
            (f as i64).into()
        }
        Val::Float64(f) => float(f),
        Val::Char(c) => Value::String(c.to_string()),
        Val::String(s) => Value::String(s),
        Val::List(items) => {
            let elem = child(match ty {
                Some(Type::List(l)) => Some(l.ty()),
                _ => None,
            });
            if elem.as_ref().is_some_and(is_pair_list) {
                let value_ty = match &elem {
                    Some(Type::Tuple(t)) => t.types().nth(1),
                    _ => None,
                };
                return Value::Object(
                    items
                        .into_iter()
                        .filter_map(|pair| match pair {
                            Val::Tuple(mut kv) if kv.len() == 2 => {
                                let v = kv.pop()?;
                                match kv.pop()? {
                                    Val::String(k) => {
                                        Some((k, to_json_styled(v, value_ty.as_ref(), style)))
                                    }
                                    _ => None,
                                }
                            }
                            _ => None,
                        })
                        .collect(),
                );
            }
            Value::Array(
                items
                    .into_iter()
                    .map(|item| to_json_styled(item, elem.as_ref(), style))
                    .collect(),
            )
        }
        Val::FixedLengthList(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Val::Tuple(items) => {
            let types: Vec<Type> = match ty {
                Some(Type::Tuple(t)) if styled => t.types().collect(),
                _ => Vec::new(),
            };
            Value::Array(
                items
                    .into_iter()
                    .enumerate()
                    .map(|(i, item)| to_json_styled(item, types.get(i), style))
                    .collect(),
            )
        }
        Val::Map(pairs) => {
            if pairs.iter().all(|(k, _)| matches!(k, Val::String(_))) {
                let map = pairs
                    .into_iter()
                    .filter_map(|(k, v)| match k {
                        Val::String(k) => Some((k, to_json(v))),
                        _ => None,
                    })
                    .collect();
                Value::Object(map)
            } else {
                Value::Array(
                    pairs
                        .into_iter()
                        .map(|(k, v)| Value::Array(vec![to_json(k), to_json(v)]))
                        .collect(),
                )
            }
        }
        Val::Record(fields) => {
            let types: Vec<Type> = match ty {
                Some(Type::Record(r)) if styled => r.fields().map(|f| f.ty).collect(),
                _ => Vec::new(),
            };
            Value::Object(
                fields
                    .into_iter()
                    .enumerate()
                    .map(|(i, (k, v))| {
                        (field_name(style, k), to_json_styled(v, types.get(i), style))
                    })
                    .collect(),
            )
        }
        Val::Variant(case, None) | Val::Enum(case) => Value::String(case),
        Val::Variant(case, Some(p)) => {
            let t = child(match ty {
                Some(Type::Variant(v)) => v.cases().find(|c| c.name == case).and_then(|c| c.ty),
                _ => None,
            });
            single(case, to_json_styled(*p, t.as_ref(), style))
        }
        Val::Option(None) => Value::Null,
        Val::Option(Some(p)) => {
            let t = child(match ty {
                Some(Type::Option(o)) => Some(o.ty()),
                _ => None,
            });
            to_json_styled(*p, t.as_ref(), style)
        }
        Val::Result(r) => {
            let (tag, p, t) = match (r, ty) {
                (Ok(p), Some(Type::Result(rt))) => ("ok", p, rt.ok()),
                (Err(p), Some(Type::Result(rt))) => ("err", p, rt.err()),
                (Ok(p), _) => ("ok", p, None),
                (Err(p), _) => ("err", p, None),
            };
            let t = child(t);
            single(
                tag.into(),
                p.map_or(Value::Null, |p| to_json_styled(*p, t.as_ref(), style)),
            )
        }
        Val::Flags(names) => Value::Array(names.into_iter().map(Value::String).collect()),
        // Exports with these types are refused when the plugin loads.
        Val::Resource(_) | Val::Future(_) | Val::Stream(_) | Val::ErrorContext(_) => Value::Null,
    }
}

/// A record field's name in `style`.
fn field_name(style: JsonStyle, wit_name: String) -> String {
    match style {
        JsonStyle::Wit => wit_name,
        JsonStyle::Python => wit_name.replace('-', "_"),
        JsonStyle::Js => camel(&wit_name),
    }
}

fn single(key: String, v: Value) -> Value {
    let mut m = Map::with_capacity(1);
    m.insert(key, v);
    Value::Object(m)
}

/// Whether values of `ty` can cross the JSON boundary (no resources, futures or streams).
pub fn is_supported(ty: &Type) -> bool {
    match ty {
        Type::List(l) => is_supported(&l.ty()),
        Type::Map(m) => is_supported(&m.key()) && is_supported(&m.value()),
        Type::Record(r) => r.fields().all(|f| is_supported(&f.ty)),
        Type::Tuple(t) => t.types().all(|t| is_supported(&t)),
        Type::Variant(v) => v.cases().all(|c| c.ty.as_ref().is_none_or(is_supported)),
        Type::Option(o) => is_supported(&o.ty()),
        Type::Result(r) => {
            r.ok().as_ref().is_none_or(is_supported) && r.err().as_ref().is_none_or(is_supported)
        }
        Type::Own(_) | Type::Borrow(_) | Type::Future(_) | Type::Stream(_) | Type::ErrorContext => {
            false
        }
        Type::FixedLengthList(_) => false,
        _ => true,
    }
}

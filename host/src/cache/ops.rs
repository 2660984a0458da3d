//! The operations that read and change one entry in place (docs/cache.md, "Atomic operations"
//! and "Structures"): given what is stored (or nothing), what to store instead and what to
//! answer. The store runs them under the key's lock on its owner node, so each is atomic and,
//! per key, linearizable. Pure: no I/O, no clock.
//!
//! A refused operation (wrong type, missing argument) changes nothing.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Map, Number, Value, json};

use super::key::Kind;

/// Why an operation is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The entry holds another kind of value.
    #[error("wrong type: the entry holds a {held}, not a {wanted}")]
    WrongType {
        /// What is stored.
        held: &'static str,
        /// What the operation works on.
        wanted: &'static str,
    },
    /// A missing or malformed argument.
    #[error("{0}")]
    Argument(String),
    /// An unknown operation.
    #[error("unknown {family} operation '{op}'; one of: {known}")]
    Unknown {
        /// Atomic, or which structure.
        family: &'static str,
        /// What was asked.
        op: String,
        /// What exists.
        known: &'static str,
    },
    /// An increment left the range of a 64-bit integer.
    #[error("increment overflows a 64-bit integer")]
    Overflow,
}

/// What an operation does to the entry.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Leave it as it is.
    Keep,
    /// Store this (of this kind).
    Store(Kind, Value),
    /// Remove the entry.
    Remove,
}

/// What an operation answers and does.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The change to make.
    pub change: Change,
    /// The answer.
    pub result: Value,
    /// False for a test that failed (a `conflict` on the wire).
    pub applied: bool,
}

impl Outcome {
    fn read(result: Value) -> Self {
        Outcome {
            change: Change::Keep,
            result,
            applied: true,
        }
    }
    fn store(kind: Kind, value: Value, result: Value) -> Self {
        Outcome {
            change: Change::Store(kind, value),
            result,
            applied: true,
        }
    }
}

/// What is stored now: its kind and value, or nothing.
pub type Current<'a> = Option<(Kind, &'a Value)>;

/// An atomic operation, as `cache-request`'s `atomic_operation` names it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AtomicOp {
    /// `test_and_set`, `compare_and_swap`, `increment`, `decrement`, `append`, `prepend`,
    /// `set_if_absent`.
    pub operation_type: String,
    /// What the entry must hold (`null`: must be absent) for a test to pass.
    pub expected_value: Value,
    /// What to store.
    pub new_value: Value,
    /// The step of an increment (default 1).
    pub increment_by: Option<Value>,
    /// Time to live of what is stored.
    pub ttl_seconds: Option<f64>,
    /// What an increment starts from when nothing is stored (default 0).
    pub initial_value: Option<Value>,
    /// Accepted for the original's shape; increments always create.
    pub create_if_missing: bool,
    /// Accepted for the original's shape; not evaluated.
    pub conditions: Map<String, Value>,
}

const ATOMICS: &str =
    "test_and_set, compare_and_swap, increment, decrement, append, prepend, set_if_absent";

fn held(cur: Current<'_>) -> Option<&Value> {
    cur.map(|(_, v)| v)
}

/// Runs an atomic operation on what is stored.
pub fn atomic(cur: Current<'_>, op: &AtomicOp) -> Result<Outcome, OpError> {
    match op.operation_type.as_str() {
        "test_and_set" | "compare_and_swap" => {
            let now = held(cur).cloned().unwrap_or(Value::Null);
            let matches = match (cur, &op.expected_value) {
                (None, Value::Null) => true,
                (None, _) => false,
                (Some(_), expected) => json_eq(&now, expected),
            };
            if !matches {
                return Ok(Outcome {
                    change: Change::Keep,
                    result: json!({"swapped": false, "value": now}),
                    applied: false,
                });
            }
            Ok(Outcome::store(
                Kind::Value,
                op.new_value.clone(),
                json!({"swapped": true, "value": op.new_value, "previous": now}),
            ))
        }
        "set_if_absent" => match held(cur) {
            Some(v) => Ok(Outcome {
                change: Change::Keep,
                result: json!({"set": false, "value": v}),
                applied: false,
            }),
            None => Ok(Outcome::store(
                Kind::Value,
                op.new_value.clone(),
                json!({"set": true, "value": op.new_value}),
            )),
        },
        "increment" | "decrement" => {
            let by = op.increment_by.clone().unwrap_or(json!(1));
            let by = match (&by, op.operation_type.as_str()) {
                (Value::Number(_), "increment") => by,
                (Value::Number(n), _) => negate(n)?,
                _ => return Err(OpError::Argument("increment_by must be a number".into())),
            };
            let start = match cur {
                Some((Kind::Value, v)) => v.clone(),
                Some((k, _)) => {
                    return Err(OpError::WrongType {
                        held: k.name(),
                        wanted: "number",
                    });
                }
                None => op.initial_value.clone().unwrap_or(json!(0)),
            };
            let Value::Number(start) = start else {
                return Err(OpError::WrongType {
                    held: "non-numeric value",
                    wanted: "number",
                });
            };
            let Value::Number(by) = by else {
                return Err(OpError::Argument("increment_by must be a number".into()));
            };
            let next = add(&start, &by)?;
            Ok(Outcome::store(Kind::Value, next.clone(), next))
        }
        "append" | "prepend" => {
            let front = op.operation_type == "prepend";
            let next = match (held(cur), &op.new_value) {
                (None, v) => v.clone(),
                (Some(Value::String(s)), Value::String(add)) => Value::String(if front {
                    format!("{add}{s}")
                } else {
                    format!("{s}{add}")
                }),
                (Some(Value::Array(items)), v) if matches!(cur, Some((Kind::Value, _))) => {
                    let mut items = items.clone();
                    let added: Vec<Value> = match v {
                        Value::Array(more) => more.clone(),
                        one => vec![one.clone()],
                    };
                    if front {
                        items.splice(0..0, added);
                    } else {
                        items.extend(added);
                    }
                    Value::Array(items)
                }
                _ => {
                    return Err(OpError::WrongType {
                        held: cur.map_or("nothing", |(k, _)| k.name()),
                        wanted: "string or array value",
                    });
                }
            };
            Ok(Outcome::store(Kind::Value, next.clone(), next))
        }
        other => Err(OpError::Unknown {
            family: "atomic",
            op: other.to_owned(),
            known: ATOMICS,
        }),
    }
}

fn negate(n: &Number) -> Result<Value, OpError> {
    if let Some(i) = n.as_i64() {
        return i.checked_neg().map(Value::from).ok_or(OpError::Overflow);
    }
    Ok(n.as_f64().map_or(Value::Null, |f| json!(-f)))
}

/// Integer plus integer stays an integer (checked); anything else is a float.
fn add(a: &Number, b: &Number) -> Result<Value, OpError> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return x.checked_add(y).map(Value::from).ok_or(OpError::Overflow);
    }
    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
    Number::from_f64(x + y)
        .map(Value::Number)
        .ok_or(OpError::Overflow)
}

/// JSON equality where numbers compare by value (`1` equals `1.0`).
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => x.as_f64() == y.as_f64(),
        },
        _ => a == b,
    }
}

/// A structure operation, as `cache-request`'s `structure_operation` names it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct StructureOp {
    /// `set`, `list`, `map`, `sorted_set`.
    pub structure_type: String,
    /// What to do (per type, see [`structure`]).
    pub operation: String,
    /// Members or items the operation takes.
    pub values: Vec<Value>,
    /// Map fields to read or delete.
    pub fields: Vec<String>,
    /// Map fields to set.
    pub field_updates: Map<String, Value>,
    /// Sorted-set members with scores: `{"member": …, "score": …}`.
    pub scored_values: Vec<Value>,
    /// A list index (negative counts from the end).
    pub index: Option<i64>,
    /// `{"start", "end"}` (ranks or indexes, end exclusive, negative from the end) or
    /// `{"min", "max"}` (scores, inclusive).
    pub range_spec: Option<Map<String, Value>>,
    /// At most this many results.
    pub limit: Option<usize>,
    /// Accepted for the original's shape.
    pub options: Map<String, Value>,
}

const SET_OPS: &str = "add, remove, contains, members, size, clear";
const LIST_OPS: &str =
    "push (append), prepend, pop, shift, get, range (slice), remove, size, clear";
const MAP_OPS: &str = "set, get, delete, contains, keys, values, items, size, clear";
const ZSET_OPS: &str = "add, remove, score, rank, range, range_by_score, size, clear";

/// The structure kind a `structure_type` names.
pub fn structure_kind(name: &str) -> Result<Kind, OpError> {
    match name {
        "set" => Ok(Kind::Set),
        "list" => Ok(Kind::List),
        "map" => Ok(Kind::Map),
        "sorted_set" | "zset" => Ok(Kind::SortedSet),
        other => Err(OpError::Argument(format!(
            "unknown structure_type '{other}'; one of: set, list, map, sorted_set"
        ))),
    }
}

/// Runs a structure operation on what is stored: an absent entry is an empty structure; an
/// entry of another kind is refused. A structure left empty is removed.
pub fn structure(cur: Current<'_>, op: &StructureOp) -> Result<Outcome, OpError> {
    let kind = structure_kind(&op.structure_type)?;
    let empty = match kind {
        Kind::Map => Value::Object(Map::new()),
        _ => Value::Array(Vec::new()),
    };
    let value = match cur {
        None => &empty,
        Some((k, v)) if k == kind => v,
        Some((k, _)) => {
            return Err(OpError::WrongType {
                held: k.name(),
                wanted: kind.name(),
            });
        }
    };
    let out = match kind {
        Kind::Set => set_op(as_array(value), op)?,
        Kind::List => list_op(as_array(value), op)?,
        Kind::Map => map_op(value.as_object().cloned().unwrap_or_default(), op)?,
        Kind::SortedSet => zset_op(as_array(value), op)?,
        // `structure_kind` never names a plain value.
        Kind::Value => Outcome::read(Value::Null),
    };
    // An emptied structure leaves no entry behind (as Redis).
    Ok(match out.change {
        Change::Store(_, Value::Array(ref a)) if a.is_empty() => Outcome {
            change: if cur.is_some() {
                Change::Remove
            } else {
                Change::Keep
            },
            ..out
        },
        Change::Store(_, Value::Object(ref m)) if m.is_empty() => Outcome {
            change: if cur.is_some() {
                Change::Remove
            } else {
                Change::Keep
            },
            ..out
        },
        _ => out,
    })
}

fn as_array(v: &Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}

fn first<'a>(op: &'a StructureOp, what: &str) -> Result<&'a Value, OpError> {
    op.values
        .first()
        .ok_or_else(|| OpError::Argument(format!("'{}' needs {what} in values", op.operation)))
}

fn needs_values(op: &StructureOp) -> Result<(), OpError> {
    if op.values.is_empty() {
        return Err(OpError::Argument(format!(
            "'{}' needs at least one item in values",
            op.operation
        )));
    }
    Ok(())
}

fn set_op(mut members: Vec<Value>, op: &StructureOp) -> Result<Outcome, OpError> {
    Ok(match op.operation.as_str() {
        "add" => {
            needs_values(op)?;
            let mut added = 0;
            for v in &op.values {
                if !members.iter().any(|m| json_eq(m, v)) {
                    members.push(v.clone());
                    added += 1;
                }
            }
            Outcome::store(Kind::Set, Value::Array(members), json!(added))
        }
        "remove" => {
            needs_values(op)?;
            let before = members.len();
            members.retain(|m| !op.values.iter().any(|v| json_eq(m, v)));
            let removed = before - members.len();
            Outcome::store(Kind::Set, Value::Array(members), json!(removed))
        }
        "contains" => {
            let v = first(op, "the member")?;
            Outcome::read(json!(members.iter().any(|m| json_eq(m, v))))
        }
        "members" => Outcome::read(Value::Array(limit(members, op.limit))),
        "size" => Outcome::read(json!(members.len())),
        "clear" => Outcome::store(Kind::Set, json!([]), json!(members.len())),
        other => return Err(unknown("set", other, SET_OPS)),
    })
}

fn unknown(family: &'static str, op: &str, known: &'static str) -> OpError {
    OpError::Unknown {
        family,
        op: op.to_owned(),
        known,
    }
}

fn limit(mut items: Vec<Value>, max: Option<usize>) -> Vec<Value> {
    if let Some(n) = max {
        items.truncate(n);
    }
    items
}

/// `[start, end)` of `len` items from a range spec (negative counts from the end).
fn bounds(op: &StructureOp, len: usize) -> Result<(usize, usize), OpError> {
    let spec = op.range_spec.as_ref();
    let at = |name: &str, default: i64| -> Result<i64, OpError> {
        match spec.and_then(|s| s.get(name)) {
            None | Some(Value::Null) => Ok(default),
            Some(v) => v
                .as_i64()
                .ok_or_else(|| OpError::Argument(format!("range_spec.{name} must be an integer"))),
        }
    };
    let len_i = len as i64;
    let norm = |i: i64| -> usize {
        let i = if i < 0 { len_i + i } else { i };
        i.clamp(0, len_i) as usize
    };
    let start = norm(at("start", 0)?);
    let end = norm(at("end", len_i)?);
    Ok((start, end.max(start)))
}

fn index(op: &StructureOp, len: usize) -> Result<Option<usize>, OpError> {
    let i = op
        .index
        .ok_or_else(|| OpError::Argument(format!("'{}' needs an index", op.operation)))?;
    let i = if i < 0 { len as i64 + i } else { i };
    Ok((0..len as i64).contains(&i).then_some(i as usize))
}

fn list_op(mut items: Vec<Value>, op: &StructureOp) -> Result<Outcome, OpError> {
    Ok(match op.operation.as_str() {
        "push" | "append" => {
            needs_values(op)?;
            items.extend(op.values.iter().cloned());
            let n = items.len();
            Outcome::store(Kind::List, Value::Array(items), json!(n))
        }
        "prepend" => {
            needs_values(op)?;
            items.splice(0..0, op.values.iter().cloned());
            let n = items.len();
            Outcome::store(Kind::List, Value::Array(items), json!(n))
        }
        "pop" | "shift" => {
            let taken = if items.is_empty() {
                Value::Null
            } else if op.operation == "pop" {
                items.pop().unwrap_or(Value::Null)
            } else {
                items.remove(0)
            };
            Outcome::store(Kind::List, Value::Array(items), taken)
        }
        "get" => {
            let at = index(op, items.len())?;
            Outcome::read(at.map_or(Value::Null, |i| items[i].clone()))
        }
        "range" | "slice" => {
            let (s, e) = bounds(op, items.len())?;
            Outcome::read(Value::Array(limit(items[s..e].to_vec(), op.limit)))
        }
        "remove" => {
            needs_values(op)?;
            let before = items.len();
            items.retain(|m| !op.values.iter().any(|v| json_eq(m, v)));
            let removed = before - items.len();
            Outcome::store(Kind::List, Value::Array(items), json!(removed))
        }
        "size" => Outcome::read(json!(items.len())),
        "clear" => Outcome::store(Kind::List, json!([]), json!(items.len())),
        other => return Err(unknown("list", other, LIST_OPS)),
    })
}

fn map_op(mut fields: Map<String, Value>, op: &StructureOp) -> Result<Outcome, OpError> {
    let field_list = || -> Result<Vec<String>, OpError> {
        if !op.fields.is_empty() {
            return Ok(op.fields.clone());
        }
        let from_values: Option<Vec<String>> = op
            .values
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect();
        match from_values {
            Some(f) if !f.is_empty() => Ok(f),
            _ => Err(OpError::Argument(format!(
                "'{}' needs field names in fields",
                op.operation
            ))),
        }
    };
    Ok(match op.operation.as_str() {
        "set" => {
            if op.field_updates.is_empty() {
                return Err(OpError::Argument(
                    "'set' needs field_updates (an object of fields to values)".into(),
                ));
            }
            let mut added = 0;
            for (k, v) in &op.field_updates {
                if fields.insert(k.clone(), v.clone()).is_none() {
                    added += 1;
                }
            }
            Outcome::store(Kind::Map, Value::Object(fields), json!(added))
        }
        "get" => {
            let names = field_list()?;
            if names.len() == 1 {
                Outcome::read(fields.get(&names[0]).cloned().unwrap_or(Value::Null))
            } else {
                let picked: Map<String, Value> = names
                    .iter()
                    .map(|n| (n.clone(), fields.get(n).cloned().unwrap_or(Value::Null)))
                    .collect();
                Outcome::read(Value::Object(picked))
            }
        }
        "delete" => {
            let names = field_list()?;
            let removed = names.iter().filter(|n| fields.remove(*n).is_some()).count();
            Outcome::store(Kind::Map, Value::Object(fields), json!(removed))
        }
        "contains" => {
            let names = field_list()?;
            Outcome::read(json!(fields.contains_key(&names[0])))
        }
        "keys" => Outcome::read(json!(fields.keys().collect::<Vec<_>>())),
        "values" => Outcome::read(Value::Array(fields.values().cloned().collect())),
        "items" => Outcome::read(Value::Object(fields)),
        "size" => Outcome::read(json!(fields.len())),
        "clear" => {
            let n = fields.len();
            Outcome::store(Kind::Map, json!({}), json!(n))
        }
        other => return Err(unknown("map", other, MAP_OPS)),
    })
}

/// A sorted set is `[[member, score], …]`, ordered by score, then by the member's JSON text.
fn zset_op(items: Vec<Value>, op: &StructureOp) -> Result<Outcome, OpError> {
    let mut z: Vec<(Value, f64)> = items
        .into_iter()
        .filter_map(|pair| match pair {
            Value::Array(mut p) if p.len() == 2 => {
                let score = p[1].as_f64()?;
                Some((p.swap_remove(0), score))
            }
            _ => None,
        })
        .collect();
    let order = |a: &(Value, f64), b: &(Value, f64)| {
        a.1.partial_cmp(&b.1)
            .unwrap_or(Ordering::Equal)
            .then_with(|| a.0.to_string().cmp(&b.0.to_string()))
    };
    let pack = |z: &[(Value, f64)]| -> Value {
        Value::Array(z.iter().map(|(m, s)| json!([m, s])).collect())
    };
    let position = |z: &[(Value, f64)], m: &Value| z.iter().position(|(x, _)| json_eq(x, m));
    Ok(match op.operation.as_str() {
        "add" => {
            if op.scored_values.is_empty() {
                return Err(OpError::Argument(
                    "'add' needs scored_values: [{\"member\": …, \"score\": number}]".into(),
                ));
            }
            let mut added = 0;
            for sv in &op.scored_values {
                let (Some(member), Some(score)) =
                    (sv.get("member"), sv.get("score").and_then(Value::as_f64))
                else {
                    return Err(OpError::Argument(format!(
                        "each scored value is {{\"member\": …, \"score\": number}}, got {sv}"
                    )));
                };
                match position(&z, member) {
                    Some(i) => z[i].1 = score,
                    None => {
                        z.push((member.clone(), score));
                        added += 1;
                    }
                }
            }
            z.sort_by(order);
            Outcome::store(Kind::SortedSet, pack(&z), json!(added))
        }
        "remove" => {
            needs_values(op)?;
            let before = z.len();
            z.retain(|(m, _)| !op.values.iter().any(|v| json_eq(m, v)));
            let removed = before - z.len();
            Outcome::store(Kind::SortedSet, pack(&z), json!(removed))
        }
        "score" => {
            let m = first(op, "the member")?;
            Outcome::read(position(&z, m).map_or(Value::Null, |i| json!(z[i].1)))
        }
        "rank" => {
            let m = first(op, "the member")?;
            Outcome::read(position(&z, m).map_or(Value::Null, |i| json!(i)))
        }
        "range" => {
            let (s, e) = bounds(op, z.len())?;
            Outcome::read(limit_pack(&z[s..e], op.limit))
        }
        "range_by_score" => {
            let spec = op.range_spec.as_ref();
            let get = |name: &str, default: f64| -> Result<f64, OpError> {
                match spec.and_then(|s| s.get(name)) {
                    None | Some(Value::Null) => Ok(default),
                    Some(v) => v.as_f64().ok_or_else(|| {
                        OpError::Argument(format!("range_spec.{name} must be a number"))
                    }),
                }
            };
            let (lo, hi) = (get("min", f64::NEG_INFINITY)?, get("max", f64::INFINITY)?);
            let picked: Vec<(Value, f64)> = z
                .iter()
                .filter(|(_, s)| *s >= lo && *s <= hi)
                .cloned()
                .collect();
            Outcome::read(limit_pack(&picked, op.limit))
        }
        "size" => Outcome::read(json!(z.len())),
        "clear" => Outcome::store(Kind::SortedSet, json!([]), json!(z.len())),
        other => return Err(unknown("sorted_set", other, ZSET_OPS)),
    })
}

fn limit_pack(z: &[(Value, f64)], max: Option<usize>) -> Value {
    let n = max.unwrap_or(usize::MAX).min(z.len());
    Value::Array(z[..n].iter().map(|(m, s)| json!([m, s])).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn atom(v: Value) -> AtomicOp {
        serde_json::from_value(v).expect("atomic op")
    }
    fn st(v: Value) -> StructureOp {
        serde_json::from_value(v).expect("structure op")
    }
    fn stored(o: &Outcome) -> &Value {
        match &o.change {
            Change::Store(_, v) => v,
            other => panic!("expected a store, got {other:?}"),
        }
    }

    #[test]
    fn test_and_set_takes_a_lock_once() {
        let lock = atom(
            json!({"operation_type": "test_and_set", "expected_value": null, "new_value": "me"}),
        );
        let first = atomic(None, &lock).expect("operation fixture");
        assert!(first.applied);
        assert_eq!(stored(&first), &json!("me"));
        let held = json!("me");
        let second = atomic(Some((Kind::Value, &held)), &lock).expect("operation fixture");
        assert!(!second.applied, "a held lock is a conflict");
        assert_eq!(second.change, Change::Keep);
        assert_eq!(second.result["value"], "me");
    }

    #[test]
    fn compare_and_swap_compares_numbers_by_value() {
        let cur = json!(1);
        let op = atom(
            json!({"operation_type": "compare_and_swap", "expected_value": 1.0, "new_value": 2}),
        );
        let out = atomic(Some((Kind::Value, &cur)), &op).expect("operation fixture");
        assert!(out.applied);
        assert_eq!(out.result["previous"], 1);
        let wrong = atom(
            json!({"operation_type": "compare_and_swap", "expected_value": 5, "new_value": 2}),
        );
        assert!(
            !atomic(Some((Kind::Value, &cur)), &wrong)
                .expect("operation fixture")
                .applied
        );
        let absent = atomic(None, &wrong).expect("operation fixture");
        assert!(!absent.applied, "an absent entry matches only null");
    }

    #[test]
    fn increments_stay_integers_and_refuse_overflow_and_text() {
        let inc = atom(json!({"operation_type": "increment", "increment_by": 5}));
        assert_eq!(
            atomic(None, &inc).expect("operation fixture").result,
            json!(5)
        );
        let cur = json!(i64::MAX);
        assert_eq!(
            atomic(Some((Kind::Value, &cur)), &inc),
            Err(OpError::Overflow)
        );
        let half = atom(json!({"operation_type": "decrement", "increment_by": 0.5}));
        let two = json!(2);
        assert_eq!(
            atomic(Some((Kind::Value, &two)), &half)
                .expect("operation fixture")
                .result,
            json!(1.5)
        );
        let text = json!("x");
        assert!(matches!(
            atomic(Some((Kind::Value, &text)), &inc),
            Err(OpError::WrongType { .. })
        ));
        let set = json!([1]);
        assert!(matches!(
            atomic(Some((Kind::Set, &set)), &inc),
            Err(OpError::WrongType { held: "set", .. })
        ));
        let from = atom(json!({"operation_type": "increment", "initial_value": 10}));
        assert_eq!(
            atomic(None, &from).expect("operation fixture").result,
            json!(11)
        );
    }

    #[test]
    fn set_if_absent_append_and_unknown() {
        let op = atom(json!({"operation_type": "set_if_absent", "new_value": {"a": 1}}));
        assert!(atomic(None, &op).expect("operation fixture").applied);
        let cur = json!("old");
        let kept = atomic(Some((Kind::Value, &cur)), &op).expect("operation fixture");
        assert!(!kept.applied);
        assert_eq!(kept.result["value"], "old");
        let app = atom(json!({"operation_type": "prepend", "new_value": ">"}));
        assert_eq!(
            atomic(Some((Kind::Value, &cur)), &app)
                .expect("operation fixture")
                .result,
            json!(">old")
        );
        let nope = atom(json!({"operation_type": "explode"}));
        assert!(matches!(atomic(None, &nope), Err(OpError::Unknown { .. })));
    }

    #[test]
    fn sets_keep_members_distinct_and_refuse_other_kinds() {
        let add = st(json!({"structure_type": "set", "operation": "add", "values": [1, 2, 1]}));
        let out = structure(None, &add).expect("operation fixture");
        assert_eq!(out.result, json!(2));
        let members = stored(&out).clone();
        let has = st(json!({"structure_type": "set", "operation": "contains", "values": [2]}));
        assert_eq!(
            structure(Some((Kind::Set, &members)), &has)
                .expect("operation fixture")
                .result,
            json!(true)
        );
        let list_op = st(json!({"structure_type": "list", "operation": "push", "values": [3]}));
        assert_eq!(
            structure(Some((Kind::Set, &members)), &list_op),
            Err(OpError::WrongType {
                held: "set",
                wanted: "list"
            })
        );
        let plain = json!("text");
        assert!(structure(Some((Kind::Value, &plain)), &add).is_err());
        let remove = st(json!({"structure_type": "set", "operation": "remove", "values": [1, 2]}));
        assert_eq!(
            structure(Some((Kind::Set, &members)), &remove)
                .expect("operation fixture")
                .change,
            Change::Remove,
            "an emptied set leaves no entry"
        );
        let empty_add = st(json!({"structure_type": "set", "operation": "add"}));
        assert!(matches!(
            structure(None, &empty_add),
            Err(OpError::Argument(_))
        ));
    }

    #[test]
    fn lists_push_pop_and_range() {
        let push =
            st(json!({"structure_type": "list", "operation": "push", "values": ["a", "b", "c"]}));
        let l = stored(&structure(None, &push).expect("operation fixture")).clone();
        let range = st(
            json!({"structure_type": "list", "operation": "range", "range_spec": {"start": 1, "end": -0}}),
        );
        // end -0 is 0: an empty range, not an error.
        assert_eq!(
            structure(Some((Kind::List, &l)), &range)
                .expect("operation fixture")
                .result,
            json!([])
        );
        let tail = st(
            json!({"structure_type": "list", "operation": "range", "range_spec": {"start": -2}}),
        );
        assert_eq!(
            structure(Some((Kind::List, &l)), &tail)
                .expect("operation fixture")
                .result,
            json!(["b", "c"])
        );
        let pop = st(json!({"structure_type": "list", "operation": "pop"}));
        let out = structure(Some((Kind::List, &l)), &pop).expect("operation fixture");
        assert_eq!(out.result, json!("c"));
        assert_eq!(stored(&out), &json!(["a", "b"]));
        let get = st(json!({"structure_type": "list", "operation": "get", "index": -1}));
        assert_eq!(
            structure(Some((Kind::List, &l)), &get)
                .expect("operation fixture")
                .result,
            json!("c")
        );
        let no_index = st(json!({"structure_type": "list", "operation": "get"}));
        assert!(structure(Some((Kind::List, &l)), &no_index).is_err());
    }

    #[test]
    fn maps_set_get_delete() {
        let set = st(
            json!({"structure_type": "map", "operation": "set", "field_updates": {"a": 1, "b": 2}}),
        );
        let m = stored(&structure(None, &set).expect("operation fixture")).clone();
        let get = st(json!({"structure_type": "map", "operation": "get", "fields": ["a"]}));
        assert_eq!(
            structure(Some((Kind::Map, &m)), &get)
                .expect("operation fixture")
                .result,
            json!(1)
        );
        let two = st(json!({"structure_type": "map", "operation": "get", "fields": ["a", "z"]}));
        assert_eq!(
            structure(Some((Kind::Map, &m)), &two)
                .expect("operation fixture")
                .result,
            json!({"a": 1, "z": null})
        );
        let del = st(json!({"structure_type": "map", "operation": "delete", "fields": ["a"]}));
        assert_eq!(
            stored(&structure(Some((Kind::Map, &m)), &del).expect("operation fixture")),
            &json!({"b": 2})
        );
        let keys = st(json!({"structure_type": "map", "operation": "keys"}));
        assert_eq!(
            structure(Some((Kind::Map, &m)), &keys)
                .expect("operation fixture")
                .result,
            json!(["a", "b"])
        );
    }

    #[test]
    fn sorted_sets_order_by_score_and_range_by_rank_and_score() {
        let add = st(
            json!({"structure_type": "sorted_set", "operation": "add", "scored_values": [
                {"member": "c", "score": 3}, {"member": "a", "score": 1}, {"member": "b", "score": 2}
            ]}),
        );
        let z = stored(&structure(None, &add).expect("operation fixture")).clone();
        assert_eq!(z, json!([["a", 1.0], ["b", 2.0], ["c", 3.0]]));
        let rank =
            st(json!({"structure_type": "sorted_set", "operation": "rank", "values": ["c"]}));
        assert_eq!(
            structure(Some((Kind::SortedSet, &z)), &rank)
                .expect("operation fixture")
                .result,
            json!(2)
        );
        let by_score = st(
            json!({"structure_type": "sorted_set", "operation": "range_by_score", "range_spec": {"min": 1.5, "max": 3}, "limit": 1}),
        );
        assert_eq!(
            structure(Some((Kind::SortedSet, &z)), &by_score)
                .expect("operation fixture")
                .result,
            json!([["b", 2.0]])
        );
        let rescore = st(
            json!({"structure_type": "sorted_set", "operation": "add", "scored_values": [{"member": "a", "score": 9}]}),
        );
        let out = structure(Some((Kind::SortedSet, &z)), &rescore).expect("operation fixture");
        assert_eq!(out.result, json!(0), "a new score is not a new member");
        assert_eq!(stored(&out)[2], json!(["a", 9.0]));
        let bad = st(
            json!({"structure_type": "sorted_set", "operation": "add", "scored_values": [{"member": "a"}]}),
        );
        assert!(structure(None, &bad).is_err());
        let unknown_type = st(json!({"structure_type": "tree", "operation": "add"}));
        assert!(structure(None, &unknown_type).is_err());
    }
}

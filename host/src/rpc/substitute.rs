//! Pure argument substitution (protocol.md §2.3 rule 4): references to finished commands become
//! their results, just before a command runs.

use serde_json::{Map, Value};

/// Looks up the result of a finished command visible to the command being substituted.
pub trait Results {
    /// The result of command `name`, if it is finished and visible.
    fn get(&self, name: &str) -> Option<&Value>;
}

impl Results for Map<String, Value> {
    fn get(&self, name: &str) -> Option<&Value> {
        Map::get(self, name)
    }
}

/// The replacement for one string, if it references a visible result: the whole result, or a
/// field reached by walking object keys (`base.k1.k2`). A missing key leaves the string as is.
pub fn resolve<'a, R: Results + ?Sized>(s: &str, results: &'a R) -> Option<&'a Value> {
    if let Some(v) = results.get(s) {
        return Some(v);
    }
    let (base, path) = s.split_once('.')?;
    let mut cur = results.get(base)?;
    for key in path.split('.') {
        cur = cur.as_object()?.get(key)?;
    }
    Some(cur)
}

/// Substitutes in place: strings anywhere inside `v` (array elements, object values; never keys).
pub fn substitute<R: Results + ?Sized>(v: &mut Value, results: &R) {
    match v {
        Value::String(s) => {
            if let Some(found) = resolve(s, results) {
                *v = found.clone();
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|i| substitute(i, results)),
        Value::Object(map) => map.values_mut().for_each(|i| substitute(i, results)),
        _ => {}
    }
}

/// With `strict_references`: the first string inside `v` that starts with a visible result's
/// name and a `.` but whose field path does not resolve, described for the error.
pub fn unresolved<R: Results + ?Sized>(v: &Value, results: &R) -> Option<String> {
    match v {
        Value::String(s) => {
            if results.get(s).is_some() {
                return None;
            }
            let (base, path) = s.split_once('.')?;
            let mut cur = results.get(base)?;
            let mut walked = base.to_owned();
            for key in path.split('.') {
                let next = match cur {
                    Value::Object(m) => m.get(key).ok_or_else(|| {
                        let mut keys: Vec<&str> = m.keys().map(String::as_str).collect();
                        keys.truncate(20);
                        format!(
                            "'{s}' does not resolve: {walked} has no field '{key}' (its fields: {})",
                            keys.join(", ")
                        )
                    }),
                    other => Err(format!(
                        "'{s}' does not resolve: {walked} is {}, not an object",
                        kind(other)
                    )),
                };
                match next {
                    Ok(n) => cur = n,
                    Err(e) => return Some(e),
                }
                walked = format!("{walked}.{key}");
            }
            None
        }
        Value::Array(items) => items.iter().find_map(|i| unresolved(i, results)),
        Value::Object(map) => map.values().find_map(|i| unresolved(i, results)),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a bool",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn results() -> Map<String, Value> {
        let Value::Object(m) = json!({
            "first": "hello",
            "d": {"inner": {"value": 5}, "list": [1, 2, 3]},
        }) else {
            unreachable!()
        };
        m
    }

    #[test]
    fn worked_example_two() {
        let mut args = json!(["d.inner.value", "d.list", "d.missing", "d.inner"]);
        substitute(&mut args, &results());
        assert_eq!(args, json!([5, [1, 2, 3], "d.missing", {"value": 5}]));
    }

    #[test]
    fn nested_values_substituted_keys_untouched() {
        let mut args = json!([{"first": ["first", {"k": "first"}]}, "firstly", "d.list.0"]);
        substitute(&mut args, &results());
        assert_eq!(
            args,
            json!([{"first": ["hello", {"k": "hello"}]}, "firstly", "d.list.0"])
        );
    }

    #[test]
    fn unknown_base_stays_literal() {
        let mut v = json!("nobody.x");
        substitute(&mut v, &results());
        assert_eq!(v, json!("nobody.x"));
    }

    #[test]
    fn strict_references_name_the_missing_field() {
        let r = results();
        assert_eq!(
            unresolved(&json!(["d.inner.value", "first", "plain", 3]), &r),
            None
        );
        let msg = unresolved(&json!([{"k": ["d.inner.nope"]}]), &r);
        assert_eq!(
            msg.as_deref(),
            Some(
                "'d.inner.nope' does not resolve: d.inner has no field 'nope' (its fields: value)"
            )
        );
        let msg = unresolved(&json!("d.list.0"), &r);
        assert_eq!(
            msg.as_deref(),
            Some("'d.list.0' does not resolve: d.list is an array, not an object")
        );
        assert_eq!(
            unresolved(&json!("nobody.x"), &r),
            None,
            "not a result's name"
        );
    }
}

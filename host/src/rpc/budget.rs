//! A request's byte budget: what its results and the substituted arguments of its running
//! commands may take at once. Checked while they are built, before a value is copied, so a
//! request that amplifies (each command doubling the one before, one result fanned into
//! hundreds of arguments) fails with 1008 at the first step past the budget instead of
//! building gigabytes and refusing the reply afterwards. Pure: sizes come from walking values.

use serde_json::Value;

use super::substitute::{Results, resolve};

/// About how many bytes `v` takes encoded as JSON: exact for strings without escapes and for
/// integers, an upper bound for floats. Cheap: one walk, no allocation.
pub fn encoded_len(v: &Value) -> usize {
    match v {
        Value::Null => 4,
        Value::Bool(b) => {
            if *b {
                4
            } else {
                5
            }
        }
        Value::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => digits(u),
            (None, Some(i)) => 1 + digits(i.unsigned_abs()),
            _ => 24,
        },
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|i| encoded_len(i) + 1).sum::<usize>(),
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, v)| k.len() + 4 + encoded_len(v))
                .sum::<usize>()
        }
    }
}

fn digits(mut u: u64) -> usize {
    let mut n = 1;
    while u >= 10 {
        u /= 10;
        n += 1;
    }
    n
}

/// The size `v` will have once its references are substituted (see
/// [`substitute`](super::substitute::substitute)), without substituting.
pub fn substituted_len<R: Results + ?Sized>(v: &Value, results: &R) -> usize {
    match v {
        Value::String(s) => match resolve(s, results) {
            Some(found) => encoded_len(found),
            None => s.len() + 2,
        },
        Value::Array(items) => {
            2 + items
                .iter()
                .map(|i| substituted_len(i, results) + 1)
                .sum::<usize>()
        }
        Value::Object(m) => {
            2 + m
                .iter()
                .map(|(k, v)| k.len() + 4 + substituted_len(v, results))
                .sum::<usize>()
        }
        other => encoded_len(other),
    }
}

/// Bytes held by one request against its limit.
#[derive(Debug)]
pub struct Budget {
    limit: usize,
    held: usize,
}

/// Taking more would pass the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverBudget {
    /// The budget.
    pub limit: usize,
    /// What would have been held.
    pub wanted: usize,
}

impl Budget {
    /// Nothing held yet.
    pub fn new(limit: usize) -> Budget {
        Budget { limit, held: 0 }
    }

    /// Holds `bytes` more, unless that passes the limit (then nothing changes).
    pub fn take(&mut self, bytes: usize) -> Result<(), OverBudget> {
        let wanted = self.held.saturating_add(bytes);
        if wanted > self.limit {
            return Err(OverBudget {
                limit: self.limit,
                wanted,
            });
        }
        self.held = wanted;
        Ok(())
    }

    /// Gives back `bytes` (a running command's arguments, once it finished).
    pub fn release(&mut self, bytes: usize) {
        self.held = self.held.saturating_sub(bytes);
    }

    /// Bytes held now.
    pub fn held(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    #[test]
    fn encoded_len_matches_serde_json_for_plain_values() {
        for v in [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(12345),
            json!(-77),
            json!(u64::MAX),
            json!("hello"),
            json!([1, "a", [2, 3], {"k": "v"}]),
            json!({"a": 1, "bb": [true, null]}),
        ] {
            let exact = serde_json::to_string(&v).expect("json").len();
            assert!(
                encoded_len(&v) >= exact,
                "{v}: {} < {exact}",
                encoded_len(&v)
            );
            assert!(
                encoded_len(&v) <= exact + 8,
                "{v}: {} vs {exact}",
                encoded_len(&v)
            );
        }
        assert!(encoded_len(&json!(1.5e300)) >= "1.5e300".len());
    }

    #[test]
    fn substituted_len_counts_references_without_building_them() {
        let mut results = Map::new();
        results.insert("big".into(), json!("x".repeat(1000)));
        let args = json!(["big", "big", {"k": "big"}, "plain"]);
        let n = substituted_len(&args, &results);
        assert!((3000..3100).contains(&n), "{n}");
        assert_eq!(substituted_len(&json!("nothing"), &results), 9);
    }

    #[test]
    fn a_budget_refuses_what_would_pass_it_and_takes_back_releases() {
        let mut b = Budget::new(100);
        b.take(60).expect("fits");
        assert_eq!(
            b.take(50),
            Err(OverBudget {
                limit: 100,
                wanted: 110
            })
        );
        assert_eq!(b.held(), 60, "a refused take holds nothing");
        b.release(30);
        b.take(70).expect("fits again");
        assert_eq!(b.held(), 100);
    }
}

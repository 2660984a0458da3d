//! Reads a function's signature (WIT, as a component exports it, or the WIT-like notation of
//! the built-ins) into parameters and a return type, for the `parameters` and `return_spec`
//! of MPREG's `rpc_describe` (`RpcSpec`) and the counts of its `RpcSpecSummary`.
//!
//! `func(a: s32, b?: string, rest: any...) -> list<u8>`: a `?` after the name makes the
//! parameter optional, `...` after the type makes it take the remaining arguments. Types are
//! kept as written (`display`), with their generic arguments split out (`list<u8>` → origin
//! `list`, args `["u8"]`; `option<T>` is optional). Pure: no I/O.

/// One parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// Its name.
    pub name: String,
    /// Its type as written.
    pub ty: TypeSpec,
    /// Whether a caller must pass it.
    pub required: bool,
    /// Whether it takes every remaining argument.
    pub variadic: bool,
}

/// A type as `rpc_describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSpec {
    /// As written: `list<string>`.
    pub display: String,
    /// The generic's name: `list` (none for a plain type).
    pub origin: Option<String>,
    /// The generic's arguments: `["string"]`.
    pub args: Vec<String>,
    /// `option<…>`.
    pub is_optional: bool,
}

/// A parsed signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Parameters in order.
    pub params: Vec<Param>,
    /// The return type; `None` for a function that returns nothing.
    pub returns: Option<TypeSpec>,
}

/// Splits at top-level commas (not inside `<>`, `()`, `{}`, `[]`).
fn split_top(s: &str, sep: char) -> Vec<&str> {
    let (mut depth, mut start, mut out) = (0i32, 0, Vec::new());
    for (i, c) in s.char_indices() {
        match c {
            '<' | '(' | '{' | '[' => depth += 1,
            '>' | ')' | '}' | ']' => depth -= 1,
            c if c == sep && depth == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

impl TypeSpec {
    /// A type as written.
    pub fn parse(text: &str) -> TypeSpec {
        let display = text.trim().to_owned();
        let generic = display
            .find('<')
            .filter(|_| display.ends_with('>'))
            .map(|open| {
                let origin = display[..open].trim().to_owned();
                let inner = &display[open + 1..display.len() - 1];
                let args = split_top(inner, ',')
                    .into_iter()
                    .map(str::to_owned)
                    .collect();
                (origin, args)
            });
        let (origin, args) = match generic {
            Some((o, a)) => (Some(o), a),
            None => (None, Vec::new()),
        };
        let is_optional = origin.as_deref() == Some("option");
        TypeSpec {
            display,
            origin,
            args,
            is_optional,
        }
    }
}

/// Reads `func(…) -> T`; a signature that is not of that form (an older plugin's free text)
/// yields no parameters and its whole text as the return type's display, so nothing is lost.
pub fn parse(signature: &str) -> Signature {
    let s = signature.trim();
    let Some(body) = s.strip_prefix("func") else {
        return opaque(s);
    };
    let body = body.trim_start();
    if !body.starts_with('(') {
        return opaque(s);
    }
    // The parameter list ends at the `)` that closes the first `(`.
    let mut depth = 0i32;
    let mut close = None;
    for (i, c) in body.char_indices() {
        match c {
            '(' | '<' | '{' | '[' => depth += 1,
            ')' | '>' | '}' | ']' => {
                depth -= 1;
                if depth == 0 && c == ')' {
                    close = Some(i);
                    break;
                }
            }
            _ => {}
        }
    }
    let Some(close) = close else {
        return opaque(s);
    };
    let params = split_top(&body[1..close], ',')
        .into_iter()
        .map(param)
        .collect();
    let rest = body[close + 1..].trim();
    let returns = rest
        .strip_prefix("->")
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(TypeSpec::parse);
    Signature { params, returns }
}

fn opaque(s: &str) -> Signature {
    Signature {
        params: Vec::new(),
        returns: (!s.is_empty()).then(|| TypeSpec::parse(s)),
    }
}

fn param(text: &str) -> Param {
    let (name, ty) = match text.split_once(':') {
        Some((n, t)) => (n.trim(), t.trim()),
        None => (text.trim(), "any"),
    };
    let (name, optional) = match name.strip_suffix('?') {
        Some(n) => (n.trim(), true),
        None => (name, false),
    };
    let (ty, variadic) = match ty.strip_suffix("...") {
        Some(t) => (t.trim(), true),
        None => (ty, false),
    };
    let ty = TypeSpec::parse(ty);
    Param {
        name: name.to_owned(),
        required: !optional && !variadic && !ty.is_optional,
        ty,
        variadic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wit_signatures_split_into_parameters_and_a_return_type() {
        let s = parse("func(a: s32, b: s32) -> s32");
        assert_eq!(s.params.len(), 2);
        assert_eq!(
            (s.params[0].name.as_str(), s.params[0].required),
            ("a", true)
        );
        assert_eq!(s.returns.expect("returns").display, "s32");

        let s = parse(
            "func(rows: list<tuple<string, u32>>, limit: option<u32>) -> result<list<string>, string>",
        );
        assert_eq!(s.params[0].ty.origin.as_deref(), Some("list"));
        assert_eq!(s.params[0].ty.args, ["tuple<string, u32>"]);
        assert!(!s.params[1].required, "option<…> may be left out");
        let r = s.returns.expect("returns");
        assert_eq!(r.origin.as_deref(), Some("result"));
        assert_eq!(r.args, ["list<string>", "string"]);

        assert!(parse("func()").returns.is_none());
        assert!(parse("func()").params.is_empty());
    }

    #[test]
    fn builtin_notation_has_optional_and_variadic_parameters() {
        let s = parse("func(name: string, options?: queue-spec) -> {name, created}");
        assert!(s.params[0].required && !s.params[1].required);
        assert_eq!(s.returns.expect("returns").display, "{name, created}");
        let s = parse("func(values: any...) -> list<any>");
        assert!(s.params[0].variadic && !s.params[0].required);
        assert_eq!(s.params[0].ty.display, "any");
    }

    #[test]
    fn free_text_is_kept_whole() {
        let s = parse("adds numbers");
        assert!(s.params.is_empty());
        assert_eq!(s.returns.expect("kept").display, "adds numbers");
        assert!(parse("").returns.is_none());
        // Unbalanced: kept whole too.
        assert!(parse("func(a: s32").params.is_empty());
    }
}

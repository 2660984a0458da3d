//! `mpreg doctor`: are the toolchains the plugin builds need here, and if not, how to install
//! them. Each check runs the tool the build would run (found the same way: the project's
//! `node_modules/.bin`, then `PATH`) and reads its version.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::scaffold::{COMPONENTIZE_JS, COMPONENTIZE_PY, Lang};

/// One check's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// The language it is for (`None`: every language).
    pub language: Option<&'static str>,
    /// What was checked.
    pub what: &'static str,
    /// Whether it is there and usable.
    pub ok: bool,
    /// What was found (path and version), or why not.
    pub found: String,
    /// How to fix it, when it is not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The first line a command prints (stdout, else stderr), when it runs and succeeds.
fn version_of(program: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new(program).args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let line = String::from_utf8_lossy(&text)
        .lines()
        .next()?
        .trim()
        .to_owned();
    Some(line)
}

/// `tool` in `dir/node_modules/.bin`, then in `search`.
fn locate(dir: &Path, tool: &str, search: &[PathBuf]) -> Option<PathBuf> {
    std::iter::once(dir.join("node_modules").join(".bin"))
        .chain(search.iter().cloned())
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A check of `tool`: found and answering `args` with a version.
fn tool(
    language: Option<&'static str>,
    what: &'static str,
    path: Option<PathBuf>,
    args: &[&str],
    fix: &str,
) -> Check {
    let answer = path.as_ref().map(|p| (p, version_of(p, args)));
    let (ok, found) = match answer {
        Some((p, Some(v))) => (true, format!("{v} ({})", p.display())),
        Some((p, None)) => (false, format!("{} does not run", p.display())),
        None => (false, "not found".into()),
    };
    Check {
        language,
        what,
        ok,
        found,
        fix: (!ok).then(|| fix.to_owned()),
    }
}

/// Every check, for a project in `dir`, with `search` as the program search path (`PATH`).
pub fn checks(dir: &Path, search: &[PathBuf]) -> Vec<Check> {
    let mut out = Vec::new();
    let rust = Some("rust");
    let cargo = locate(dir, "cargo", search);
    out.push(tool(
        rust,
        "cargo",
        cargo,
        &["--version"],
        "install Rust: https://rustup.rs (then: rustup target add wasm32-wasip2)",
    ));
    let target = match locate(dir, "rustup", search) {
        Some(rustup) => {
            let listed = Command::new(&rustup)
                .args(["target", "list", "--installed"])
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
            match listed {
                Some(t) if t.lines().any(|l| l.trim() == "wasm32-wasip2") => {
                    (true, "wasm32-wasip2 installed".to_owned())
                }
                Some(_) => (false, "wasm32-wasip2 not installed".to_owned()),
                None => (false, format!("{} does not answer", rustup.display())),
            }
        }
        None => (false, "rustup not found (cannot tell)".to_owned()),
    };
    out.push(Check {
        language: rust,
        what: "wasm32-wasip2 target",
        ok: target.0,
        found: target.1,
        fix: (!target.0).then(|| "rustup target add wasm32-wasip2".to_owned()),
    });
    let python = Some("python");
    let componentize_py = locate(dir, "componentize-py", search);
    let beside = componentize_py
        .as_ref()
        .and_then(|p| p.parent())
        .map(|bin| bin.join("python3"))
        .filter(|p| p.is_file());
    out.push(tool(
        python,
        "componentize-py",
        componentize_py,
        &["--version"],
        &format!("pip install {COMPONENTIZE_PY} (in a virtualenv whose bin/ is on PATH)"),
    ));
    out.push(tool(
        python,
        "python3 (reads type hints)",
        beside.or_else(|| locate(dir, "python3", search)),
        &["--version"],
        "install Python 3.9 or later",
    ));
    let js = Some("js");
    out.push(tool(
        js,
        "node",
        locate(dir, "node", search),
        &["--version"],
        "install Node.js 18 or later (https://nodejs.org, or the system's nodejs package)",
    ));
    out.push(tool(
        js,
        "npm",
        locate(dir, "npm", search),
        &["--version"],
        "install npm (it comes with Node.js)",
    ));
    let componentize_js = locate(dir, "componentize-js", search);
    let mut check = tool(
        js,
        "componentize-js",
        componentize_js,
        &["--version"],
        &format!(
            "npm install {COMPONENTIZE_JS} in the project (a JS project's first build does it)"
        ),
    );
    if !check.ok && check.found == "not found" {
        // Not fatal: a JavaScript project's first build installs it from its package.json.
        check.found = "not found here (a JS project's first build runs npm install)".into();
    }
    out.push(check);
    out
}

/// Whether every check for `lang` (all languages when `None`) passed.
pub fn healthy(checks: &[Check], lang: Option<Lang>) -> bool {
    let name = lang.map(|l| match l {
        Lang::Rust => "rust",
        Lang::Python => "python",
        Lang::Js => "js",
    });
    checks
        .iter()
        .filter(|c| name.is_none() || c.language == name)
        // componentize-js is fetched by the project's own first build.
        .filter(|c| c.what != "componentize-js")
        .all(|c| c.ok)
}

/// The checks as text, one line each with the fix under a failed one.
pub fn render(checks: &[Check]) -> String {
    let mut out = String::new();
    for c in checks {
        let mark = if c.ok { "ok  " } else { "MISS" };
        let lang = c.language.unwrap_or("all");
        out.push_str(&format!("{mark} {lang:<6} {:<28} {}\n", c.what, c.found));
        if let Some(fix) = &c.fix {
            out.push_str(&format!("     {:<6} {:<28} fix: {fix}\n", "", ""));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_search_path_finds_nothing_and_says_how_to_fix_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let checks = checks(dir.path(), &[]);
        assert!(checks.iter().all(|c| !c.ok), "{checks:?}");
        assert!(!healthy(&checks, None));
        assert!(!healthy(&checks, Some(Lang::Python)));
        let text = render(&checks);
        for want in [
            "fix: rustup target add wasm32-wasip2",
            "fix: pip install componentize-py==0.25.0",
            "fix: install Node.js",
        ] {
            assert!(text.contains(want), "{want} missing from:\n{text}");
        }
    }

    #[test]
    fn a_tool_that_answers_is_ok() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let fake = bin.join("node");
        std::fs::write(&fake, "#!/bin/sh\necho v20.0.0\n").expect("write");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let checks = checks(dir.path(), &[bin]);
        let node = checks
            .iter()
            .find(|c| c.what == "node")
            .expect("node check");
        assert!(node.ok && node.found.starts_with("v20.0.0"), "{node:?}");
        assert!(node.fix.is_none());
    }
}

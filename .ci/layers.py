#!/usr/bin/env python3
"""Guard of the module layer rule (docs/architecture.md, "Layers").

Reads every `.rs` file of a crate's `src/`, finds the modules each one names through
`crate::…`, `super::…` and `self::…` paths (in `use` items and inline, groups included,
re-exports followed to the module that defines the name), and fails when

- the modules import each other in a cycle, or
- a module imports from a layer above its own (the layers are listed in `layers.toml`).

Usage: layers.py [--src host/src] [--layers host/layers.toml] [--edges]
Exit 0 when the rule holds, 1 with a report when it does not, 2 on a bad layer file.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def strip_comments_and_strings(text: str) -> str:
    """Blank out comments, string and char literals so paths inside them are not read."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not text[i - 1].isalnum()):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i : j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i : i + 4]):
            m = re.match(r"'(\\.|[^\\'])'", text[i : i + 4])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_tree(text: str, i: int) -> tuple[list[list[str]], int]:
    """Parse a use-tree starting at `i` (after a `crate::`-like prefix); return its paths."""
    i = skip_ws(text, i)
    if i < len(text) and text[i] == "{":
        paths: list[list[str]] = []
        i += 1
        while True:
            i = skip_ws(text, i)
            if i >= len(text) or text[i] == "}":
                return paths, i + 1
            sub, i = parse_tree(text, i)
            paths.extend(sub)
            i = skip_ws(text, i)
            if i < len(text) and text[i] == ",":
                i += 1
    if i < len(text) and text[i] == "*":
        return [["*"]], i + 1
    m = IDENT.match(text, i)
    if not m:
        return [[]], i
    name, i = m.group(0), m.end()
    j = skip_ws(text, i)
    if text.startswith("::", j):
        sub, i = parse_tree(text, j + 2)
        return [[name] + p for p in sub], i
    return [[name]], i


def skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


class Crate:
    def __init__(self, src: Path):
        self.src = src
        self.modules: dict[tuple[str, ...], Path] = {}
        for path in sorted(src.rglob("*.rs")):
            rel = path.relative_to(src).with_suffix("").parts
            if rel in (("main",),):
                continue  # the binary is its own crate; it reaches the library as `mpreg::`
            if rel == ("lib",):
                module: tuple[str, ...] = ()
            elif rel[-1] == "mod":
                module = rel[:-1]
            else:
                module = rel
            self.modules[module] = path
        self.text = {m: strip_comments_and_strings(p.read_text()) for m, p in self.modules.items()}
        self.reexports = {m: self._reexports(m) for m in self.modules}

    def _reexports(self, module: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
        """`pub use …::Name;` items: the name leads on to the module it comes from."""
        found: dict[str, tuple[str, ...]] = {}
        for m in re.finditer(r"\bpub(\([^)]*\))?\s+use\s+", self.text[module]):
            for path in parse_tree(self.text[module], m.end())[0]:
                path = [s for s in path if s != "*"]
                if len(path) < 2:
                    continue
                if path[0] == "crate":
                    base, rest = (), path[1:]
                elif path[0] == "self":
                    base, rest = module, path[1:]
                elif path[0] == "super":
                    base, rest = module[:-1], path[1:]
                elif module + (path[0],) in self.modules:
                    base, rest = module, path
                else:
                    continue  # another crate's item
                if rest:
                    found[rest[-1]] = base + tuple(rest[:-1])
        return found

    def resolve(self, path: list[str]) -> tuple[str, ...]:
        """The module a path (from the crate root) names: its longest module prefix,
        following re-exports of that module's items."""
        current: tuple[str, ...] = ()
        for k, seg in enumerate(path):
            if current + (seg,) in self.modules:
                current = current + (seg,)
            elif seg in self.reexports.get(current, {}):
                target = self.reexports[current][seg]
                return self.resolve(list(target) + path[k:]) if target != current else current
            else:
                break
        return current

    def edges(self) -> dict[tuple[str, ...], dict[tuple[str, ...], int]]:
        """module → {imported module: line of the first mention}."""
        result: dict[tuple[str, ...], dict[tuple[str, ...], int]] = {}
        for module, raw in self.text.items():
            out: dict[tuple[str, ...], int] = {}
            # `pub use` items are the module's face, not its dependencies: a path through one
            # is resolved to the module that defines the name (see `resolve`).
            text = re.sub(r"\bpub(\([^)]*\))?\s+use\s+[^;]*;", lambda m: re.sub(r"[^\n]", " ", m.group(0)), raw)
            for m in re.finditer(r"(?<![A-Za-z0-9_])(crate|super|self)\s*::", text):
                kind = m.group(1)
                if kind == "crate":
                    base: tuple[str, ...] = ()
                elif kind == "super":
                    base = self.parent_scope(module, text, m.start())
                else:
                    base = self.self_scope(module, text, m.start())
                if base is None:
                    continue
                line = text.count("\n", 0, m.start()) + 1
                for path in parse_tree(text, m.end())[0]:
                    path = [s for s in path if s != "*"]
                    while path and path[0] == "super" and base:
                        base, path = base[:-1], path[1:]
                    target = self.resolve(list(base) + path)
                    if target != module and target not in out:
                        out[target] = line
            # A child module named by its bare name (`session::run`, `use registry::Registry`).
            children = {m[-1] for m in self.modules if len(m) == len(module) + 1 and m[:-1] == module}
            for m in re.finditer(r"(?<![A-Za-z0-9_:])([A-Za-z_][A-Za-z0-9_]*)\s*::", text):
                if m.group(1) not in children:
                    continue
                line = text.count("\n", 0, m.start()) + 1
                for path in parse_tree(text, m.start())[0]:
                    target = self.resolve(list(module) + [s for s in path if s != "*"])
                    if target != module and target not in out:
                        out[target] = line
            result[module] = out
        return result

    def inline_depth(self, text: str, pos: int) -> int:
        """How many inline `mod name {` blocks (e.g. `mod tests`) enclose `pos`."""
        depth, stack = 0, []
        for m in re.finditer(r"\bmod\s+[A-Za-z_][A-Za-z0-9_]*\s*\{|\{|\}", text[:pos]):
            tok = m.group(0)
            if tok == "}":
                if stack and stack.pop():
                    depth -= 1
            elif tok == "{":
                stack.append(False)
            else:
                stack.append(True)
                depth += 1
        return depth

    def parent_scope(self, module, text, pos):
        """What `super` names at `pos`: inside an inline `mod tests {}` it is the file itself."""
        if self.inline_depth(text, pos) > 0:
            return module
        return module[:-1] if module else None

    def self_scope(self, module, text, pos):
        return module


def find_cycles(edges) -> list[list[tuple[str, ...]]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict = {}
    low: dict = {}
    stack: list = []
    on_stack: set = set()
    sccs: list = []
    counter = [0]

    def visit(v):
        work = [(v, iter(sorted(edges.get(v, {}))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in edges:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, {})))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == node:
                        break
                if len(comp) > 1:
                    sccs.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return sccs


def cycle_path(edges, comp):
    """One concrete cycle inside a strongly connected component, for the report."""
    members = set(comp)
    start = comp[0]
    prev = {start: None}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(edges.get(v, {})):
            if w == start:
                path = [v]
                while prev[path[-1]] is not None:
                    path.append(prev[path[-1]])
                return list(reversed(path)) + [start]
            if w in members and w not in prev:
                prev[w] = v
                queue.append(w)
    return comp


def name(module: tuple[str, ...]) -> str:
    return "::".join(module) if module else "crate (lib.rs)"


def load_layers(path: Path) -> list[tuple[str, list[str]]]:
    data = tomllib.loads(path.read_text())
    layers = data.get("layer")
    if not isinstance(layers, list) or not layers:
        raise ValueError(f"{path}: expected [[layer]] tables, lowest first")
    out = []
    for layer in layers:
        if not isinstance(layer.get("name"), str) or not isinstance(layer.get("modules"), list):
            raise ValueError(f"{path}: each [[layer]] needs a name and a modules list")
        out.append((layer["name"], [str(m) for m in layer["modules"]]))
    return out


def layer_of(module: tuple[str, ...], layers) -> tuple[int, str] | None:
    """The layer of a module: its longest listed prefix (`cluster` covers `cluster::link`
    unless `cluster::link` is listed itself); `crate` names lib.rs only."""
    best = None
    for rank, (lname, mods) in enumerate(layers):
        for m in mods:
            if m == "crate":  # lib.rs alone, not everything below it
                if module == ():
                    best = (0, rank, lname)
                continue
            parts = tuple(m.split("::"))
            if module[: len(parts)] == parts and (best is None or len(parts) > best[0]):
                best = (len(parts), rank, lname)
    return None if best is None else (best[1], best[2])


def check(src: Path, layers_file: Path, show_edges: bool = False) -> list[str]:
    crate = Crate(src)
    edges = crate.edges()
    layers = load_layers(layers_file)
    problems = []
    if show_edges:
        for module in sorted(edges):
            for target in sorted(edges[module]):
                print(f"{name(module)} -> {name(target)}")
    for comp in find_cycles(edges):
        path = cycle_path(edges, comp)
        steps = []
        for a, b in zip(path, path[1:]):
            steps.append(f"  {name(a)} ({crate.modules[a].relative_to(src)}:{edges[a][b]}) -> {name(b)}")
        problems.append(f"import cycle among {len(comp)} modules: {', '.join(name(c) for c in comp)}\n"
                        + "\n".join(steps))
    for module in sorted(edges):
        mine = layer_of(module, layers)
        if mine is None:
            problems.append(f"{name(module)} ({crate.modules[module].relative_to(src)}) has no layer in {layers_file}")
            continue
        for target, line in sorted(edges[module].items()):
            theirs = layer_of(target, layers)
            if theirs is not None and theirs[0] > mine[0]:
                problems.append(
                    f"{name(module)} ({mine[1]}) imports {name(target)} ({theirs[1]}), a higher layer, "
                    f"at {crate.modules[module].relative_to(src)}:{line}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", default="host/src", type=Path)
    parser.add_argument("--layers", default="host/layers.toml", type=Path)
    parser.add_argument("--edges", action="store_true", help="print every module edge")
    args = parser.parse_args(argv)
    try:
        problems = check(args.src, args.layers, args.edges)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as e:
        print(f"layers: {e}", file=sys.stderr)
        return 2
    for p in problems:
        print(f"layers: {p}")
    if problems:
        print(f"layers: {len(problems)} problem(s); the rule is in docs/architecture.md")
        return 1
    print(f"layers: ok ({args.src})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

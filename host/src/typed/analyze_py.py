"""Reads the signatures of a typed MPREG Python plugin without running it.

Usage: python3 analyze_py.py PROJECT_DIR APP_MODULE  ->  JSON on stdout

The JSON lists the module's public top-level functions with their type hints, the dataclasses
and enums they use, every module the code imports (top-level and inside functions, in the app
and in the project's own modules), and the problems found (file:line: what to change). `mpreg
plugin build` turns it into a WIT world and the glue module componentize-py builds.
"""

import ast
import json
import os
import sys

PRIMS = {"str": "str", "int": "int", "float": "float", "bool": "bool", "bytes": "bytes"}
LISTS = {"list", "List", "Sequence", "Iterable", "Collection", "MutableSequence"}
DICTS = {"dict", "Dict", "Mapping", "MutableMapping"}
TUPLES = {"tuple", "Tuple"}
OPTIONALS = {"Optional"}
UNIONS = {"Union"}
IMPORT_ERRORS = {"ImportError", "ModuleNotFoundError", "Exception", "BaseException"}


class Problems:
    def __init__(self):
        self.items = []

    def add(self, file, node, message):
        self.items.append(f"{file}:{getattr(node, 'lineno', 0)}: {message}")


def name_of(node):
    """`x`, `typing.x` or `t.x` -> `x`; anything else -> None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def type_of(node, file, problems, where):
    """A type hint as MPREG's JSON type tree, or None (a problem was recorded)."""
    if node is None:
        problems.add(file, None, f"{where} needs a type hint")
        return None
    if isinstance(node, ast.Constant) and node.value is None:
        return {"t": "none"}
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        try:
            inner = ast.parse(node.value, mode="eval").body
        except SyntaxError:
            problems.add(file, node, f"{where}: the hint {node.value!r} does not parse")
            return None
        ast.copy_location(inner, node)
        return type_of(inner, file, problems, where)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.BitOr):
        return union([node.left, node.right], node, file, problems, where)
    name = name_of(node)
    if name is not None:
        if name in PRIMS:
            return {"t": PRIMS[name]}
        if name == "None":
            return {"t": "none"}
        if name in {"Any", "object"}:
            problems.add(
                file,
                node,
                f"{where}: '{name}' has no WIT form; name the type (str, int, float, bool, "
                "bytes, list[...], dict[str, ...], tuple[...], Optional[...], a dataclass or "
                "an enum)",
            )
            return None
        if name in LISTS | DICTS | TUPLES:
            problems.add(
                file,
                node,
                f"{where}: '{name}' needs its element types (for example list[str], "
                "dict[str, int])",
            )
            return None
        return {"t": "named", "name": name, "line": node.lineno}
    if isinstance(node, ast.Subscript):
        base = name_of(node.value)
        args = node.slice
        items = list(args.elts) if isinstance(args, ast.Tuple) else [args]
        if base in LISTS and len(items) == 1:
            inner = type_of(items[0], file, problems, where)
            return inner and {"t": "list", "of": inner}
        if base in DICTS and len(items) == 2:
            key = type_of(items[0], file, problems, where)
            value = type_of(items[1], file, problems, where)
            if key is not None and key != {"t": "str"}:
                problems.add(file, node, f"{where}: dictionary keys must be str (JSON objects)")
                return None
            return value and {"t": "dict", "value": value}
        if base in TUPLES:
            if len(items) == 2 and isinstance(items[1], ast.Constant) and items[1].value is ...:
                inner = type_of(items[0], file, problems, where)
                return inner and {"t": "list", "of": inner}
            types = [type_of(i, file, problems, where) for i in items]
            return None if None in types else {"t": "tuple", "items": types}
        if base in OPTIONALS and len(items) == 1:
            inner = type_of(items[0], file, problems, where)
            return inner and {"t": "option", "of": inner}
        if base in UNIONS:
            return union(items, node, file, problems, where)
    problems.add(file, node, f"{where}: this type hint has no WIT form")
    return None


def union(items, node, file, problems, where):
    none = [i for i in items if type_of_quiet(i) == {"t": "none"}]
    rest = [i for i in items if i not in none]
    if len(none) == 1 and len(rest) == 1:
        inner = type_of(rest[0], file, problems, where)
        return inner and {"t": "option", "of": inner}
    problems.add(file, node, f"{where}: only `X | None` unions have a WIT form (use a dataclass)")
    return None


def type_of_quiet(node):
    return type_of(node, "", Problems(), "")


def decorated_dataclass(cls):
    for d in cls.decorator_list:
        target = d.func if isinstance(d, ast.Call) else d
        if name_of(target) == "dataclass":
            return True
    return False


def is_enum(cls):
    return any(name_of(b) in {"Enum", "IntEnum", "StrEnum"} for b in cls.bases)


def first_doc_line(node):
    doc = ast.get_docstring(node)
    return doc.strip().splitlines()[0] if doc and doc.strip() else None


def signatures(tree, file, problems):
    records, enums, functions = [], [], []
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and decorated_dataclass(node):
            fields = []
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                    if name_of(stmt.annotation) == "ClassVar" or (
                        isinstance(stmt.annotation, ast.Subscript)
                        and name_of(stmt.annotation.value) == "ClassVar"
                    ):
                        continue
                    where = f"field '{stmt.target.id}' of {node.name}"
                    ty = type_of(stmt.annotation, file, problems, where)
                    if ty is not None:
                        fields.append([stmt.target.id, ty])
            records.append({"name": node.name, "fields": fields, "line": node.lineno})
        elif isinstance(node, ast.ClassDef) and is_enum(node):
            cases = []
            for stmt in node.body:
                if isinstance(stmt, ast.Assign):
                    cases += [t.id for t in stmt.targets if isinstance(t, ast.Name)]
            enums.append({"name": node.name, "cases": cases, "line": node.lineno})
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if node.name.startswith("_"):
                continue
            if isinstance(node, ast.AsyncFunctionDef):
                problems.add(file, node, f"{node.name}: async functions cannot be exported")
                continue
            a = node.args
            if a.vararg or a.kwarg or a.kwonlyargs:
                problems.add(
                    file,
                    node,
                    f"{node.name}: *args, **kwargs and keyword-only parameters have no WIT "
                    "form (name each parameter, or start the name with _ to keep it private)",
                )
                continue
            params = []
            for p in a.posonlyargs + a.args:
                where = f"parameter '{p.arg}' of {node.name}"
                if p.annotation is None:
                    problems.add(file, p, f"{where} needs a type hint")
                    continue
                ty = type_of(p.annotation, file, problems, where)
                if ty is not None:
                    params.append([p.arg, ty])
            if node.returns is None:
                problems.add(
                    file, node, f"{node.name} needs a return type hint (-> None if it returns nothing)"
                )
                continue
            returns = type_of(node.returns, file, problems, f"the return type of {node.name}")
            if returns is None:
                continue
            functions.append(
                {
                    "name": node.name,
                    "params": params,
                    "returns": returns,
                    "doc": first_doc_line(node),
                    "line": node.lineno,
                }
            )
    return records, enums, functions


def guarded(node, parents):
    """Whether `node` sits in a `try` whose handlers catch an import failure."""
    child = node
    p = parents.get(id(node))
    while p is not None:
        if isinstance(p, ast.Try) and child in p.body:
            for h in p.handlers:
                names = []
                if h.type is None:
                    return True
                if isinstance(h.type, ast.Tuple):
                    names = [name_of(e) for e in h.type.elts]
                else:
                    names = [name_of(h.type)]
                if IMPORT_ERRORS.intersection(n for n in names if n):
                    return True
        child = p
        p = parents.get(id(p))
    return False


def imports(tree, file):
    parents = {}
    for p in ast.walk(tree):
        for c in ast.iter_child_nodes(p):
            parents[id(c)] = p
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and name_of(node.func) in {"import_module", "__import__"}
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        for n in names:
            found.append(
                {
                    "module": n,
                    "at": f"{file}:{node.lineno}",
                    "optional": guarded(node, parents),
                    "lazy": parents.get(id(node)) is not tree,
                }
            )
    return found


def local_file(root, module):
    base = os.path.join(root, *module.split("."))
    for candidate in (base + ".py", os.path.join(base, "__init__.py")):
        if os.path.isfile(candidate):
            return candidate
    return None


def main():
    root, app = sys.argv[1], sys.argv[2]
    problems = Problems()
    path = os.path.join(root, app + ".py")
    with open(path, encoding="utf-8") as f:
        source = f.read()
    rel = os.path.basename(path)
    try:
        tree = ast.parse(source, filename=rel)
    except SyntaxError as e:
        print(json.dumps({"problems": [f"{rel}:{e.lineno}: {e.msg}"]}))
        return
    records, enums, functions = signatures(tree, rel, problems)
    found = imports(tree, rel)
    # The project's own modules: their imports are bundled too (not their signatures).
    seen = {app}
    queue = [i["module"] for i in found]
    local = []
    while queue:
        module = queue.pop()
        top = module.split(".")[0]
        file = local_file(root, module) or local_file(root, top)
        if file is None or module in seen:
            continue
        seen.add(module)
        local.append(module)
        try:
            with open(file, encoding="utf-8") as f:
                sub = ast.parse(f.read(), filename=os.path.relpath(file, root))
        except SyntaxError as e:
            problems.add(os.path.relpath(file, root), e, e.msg)
            continue
        more = imports(sub, os.path.relpath(file, root))
        found += more
        queue += [i["module"] for i in more]
    print(
        json.dumps(
            {
                "functions": functions,
                "records": records,
                "enums": enums,
                "imports": found,
                "local": local,
                "problems": problems.items,
            }
        )
    )


if __name__ == "__main__":
    main()

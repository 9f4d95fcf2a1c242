#!/usr/bin/env python3
"""The package's structure as a newcomer meets it: modules per directory, the longest modules,
import arrows, cycles, upward imports, shims and private names imported across modules.

    python benchmarks/structure.py                 # the table for the working tree
    python benchmarks/structure.py --root OTHER    # another checkout (e.g. before a change)

Every import counts, including those inside functions. Definitions:
- import arrow: one (importer module -> imported module) pair inside ``speakerid``;
- cycle: a strongly connected group of two or more modules in that graph;
- upward import: a module importing one of a higher layer (:data:`LAYERS`, the order of
  ``docs/ARCHITECTURE.md``'s "Imports point one way");
- shim use: ``from speakerid.m import name`` (in the package, tests, benchmarks, recipes) where
  ``m`` is a module (not a package ``__init__``) that does not define ``name`` but imports it;
- private import: ``from speakerid.m import _name`` from another module.
"""
from __future__ import annotations

import argparse
import ast
from collections import defaultdict
from pathlib import Path

# Lower index = lower layer; a module may import its own layer or lower ones. The first
# matching prefix decides (a module path relative to the package, dotted).
LAYERS: list[tuple[str, ...]] = [
    ("limits", "yaml_safe", "fileio", "transactions", "checkpoint", "distributed", "pretrained"),
    ("config", "audio", "features", "augment", "data", "models", "losses", "scoring"),
    ("experiment", "extractor", "encoder_runtime", "inference"),
    ("train", "extract", "enroll", "export", "interop", "serve", "keys"),
    ("cli", "__main__", "__init__"),
]


# module names of the flat layout before issue 16 (so the "before" table can be made)
OLD_NAMES = {1: ("vad", "frontend_choices"), 2: ("backends",), 3: ("schedule", "dev_eval")}


def layer_of(mod: str) -> int:
    head = mod.split(".")[1] if "." in mod else "__init__"
    for i, names in enumerate(LAYERS):
        if any(head == n or head.startswith(n + "_") for n in names) or head in OLD_NAMES.get(i, ()):
            return i
    raise SystemExit(f"structure.py: module {mod} has no layer in LAYERS; add it")


def module_name(path: Path, root: Path) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def resolve(node: ast.ImportFrom, mod: str, is_pkg: bool) -> str:
    if node.level == 0:
        return node.module or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def defined_names(tree: ast.Module) -> set[str]:
    out: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                for n in ast.walk(t):
                    if isinstance(n, ast.Name):
                        out.add(n.id)
        elif isinstance(node, (ast.If, ast.Try)):
            out |= defined_names(ast.Module(body=node.body, type_ignores=[]))
    return out


def scan(root: Path) -> dict:
    pkg = root / "speakerid"
    files = sorted(p for p in pkg.rglob("*.py") if "__pycache__" not in p.parts)
    trees = {module_name(p, root): (p, ast.parse(p.read_text())) for p in files}
    modules = set(trees)
    packages = {m for m, (p, _) in trees.items() if p.name == "__init__.py"}
    defs = {m: defined_names(t) for m, (p, t) in trees.items()}
    arrows: set[tuple[str, str]] = set()
    for m, (p, tree) in trees.items():
        for node in ast.walk(tree):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = resolve(node, m, m in packages)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for t in targets:
                if t in modules and t != m and t.startswith("speakerid"):
                    arrows.add((m, t))
    # users of the package: the package itself, tests, benchmarks, recipes, data_prep
    shim_uses: list[str] = []
    private: list[str] = []
    users = [p for d in ("speakerid", "tests", "benchmarks", "recipes", "data_prep") if (root / d).is_dir()
             for p in sorted((root / d).rglob("*.py")) if "__pycache__" not in p.parts]
    for p in users:
        me = module_name(p, root) if p.is_relative_to(pkg) else str(p.relative_to(root))
        for node in ast.walk(ast.parse(p.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            src = resolve(node, me, p.name == "__init__.py") if node.level else (node.module or "")
            if src not in modules:
                continue
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__") and src != me:
                    private.append(f"{p.relative_to(root)}: {src}.{a.name}")
                if (src not in packages and a.name not in defs[src] and f"{src}.{a.name}" not in modules
                        and a.name != "*"):
                    shim_uses.append(f"{p.relative_to(root)}: {src}.{a.name}")
    return {"trees": trees, "arrows": arrows, "shims": shim_uses, "private": private, "packages": packages}


def cycles(arrows: set[tuple[str, str]]) -> list[list[str]]:
    graph: dict[str, list[str]] = defaultdict(list)
    for a, b in arrows:
        graph[a].append(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted({x for e in arrows for x in e}):
        if v not in index:
            visit(v)
    return out


def report(root: Path) -> str:
    s = scan(root)
    per_dir: dict[str, int] = defaultdict(int)
    lengths = []
    for m, (p, _) in s["trees"].items():
        per_dir[str(p.parent.relative_to(root))] += 1
        lengths.append((len(p.read_text().splitlines()), str(p.relative_to(root))))
    lengths.sort(reverse=True)
    ups = [f"{a} -> {b}" for a, b in sorted(s["arrows"]) if layer_of(b) > layer_of(a)
           and not (a.startswith(b + ".") or b == "speakerid")]
    lines = [f"# structure of {root.name}", "", "| directory | modules |", "|---|---|"]
    lines += [f"| {d} | {n} |" for d, n in sorted(per_dir.items())]
    lines += ["", f"modules: {len(s['trees'])}; import arrows: {len(s['arrows'])}; "
              f"cycles: {len(cycles(s['arrows']))}; upward imports: {len(ups)}; "
              f"shim uses: {len(s['shims'])}; private names imported across modules: {len(s['private'])}",
              "", "longest modules: " + ", ".join(f"{p} {n}" for n, p in lengths[:5])]
    for title, items in (("cycles", [" <-> ".join(c) for c in cycles(s["arrows"])]), ("upward imports", ups),
                         ("shim uses", s["shims"]), ("private imports", s["private"])):
        if items:
            lines += ["", f"{title}:"] + [f"- {i}" for i in items]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    print(report(ap.parse_args().root.resolve()), end="")


if __name__ == "__main__":
    main()

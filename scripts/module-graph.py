#!/usr/bin/env python3
"""Import cycles between the modules of a Rust crate.

Usage: scripts/module-graph.py [--edges] CRATE_SRC_DIR [CRATE_SRC_DIR ...]
       (default: crates/bucky-cli/src crates/whisper/src)

Every file under the source directory is a module (`lib.rs`/`main.rs` the crate root, `a/mod.rs` and `a.rs`
module `a`, `a/b.rs` module `a::b`). A module depends on another when its code names it or an item in it:
`use crate::…`, `use super::…`, `use self::…`, an inline `crate::a::f()`, or a path starting with one of its
own child modules. A name re-exported with `pub use` (the crate root's `pub use error::UsageError`) counts as
a use of the module that defines it. `mod x;` declarations are not dependencies, nor is test code (`#[cfg(test)]
mod …` blocks) or comments.

Prints every strongly connected group of more than one module (a cycle: each of them uses the others, directly
or not), with the edges that make it, and exits 1 if there is any; exits 0 and prints nothing otherwise. With
--edges, prints the whole graph first.
"""

import os
import re
import sys
from collections import defaultdict

ROOT = "crate"


def module_of(src, path):
    rel = os.path.relpath(path, src)[: -len(".rs")].split(os.sep)
    if rel in (["lib"], ["main"]):
        return ROOT
    if rel[-1] == "mod":
        rel = rel[:-1]
    return "::".join(rel)


def strip_comments_and_tests(text):
    """The code without comments, string literals' contents, and `#[cfg(test)]` items."""
    out = []
    i, n = 0, len(text)
    while i < n:
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
        elif text[i] == '"' and not re.match(r"[\w']", text[i - 1 : i] or " "):
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append('""')
            i = j + 1
        elif text.startswith("r#", i) or text.startswith('r"', i):
            m = re.match(r'r(#*)"', text[i:])
            if not m:
                out.append(text[i])
                i += 1
                continue
            end = '"' + m.group(1)
            j = text.find(end, i + len(m.group(0)))
            out.append('""')
            i = n if j < 0 else j + len(end)
        else:
            out.append(text[i])
            i += 1
    code = "".join(out)
    # Drop `#[cfg(test)]` items: the attribute, then the item up to its matching closing brace (or `;`).
    while True:
        m = re.search(r"#\[cfg\(test\)\]", code)
        if not m:
            return code
        j = m.end()
        while j < len(code) and code[j] not in "{;":
            j += 1
        if j < len(code) and code[j] == "{":
            depth = 0
            while j < len(code):
                depth += {"{": 1, "}": -1}.get(code[j], 0)
                j += 1
                if depth == 0:
                    break
        else:
            j += 1
        code = code[: m.start()] + code[j:]


def use_paths(tree, prefix=""):
    """The full paths of a `use` tree: `a::{b, c::{d, e as f}, self}` → a::b, a::c::d, a::c::e, a."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)  # renames do not change what is used
    tree = re.sub(r"\s+", "", tree)
    m = re.match(r"^((?:\w+::)*)\{(.*)\}$", tree)
    if not m:
        path = prefix + tree
        return [path[: -len("::self")] if path.endswith("::self") else path]
    head, body = m.group(1), m.group(2)
    paths, depth, start = [], 0, 0
    for i, ch in enumerate(body + ","):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "," and depth == 0:
            if body[start:i]:
                paths += use_paths(body[start:i], prefix + head)
            start = i + 1
    return paths


def resolve(module, path, modules):
    """The module a path names (its longest module prefix), from inside `module`; None if outside the crate."""
    parts = [p for p in path.split("::") if p]
    if not parts:
        return None
    if parts[0] == "crate":
        base, parts = [], parts[1:]
    elif parts[0] in ("super", "self"):
        base = [] if module == ROOT else module.split("::")
        while parts and parts[0] in ("super", "self"):
            if parts[0] == "super":
                base = base[:-1]
            parts = parts[1:]
    else:
        own = [] if module == ROOT else module.split("::")
        if "::".join(own + parts[:1]) in modules:
            base = own  # a child module
        else:
            return None  # an external crate, or a name imported into scope
    found, rest = (ROOT if not base else "::".join(base)), parts
    for i in range(len(parts)):
        candidate = "::".join(base + parts[: i + 1])
        if candidate in modules:
            found, rest = candidate, parts[i + 1 :]
    return found, rest


def analyse(src):
    files = {}
    for dirpath, _, names in os.walk(src):
        for name in names:
            if name.endswith(".rs"):
                path = os.path.join(dirpath, name)
                files[module_of(src, path)] = path
    modules = set(files)
    code = {m: strip_comments_and_tests(open(p, encoding="utf-8").read()) for m, p in files.items()}
    raw = defaultdict(list)  # module -> [(path, is_pub_use)]
    for module, text in code.items():
        for m in re.finditer(r"\b(pub(?:\([\w:]+\))?\s+)?use\s+([^;]+);", text):
            for path in use_paths(m.group(2)):
                raw[module].append((path, bool(m.group(1))))
        without_uses = re.sub(r"\buse\s+[^;]+;", "", text)
        for m in re.finditer(r"(?<![\w:])((?:crate|super|self|[a-z_]\w*)(?:::\w+)+)", without_uses):
            raw[module].append((m.group(1), False))
    # Re-exports: (module, name) -> the module that defines it.
    reexports = {}
    for module, paths in raw.items():
        for path, public in paths:
            target = resolve(module, path, modules)
            if public and target and target[1]:
                reexports[(module, target[1][-1])] = target[0]

    def follow(target):
        module, rest = target
        seen = set()
        while rest and (module, rest[0]) in reexports and (module, rest[0]) not in seen:
            seen.add((module, rest[0]))
            module = reexports[(module, rest[0])]
        return module

    edges = defaultdict(set)
    for module, paths in raw.items():
        for path, _ in paths:
            target = resolve(module, path, modules)
            if target:
                to = follow(target)
                if to != module:
                    edges[module].add(to)
    return modules, edges


def strongly_connected(modules, edges):
    index, low, on_stack, stack, groups = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            groups.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(modules):
        if v not in index:
            visit(v)
    return [g for g in groups if len(g) > 1]


def main(argv):
    show_edges = "--edges" in argv
    dirs = [a for a in argv if a != "--edges"] or ["crates/bucky-cli/src", "crates/whisper/src"]
    cycles = 0
    for src in dirs:
        modules, edges = analyse(src)
        if show_edges:
            for module in sorted(modules):
                print(f"{src}: {module} -> {', '.join(sorted(edges.get(module, ()))) or '-'}")
        for group in strongly_connected(modules, edges):
            cycles += 1
            members = set(group)
            print(f"{src}: cycle among {len(group)} modules: {', '.join(group)}")
            for module in group:
                inside = sorted(edges.get(module, set()) & members)
                print(f"    {module} -> {', '.join(inside)}")
    return 1 if cycles else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

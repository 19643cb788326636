#!/usr/bin/env python3
"""Fails when qi's top-level modules import each other in a cycle.

Each top-level module of qi/src (a file `x.rs` or a folder `x/`) depends on another when any of
its files names it: `crate::other…`, `crate::{…, other…}`, or an item the crate root re-exports
from it (`crate::HookedTransformer` is `models`). Doc comments and tests (`#[cfg(test)]` modules
at the end of a file) do not count: they are not the library's structure. Prints every cycle
(strongly connected component of more than one module) with one import line per edge, so the
fix is visible, and exits 1; exits 0 when the module graph is acyclic.

Usage: python3 scripts/check_module_cycles.py [qi/src]
"""
from __future__ import annotations

import re
import sys
from pathlib import Path


def strip(text: str) -> str:
    """The code of a file without comments and without its trailing `#[cfg(test)] mod tests`."""
    cut = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod tests", text, re.M)
    if cut:
        text = text[: cut.start()]
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//")[0] if "//" in line and '"' not in line.split("//")[0] else line for line in text.splitlines() if not line.lstrip().startswith("//"))


def brace_items(text: str, start: int) -> str:
    """The text of the balanced `{…}` that opens at `start`."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + 1 : i]
    return text[start + 1 :]


def main() -> int:
    src = Path(sys.argv[1] if len(sys.argv) > 1 else "qi/src")
    lib = (src / "lib.rs").read_text()
    modules = re.findall(r"^pub mod (\w+);", lib, re.M) + re.findall(r"^mod (\w+);", lib, re.M)
    # names re-exported at the root: `pub use module::{A, B}` / `pub use module::A`
    reexport = {}
    for m, items in re.findall(r"^pub use (\w+)::\{([^}]*)\};", lib, re.M):
        for it in items.split(","):
            reexport[it.strip().split(" as ")[-1]] = m
    for m, it in re.findall(r"^pub use (\w+)::(\w+);", lib, re.M):
        reexport[it] = m

    def refs(path_text: str) -> set[str]:
        """Top-level modules named by the paths in `crate::…` text."""
        out = set()
        head = re.match(r"\s*(\w+)", path_text)
        if head:
            name = head.group(1)
            if name in modules:
                out.add(name)
            elif name in reexport:
                out.add(reexport[name])
        return out

    edges: dict[str, dict[str, str]] = {m: {} for m in modules}
    for m in modules:
        files = [src / f"{m}.rs"] if (src / f"{m}.rs").exists() else sorted((src / m).rglob("*.rs"))
        for f in files:
            code = strip(f.read_text())
            for match in re.finditer(r"crate::", code):
                rest = code[match.end() :]
                found = set()
                if rest.startswith("{"):
                    inner = brace_items(code, match.end())
                    for part in re.split(r",(?![^{]*\})", inner):
                        found |= refs(part)
                else:
                    found = refs(rest)
                line = code[: match.start()].count("\n")
                text = code.splitlines()[line].strip() if line < len(code.splitlines()) else ""
                for d in found - {m}:
                    edges[m].setdefault(d, f"{f.relative_to(src.parent)}: {text[:110]}")

    # strongly connected components (Tarjan)
    index, low, on, stack, sccs, counter = {}, {}, set(), [], [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
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
            sccs.append(comp)

    sys.setrecursionlimit(10000)
    for v in modules:
        if v not in index:
            visit(v)
    cycles = [sorted(c) for c in sccs if len(c) > 1]
    if not cycles:
        print(f"module graph of {src}: {len(modules)} modules, no import cycle")
        return 0
    for c in cycles:
        print(f"import cycle among: {', '.join(c)}")
        for a in c:
            for b, where in sorted(edges[a].items()):
                if b in c:
                    print(f"  {a} -> {b}   ({where})")
    return 1


if __name__ == "__main__":
    sys.exit(main())

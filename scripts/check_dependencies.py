#!/usr/bin/env python3
"""Where store and broker code may live (make test; ARCHITECTURE.md "One home per store").

1. No service crate (gateway, pre-transformer, post-transformer, consumer-api, services, cli) depends on
   rdkafka, redis or deadpool-redis: the clients, commands and scripts live in `adapters`
   (`adapters::kafka`, `adapters::store`), services keep only their decisions. Both its
   Cargo.toml and its sources are read (`rdkafka::`, `redis::`, `deadpool_redis` in code).
   REMAINING lists what is not moved yet, with why; it may only shrink: an entry no longer needed
   fails too, so that it is taken out.
2. Inside `adapters`, the modules' imports point one way: no cycle among them (`crate::x` uses,
   comments aside; `stage` and `store` count as one module each).

Prints each check and "N passed, M failed"; exits non-zero on a failure.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVICES = ["gateway", "pre-transformer", "post-transformer", "consumer-api", "services", "cli"]
FORBIDDEN = {"rdkafka": "rdkafka::", "redis": "redis::", "deadpool-redis": "deadpool_redis"}

# What is not moved yet, with why: (crate, dependency) -> reason. Empty: every service crate
# reaches Kafka and Redis only through adapters.
REMAINING: dict[tuple[str, str], str] = {}


def dependencies(crate: str) -> set[str]:
    manifest = tomllib.loads((ROOT / "crates" / crate / "Cargo.toml").read_text())
    names = set()
    for table in ("dependencies", "build-dependencies"):
        names.update(manifest.get(table, {}))
    for target in manifest.get("target", {}).values():
        names.update(target.get("dependencies", {}))
    return names


def uses_in_code(crate: str, needle: str) -> list[str]:
    hits = []
    for path in sorted((ROOT / "crates" / crate / "src").rglob("*.rs")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("//", 1)[0]
            if re.search(r"(?<![\w:])" + re.escape(needle), code):
                hits.append(f"{path.relative_to(ROOT)}:{number}")
    return hits


def adapter_modules() -> dict[str, set[str]]:
    src = ROOT / "crates" / "adapters" / "src"
    names = {p.stem for p in src.glob("*.rs") if p.stem != "lib"} | {p.name for p in src.iterdir() if p.is_dir()}
    graph: dict[str, set[str]] = {n: set() for n in names}
    for path in list(src.glob("*.rs")) + list(src.glob("*/*.rs")):
        module = path.stem if path.parent == src else path.parent.name
        if module == "lib":
            continue
        code = "\n".join(line.split("//", 1)[0] for line in path.read_text().splitlines())
        graph[module].update(m for m in re.findall(r"\bcrate::(\w+)", code) if m in names and m != module)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, on_stack, stack, out = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    passed, failed = 0, 0

    def check(name: str, ok: bool, detail: str = "") -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
            print(f"ok    {name}")
        else:
            failed += 1
            print(f"FAIL  {name}" + (f"\n      {detail}" if detail else ""))

    for crate in SERVICES:
        deps = dependencies(crate)
        for dep, needle in FORBIDDEN.items():
            code = uses_in_code(crate, needle)
            direct = dep in deps or bool(code)
            remaining = REMAINING.get((crate, dep))
            if remaining:
                check(f"{crate} still uses {dep} (not moved yet: {remaining})", direct,
                      "it no longer does: take the entry out of REMAINING in scripts/check_dependencies.py")
            else:
                where = ([f"Cargo.toml lists {dep}"] if dep in deps else []) + code[:5]
                check(f"{crate} does not use {dep} directly", not direct,
                      "; ".join(where) + f" — move it into adapters (adapters::kafka, adapters::store)")
    graph = adapter_modules()
    found = cycles(graph)
    check(f"adapters: the imports of its {len(graph)} modules point one way (no cycle)", not found,
          "; ".join(" <-> ".join(c) for c in found))
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

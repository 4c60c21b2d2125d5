"""The shape of src/ read from its source (issue 30): no import cycles between modules, counting imports inside
functions too; no private name imported from another module; the core (modeling, processing, generation, pipelines,
conversion) never imports or names the tiny world, whose stages import only earlier stages."""

from __future__ import annotations

import ast
import re
from pathlib import Path

SRC = Path(__file__).parents[1] / "src"
CORE = ("modeling", "processing", "generation", "pipelines", "conversion")


def _modules() -> dict[str, tuple[Path, list[str]]]:
    """Dotted module name -> (file, the package its relative imports start from)."""
    found = {}
    for path in sorted(SRC.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
            package = parts
        else:
            package = parts[:-1]
        found[".".join(parts)] = (path, package)
    return found


def _imports(modules) -> list[tuple[str, str, str, int]]:
    """(importer, imported module, imported name or "", line) for every import of one of our modules, at any depth."""
    edges = []
    for name, (path, package) in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package[: len(package) - node.level + 1] if node.level else []
                target = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                for alias in node.names:
                    submodule = f"{target}.{alias.name}"
                    if submodule in modules:  # `from . import cli_train`
                        edges.append((name, submodule, "", node.lineno))
                    elif target in modules:
                        edges.append((name, target, alias.name, node.lineno))
            elif isinstance(node, ast.Import):
                edges.extend((name, alias.name, "", node.lineno) for alias in node.names if alias.name in modules)
    return [edge for edge in edges if edge[0] != edge[1]]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle():  # the check below would pass vacuously with a broken finder
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {name: set() for name in modules}
    for importer, imported, _, _ in _imports(modules):
        graph[importer].add(imported)
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the walk saw the package
    assert _cycles(graph) == []


def test_no_private_name_crosses_a_module_border():
    crossing = [f"{importer}:{line} takes {name} from {imported}" for importer, imported, name, line in _imports(_modules())
                if name.startswith("_") and not name.startswith("__")]  # fmt: skip
    assert crossing == []


def test_core_knows_nothing_of_the_tiny_world():
    mentions = []
    for part in CORE:
        for path in sorted((SRC / "emu3_hf" / part).rglob("*.py")):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if re.search(r"tiny[ _-]world|EMU3_TINY", line, re.IGNORECASE):
                    mentions.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert mentions == []


def test_tiny_world_stages_import_only_earlier_stages():
    order = ["emu3_hf.tiny_world.vq_stages", "emu3_hf.tiny_world.canonical", "emu3_hf.tiny_world.recipe"]
    later = {stage: set(order[i + 1 :]) for i, stage in enumerate(order)}
    wrong = [(a, b) for a, b, _, _ in _imports(_modules()) if a in later and b in later[a]]
    assert wrong == []

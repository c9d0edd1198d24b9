"""Import rules: the planning layer (what Snakemake imports to parse the workflow) loads no torch,
transformers, peft or sacrebleu; and the package's modules import each other without a circle
(module-level and function-level imports alike, so a layer never reaches back up)."""
import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import REPO

HEAVY = ("torch", "transformers", "peft", "sacrebleu")


def test_planning_imports_no_heavy_package():
    code = f"""
import json, sys, yaml
import peftgrid.plan, peftgrid.plan.specs
from peftgrid.plan import build_run_table, validate_config
config = validate_config(yaml.safe_load(open({str(REPO / 'configs' / 'cpu_small.yaml')!r})))
cells = build_run_table(config)
spec = peftgrid.plan.specs.train_spec(config, cells[0])
print(json.dumps({{"cells": len(cells), "kind": spec.hparams["kind"],
                   "loaded": sorted(m for m in {list(HEAVY)!r} if m in sys.modules)}}))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["cells"] > 10  # the config really was validated and expanded
    assert result["loaded"] == [], f"the planning layer imports {result['loaded']}"


def test_the_heavy_check_sees_a_heavy_import():
    """Control for the test above: the same probe reports torch when something imports it."""
    code = f"import sys, peftgrid.engine.batching; print(sorted(m for m in {list(HEAVY)!r} if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "torch" in proc.stdout


# --------------------------------------------------------------------------- the module graph

def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph(root: Path) -> dict[str, set[str]]:
    """module -> the package modules it imports (at any depth of its code)."""
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    graph = {}
    for name, path in files.items():
        is_package = path.name == "__init__.py"
        here = name if is_package else name.rpartition(".")[0]
        edges = set()

        def add(target: str) -> None:
            if target in files:
                edges.add(target)
            elif target.startswith(root.name + ".") or target == root.name:
                raise AssertionError(f"{path}: imports {target}, which is no module of {root.name}")

        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == root.name:
                        add(alias.name)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = here.split(".")
                    if node.level > 1:
                        base = base[: -(node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                elif node.module and node.module.split(".")[0] == root.name:
                    target = node.module
                else:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in files:  # `from . import plots`: the submodule
                        add(sub)
                    else:             # `from ..methods import X`: the package (its __init__)
                        add(target)
        edges.discard(name)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_import_graph_resolves_relative_imports():
    graph = import_graph(REPO / "peftgrid")
    assert "peftgrid.methods" in graph["peftgrid.plan.config"]        # from ..methods import PRESETS, ...
    assert "peftgrid.plan.config" in graph["peftgrid.plan.runs"]       # from .config import canonical
    assert "peftgrid.plan.specs" in graph["peftgrid.jobs.train"]       # from ..plan.specs import TrainSpec
    assert "peftgrid.tasks" in graph["peftgrid.plan.specs"]            # the import at the bottom of the module
    assert "peftgrid.plan" not in graph["peftgrid.plan.config"]
    assert sum(len(e) for e in graph.values()) > 50


def test_from_dot_import_a_submodule_is_that_submodule(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "report").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "report" / "__init__.py").write_text("")
    (pkg / "report" / "plots.py").write_text("X = 1\n")
    (pkg / "report" / "tables.py").write_text("from . import plots\nfrom .. import report\n"
                                              "def f():\n    import pkg.report.plots\n")
    graph = import_graph(pkg)
    assert graph["pkg.report.tables"] == {"pkg.report.plots", "pkg.report"}


def test_the_package_has_no_import_circle():
    graph = import_graph(REPO / "peftgrid")
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle)


def test_a_function_level_circle_is_found(tmp_path):
    """Control: the real package with one function-level import from the plan layer back into
    the jobs layer (which imports the plan) is reported, circle named."""
    root = tmp_path / "peftgrid"
    shutil.copytree(REPO / "peftgrid", root, ignore=shutil.ignore_patterns("__pycache__"))
    runs = root / "plan" / "runs.py"
    runs.write_text(runs.read_text() + "\n\ndef _train(*a):\n    from ..jobs.train import train_cell\n"
                                       "    return train_cell(*a)\n")
    cycle = find_cycle(import_graph(root))
    assert cycle is not None and cycle[0] == cycle[-1]
    assert "peftgrid.plan.runs" in cycle and "peftgrid.jobs.train" in cycle

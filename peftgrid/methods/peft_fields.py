"""The fields of peft's own config dataclasses, read from peft's source without importing it.

The config check runs when Snakemake parses the workflow, where importing peft (and with it
torch) would cost seconds on every parse and every cluster job. peft declares each method as
`register_peft_method(name=..., config_cls=...)` in `peft/tuners/<method>/__init__.py` and its
config as a `@dataclass`; this module reads those declarations with `ast`, so the allowed keys
are always exactly those of the installed peft (no hand-kept list), and `PeftConfig(**fields)`
still validates the values when the training job builds the adapter.
"""
from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

# Bookkeeping fields peftgrid sets itself (task_type from the task, peft_type from the preset);
# a user setting them would contradict the task or the method.
RESERVED = {"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path", "revision",
            "inference_mode"}


def _peft_root() -> Path:
    spec = importlib.util.find_spec("peft")
    if spec is None or spec.origin is None:
        raise ImportError("peft is not installed (pip install peft)")
    return Path(spec.origin).parent


def _classes(path: Path) -> dict[str, tuple[list[str], list[str]]]:
    """class name -> (base class names, annotated field names) of every class in a file."""
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.ClassDef):
            bases = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
            fields = [s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)]
            out[node.name] = (bases, fields)
    return out


def _registrations(init: Path) -> list[tuple[str, str]]:
    """(method name, config class name) of each register_peft_method(...) call in a file."""
    found = []
    for node in ast.walk(ast.parse(init.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "register_peft_method":
            kw = {k.arg: k.value for k in node.keywords}
            if isinstance(kw.get("name"), ast.Constant) and isinstance(kw.get("config_cls"), ast.Name):
                found.append((kw["name"].value, kw["config_cls"].id))
    return found


@functools.lru_cache(maxsize=1)
def peft_config_fields() -> dict[str, tuple[str, frozenset[str]]]:
    """PEFT type (e.g. 'LORA', 'P_TUNING') -> (config class name, its dataclass fields, inherited ones included)."""
    root = _peft_root()
    classes = _classes(root / "config.py")
    for config_py in sorted(root.glob("tuners/*/config.py")):
        classes.update(_classes(config_py))

    def fields(name: str, seen=()) -> set[str]:
        if name not in classes or name in seen:
            return set()
        bases, own = classes[name]
        inherited = set().union(*(fields(b, seen + (name,)) for b in bases)) if bases else set()
        return inherited | set(own)

    out = {}
    for init in sorted(root.glob("tuners/*/__init__.py")):
        for method, cls in _registrations(init):
            out[method.upper()] = (cls, frozenset(fields(cls)))
    return out

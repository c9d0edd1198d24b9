"""The Method registry: every preset name -> (its family, its defaults).

Built-in presets are usable by name; a config's `methods:` entry overrides a preset
(`lora: {r: 16}`), or names a new variant of one (`dora_r4: {kind: dora, r: 4}`), or any peft
method (`my_loha: {kind: peft, peft_type: LOHA, r: 8}`). Adding a family is one module here plus
its entry in FAMILIES; adding a peft preset is one line in peft_family.PeftMethod.presets.
"""
from __future__ import annotations

from ..errors import ConfigError, did_you_mean
from .base import Method
from .native import BitFit, FullFineTuning, LinearProbe, NoTraining
from .peft_family import PeftMethod, QuantizedPeft

FAMILIES: tuple[Method, ...] = (NoTraining(), FullFineTuning(), LinearProbe(), BitFit(), PeftMethod(), QuantizedPeft())
PRESETS: dict[str, tuple[Method, dict]] = {name: (family, defaults) for family in FAMILIES
                                           for name, defaults in family.presets.items()}


def method_of(kind: str) -> Method:
    """The family that owns a preset (or `peft`)."""
    if kind not in PRESETS:
        raise ConfigError(f"unknown method kind {kind!r}{did_you_mean(kind, PRESETS)}")
    return PRESETS[kind][0]


def baseline_names(methods: dict) -> list[str]:
    """The methods that train nothing (the untrained baselines the report compares against), by
    name; `methods`: the config's resolved `methods:` block (name -> settings with their kind)."""
    return sorted(name for name, settings in methods.items() if not method_of(settings["kind"]).trains(settings))


def preset_defaults(kind: str) -> dict:
    method_of(kind)
    import copy

    return copy.deepcopy(PRESETS[kind][1])


def preset_table() -> str:
    """The README's table of presets, made from this registry: name, peft type, what it trains,
    the task types it can train (every registered one), its default learning rate and where that
    default comes from."""
    from ..tasks import TASK_TYPES
    lines = ["| preset | peft type | trains | task types | default lr | lr source |", "|---|---|---|---|---|---|"]
    for name, (family, defaults) in PRESETS.items():
        if name == "peft":
            continue
        settings = {k: v for k, v in defaults.items() if k != "lr"}
        types = [t.short_name for t in TASK_TYPES.values() if family.refusal(settings, t.name) is None]
        lines.append(f"| `{name}` | {defaults.get('peft_type', '—')} | {family.describe(settings)} | "
                     f"{', '.join(types)} | {_lr(defaults.get('lr'))} | {family.lr_sources.get(name, '')} |")
    return "\n".join(lines) + "\n"


def _lr(value) -> str:
    return "—" if value is None else f"{value:.1e}".replace("e-0", "e-")

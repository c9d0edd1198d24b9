"""The extension point: the config's `plugins:` names importable modules (on PYTHONPATH, or
installed) that, when imported, register task types (`peftgrid.tasks.register`) and metrics
(`peftgrid.metrics.register`). Registration lives in the importing process only, and every
Snakemake job is a process of its own, so the plugins are imported twice over: by the planning layer
before it validates the config (plan.config.validate_config), and by every job before it runs
(jobs.common.run_job, from its spec's `plugins`: see plan.specs.Spec.to_params, which is also what
re-runs every job when the list changes)."""
from __future__ import annotations

import importlib

from .errors import ConfigError

LOADED: list[str] = []  # the plugin modules imported in this process, in config order


def load_plugins(names) -> list[str]:
    """Import each named module once; one ConfigError naming `plugins[i]` if one is missing or fails."""
    if names is None:
        return []
    if not isinstance(names, list):
        raise ConfigError("plugins: expected a list of module names, e.g. plugins: [my_peftgrid_plugin]")
    for i, name in enumerate(names):
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"plugins[{i}]: expected a module name (a string), got {name!r}")
        if name in LOADED:
            continue
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"plugins[{i}]: cannot import {name!r} ({e}); put its folder on PYTHONPATH or "
                              f"install it") from None
        except ConfigError as e:
            raise ConfigError(f"plugins[{i}] ({name}): {e}") from None
        except Exception as e:  # noqa: BLE001 - any error in the plugin's own code, as one line
            raise ConfigError(f"plugins[{i}]: importing {name!r} failed: {type(e).__name__}: {e}") from None
        LOADED.append(name)
    return list(names)

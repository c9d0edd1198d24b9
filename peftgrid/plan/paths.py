"""Every local path a config names, checked when the workflow is parsed: a missing file, folder
or `package:` model is one config error naming the key and the path, before any job starts.
Relative paths are relative to the working directory, as staging reads them."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, ModelError
from ..staging.models import resolve_local_source


def _is_url(path: str) -> bool:
    return str(path).startswith(("http://", "https://"))


def check_local_paths(config: dict, base_dir: str | Path = ".") -> None:
    base_dir = Path(base_dir)
    for name, ds in config["datasets"].items():
        for split, entry in ds.get("splits", {}).items():
            files = entry if isinstance(entry, dict) else {None: entry}
            for lang, path in files.items():
                if _is_url(path):
                    continue
                full = Path(os.path.expanduser(path))
                full = full if full.is_absolute() else base_dir / full
                if not full.is_file():
                    key = f"datasets.{name}.splits.{split}" + (f".{lang}" if lang else "")
                    what = "a folder, not a file" if full.is_dir() else "no such file"
                    raise ConfigError(f"{key}: {path}: {what} (relative paths start at the working directory "
                                      f"{base_dir.resolve()})")
    for name, model in config["models"].items():
        try:
            resolve_local_source(model["source"], base_dir)
        except ModelError as e:
            raise ConfigError(f"models.{name}.source: {e}") from None
    comet = config.get("comet")
    if comet and str(comet["source"]).startswith((".", "/", "~")) and not Path(os.path.expanduser(comet["source"])).exists():
        raise ConfigError(f"comet.source: {comet['source']}: no such file or directory")

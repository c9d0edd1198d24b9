"""Models: stage weights + tokenizer under resources/models/<name>/ from a hub id, a local
directory, a local GGUF file (dequantized here, once), or `package:<module>/<subdir>` (a model
that ships inside an installed Python package). Training jobs only ever read the staged folder.

staged.json is written last: it is the staging rule's output and marks the folder complete.
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

from ..errors import ModelError
from ..records import write_json

# Given to every transformers loader: a model whose config or tokenizer names code of its own
# (`auto_map`, for a type transformers does not ship) is refused at once. Left unset, transformers
# asks on stdin for 15 s before refusing — inside a batch job — and a "y" there would run that code.
NO_REMOTE_CODE = {"trust_remote_code": False}

STAGED_FILE = "staged.json"  # a staged model's record (COMET's too), written last: the staging rule's output

# what a model folder needs; pickled weights only when the config allows them
WEIGHT_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "tokenizer*"]
PICKLE_PATTERNS = ["*.bin"]


def resolve_local_source(source: str, base_dir: Path) -> Path | None:
    """A local path for `source`, or None when it is a hub id."""
    if source.startswith("package:"):
        module, _, sub = source[len("package:"):].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ModelError(f"{source}: Python package {module!r} is not installed (pip install {module.replace('_', '-')})")
        path = Path(spec.origin).parent / sub
        if not path.exists():
            raise ModelError(f"{source}: {path} does not exist")
        return path
    expanded = os.path.expanduser(source)  # ~/models/bert: the home folder, at parse time and at staging alike
    path = Path(expanded) if os.path.isabs(expanded) else base_dir / source
    looks_local = source.startswith((".", "/", "~")) or source.endswith(".gguf") or path.exists()
    if looks_local:
        if not path.exists():
            raise ModelError(f"{source}: no such file or directory")
        return path
    if source.count("/") > 1:
        raise ModelError(f"{source}: neither a local path nor a hub id (owner/name)")
    return None


def copy_file(src: Path, dst: Path) -> None:
    """A copy that never shares storage with the user's file: a reflink where the filesystem can
    (copy-on-write, instant), else a full copy. Never a hard link: writing a staged file in place
    would write the original too."""
    try:
        subprocess.run(["cp", "--reflink=auto", "--preserve=mode,timestamps", str(src), str(dst)], check=True,
                       capture_output=True, timeout=3600)
    except (OSError, subprocess.SubprocessError):
        shutil.copy2(src, dst)


def file_record(path: Path) -> dict:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


def verify_staged(model_dir: str | Path) -> None:
    """Stop with one line when a staged file is missing or no longer has its staged size (a
    truncated copy); cheap enough for every job (sizes only; staged.json keeps sha256 too)."""
    model_dir = Path(model_dir)
    staged = json.loads((model_dir / STAGED_FILE).read_text())
    files = staged.get("files")
    if not isinstance(files, dict):
        return  # staged before sizes were recorded
    for name, rec in files.items():
        path = model_dir / name
        size = path.stat().st_size if path.is_file() else None
        if not isinstance(rec, dict) or size != rec["size"]:
            raise ModelError(f"{path}: staged file is {'missing' if size is None else f'{size} bytes, staged as ' + str(rec['size'])}"
                             f" (truncated or corrupt); delete {model_dir} and run the workflow again to re-stage it")


def check_model_folder(path: Path, allow_pickle: bool, shown: str) -> None:
    if not (path / "config.json").is_file():
        raise ModelError(f"{shown}: not a model folder (no config.json)")
    has_safetensors = any(path.glob("*.safetensors"))
    if not has_safetensors:
        if any(path.glob("*.bin")):
            if not allow_pickle:
                raise ModelError(f"{shown}: weights are pickled (.bin) only; convert them to safetensors "
                                 f"or set allow_pickle: true for this model")
        else:
            raise ModelError(f"{shown}: no weights (*.safetensors) in the folder")


def check_no_code_of_its_own(path: Path, key: str) -> None:
    """Refuse at staging, with one line, a model that would need its own code: an `auto_map` in its
    config or tokenizer config for a model type transformers does not ship (a shipped type with a
    leftover auto_map loads with transformers' classes). The jobs would refuse it anyway
    (NO_REMOTE_CODE), but only after their start-up, with transformers' traceback."""
    config = json.loads((path / "config.json").read_text())
    tokenizer = path / "tokenizer_config.json"
    maps = {"config.json": config.get("auto_map"),
            "tokenizer_config.json": json.loads(tokenizer.read_text()).get("auto_map") if tokenizer.is_file() else None}
    named = [file for file, auto_map in maps.items() if auto_map]
    if not named:
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES  # only when there is an auto_map

    if config.get("model_type") not in CONFIG_MAPPING_NAMES:
        raise ModelError(f"{key}: {' and '.join(named)} name code of the model's own (auto_map; model_type "
                         f"{config.get('model_type')!r} is not one transformers ships), and peftgrid never runs "
                         f"a model's code (trust_remote_code is always off); use a model transformers ships")


def stage_model(name: str, spec: dict, out_dir: str | Path, base_dir: str | Path = ".") -> dict:
    out_dir, base_dir = Path(out_dir), Path(base_dir)
    source = spec["source"]
    allow_pickle = spec.get("allow_pickle", False)
    local = resolve_local_source(source, base_dir)
    tmp = out_dir.with_name(out_dir.name + ".staging")
    shutil.rmtree(tmp, ignore_errors=True)
    if local is not None and local.is_dir():
        check_model_folder(local, allow_pickle, source)  # before copying anything
    tmp.mkdir(parents=True)
    if local is None:
        from huggingface_hub import snapshot_download

        try:
            snapshot_download(repo_id=source, revision=spec.get("revision"), local_dir=tmp,
                              allow_patterns=WEIGHT_PATTERNS + (PICKLE_PATTERNS if allow_pickle else []))
        except Exception as e:  # no network, unknown or gated repo: one line with the local route
            shutil.rmtree(tmp, ignore_errors=True)
            raise ModelError(f"models.{name}.source: cannot download {source!r} from the Hugging Face Hub "
                             f"({type(e).__name__}); without the Hub, point models.{name}.source at a local folder "
                             f"(config.json + *.safetensors) or a .gguf file") from None
        kind = "hub"
    elif local.is_file() and local.suffix == ".gguf":
        _dequantize_gguf(local, tmp)
        kind = "gguf"
    elif local.is_dir():
        for f in local.iterdir():
            if f.is_file() and (allow_pickle or f.suffix != ".bin"):
                copy_file(f, tmp / f.name)
        kind = "local"
    else:
        raise ModelError(f"{source}: expected a model folder or a .gguf file")
    check_model_folder(tmp, allow_pickle, source)
    try:
        check_no_code_of_its_own(tmp, f"models.{name}.source ({source})")
    except ModelError:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    staged = {"name": name, "source": source, "kind": kind, "resolved": str(local) if local else source,
              "files": {p.name: file_record(p) for p in sorted(tmp.iterdir()) if p.is_file()}}
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    write_json(out_dir / STAGED_FILE, staged)
    return staged


def _dequantize_gguf(path: Path, out: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name, **NO_REMOTE_CODE)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, **NO_REMOTE_CODE)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

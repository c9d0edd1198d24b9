"""COMET (unbabel-comet) as its own step: staged like any model, scored on a GPU when there is
one. When the model cannot be had (no hub, no local checkpoint) the `comet` column stays empty
and `comet_status` says why; every other metric is still there."""
from __future__ import annotations

import json
from pathlib import Path

from ..records import read_json, write_json, write_tsv


def find_checkpoint(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".ckpt":
        return path
    candidates = sorted(path.glob("**/checkpoints/*.ckpt")) + sorted(path.glob("*.ckpt"))
    return candidates[0] if candidates else None


def stage_comet(spec: dict | None, out_dir: Path) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    staged = {"source": None if spec is None else spec["source"], "checkpoint": None, "reason": None}
    if spec is None:
        staged["reason"] = "COMET switched off (comet: null)"
    else:
        source = Path(spec["source"]).expanduser()
        try:
            if source.exists():
                ckpt = find_checkpoint(source)
                if ckpt is None:
                    raise FileNotFoundError(f"{source}: no COMET checkpoint (*.ckpt) found")
            else:
                from comet import download_model

                ckpt = Path(download_model(spec["source"], saving_directory=str(out_dir / "model")))
            staged["checkpoint"] = str(ckpt)
        except Exception as e:  # no network, gated model, missing file: say why, never stop the study
            text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            staged["reason"] = f"COMET model {spec['source']!r} unavailable: {type(e).__name__}: {text}"[:300]
    write_json(out_dir / "staged.json", staged)
    return staged


def score_file(staged_dir: Path, predictions: Path, out: Path, batch_size: int = 16) -> dict:
    staged = read_json(staged_dir / "staged.json")
    lines = [json.loads(l) for l in predictions.read_text(encoding="utf-8").splitlines() if l.strip()]
    row = {"comet": None, "comet_status": "ok"}
    if not lines:
        row["comet_status"] = "no predictions (the cell failed)"
    elif staged["checkpoint"] is None:
        row["comet_status"] = staged["reason"]
    else:
        try:
            row["comet"] = 100 * comet_system_score(staged["checkpoint"], lines, batch_size)
        except Exception as e:
            row["comet_status"] = f"COMET scoring failed: {type(e).__name__}: {str(e).strip()[:200]}"
    write_tsv(out, [row], ["comet", "comet_status"])
    return row


def comet_system_score(checkpoint: str, lines: list[dict], batch_size: int) -> float:
    import torch
    from comet import load_from_checkpoint

    model = load_from_checkpoint(checkpoint)
    data = [{"src": l["source"], "mt": l["hypothesis"], "ref": l["references"][0]} for l in lines]
    out = model.predict(data, batch_size=batch_size, gpus=1 if torch.cuda.is_available() else 0, progress_bar=False)
    return float(out.system_score)

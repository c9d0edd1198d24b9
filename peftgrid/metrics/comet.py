"""COMET (unbabel-comet) as its own step: staged like any model, scored on a GPU when there is
one. When the model cannot be had (no hub, no local checkpoint) the `comet` column stays empty
and `comet_status` says why; every other metric is still there."""
from __future__ import annotations

import json
from pathlib import Path

from ..columns import OK
from ..errors import first_line
from ..records import read_json, write_json, write_tsv
from ..staging.models import STAGED_FILE


def find_checkpoint(path: Path) -> Path | None:
    if path.is_file() and path.suffix == ".ckpt":
        return path
    candidates = sorted(path.glob("**/checkpoints/*.ckpt")) + sorted(path.glob("*.ckpt"))
    return candidates[0] if candidates else None


ENCODER_FILES = ["*.json", "*.model", "*.txt"]  # config and tokenizer; the weights are in the checkpoint


def stage_encoder(ckpt: Path) -> str | None:
    """COMET builds its encoder from `pretrained_model` in the checkpoint's hparams.yaml (config and
    tokenizer only). A local folder is used as it is; a hub name (wmt22-comet-da: xlm-roberta-large)
    is fetched into the Hugging Face cache here, so the offline scoring job finds it."""
    import yaml

    hparams = ckpt.parents[1] / "hparams.yaml"
    try:
        name = (yaml.safe_load(hparams.read_text()) or {}).get("pretrained_model")
    except Exception:  # no or unusual hparams.yaml: loading the checkpoint will say what is wrong
        return None
    if not name or Path(name).expanduser().is_dir():
        return name
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(name, allow_patterns=ENCODER_FILES, local_files_only=True)
    except Exception:
        try:
            snapshot_download(name, allow_patterns=ENCODER_FILES)
        except Exception as e:
            raise RuntimeError(f"its encoder {name!r} (tokenizer and config) cannot be had: {type(e).__name__}") from e
    return name


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
            staged["encoder"] = stage_encoder(ckpt)
            staged["checkpoint"] = str(ckpt)
        except Exception as e:  # no network, gated model, missing file: say why, never stop the study
            staged["reason"] = f"COMET model {spec['source']!r} unavailable: {first_line(e)}"[:300]
    write_json(out_dir / STAGED_FILE, staged)
    return staged


def read_lines(predictions: Path) -> list[dict] | None:
    """A predictions.jsonl's examples; None when the file is missing."""
    if not Path(predictions).is_file():
        return None
    return [json.loads(l) for l in Path(predictions).read_text(encoding="utf-8").splitlines() if l.strip()]


def load_comet_checkpoint(checkpoint: str | Path):
    """comet.load_from_checkpoint, with the checkpoint read by `torch.load(weights_only=True)`:
    tensors and plain values only, never pickled code — explicitly, not by relying on torch's
    default (which TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD turns off). comet's own loader has no such
    option; this is its body (unbabel-comet 2.2.7) with that one argument added, and hparams.yaml
    read with yaml.safe_load. The encoder is looked up in local files only (staged beforehand)."""
    import torch
    import yaml
    from comet.models import str2model

    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise FileNotFoundError(f"{checkpoint}: no such checkpoint")
    hparams_file = checkpoint.parents[1] / "hparams.yaml"
    if not hparams_file.is_file():
        raise FileNotFoundError(f"{hparams_file}: missing (COMET reads the model class from it)")
    hparams = yaml.safe_load(hparams_file.read_text()) or {}
    model_class = str2model[hparams["class_identifier"]]
    extra = {}
    if hparams.get("layer_transformation") == "sparsemax_patch":  # comet >= 2.2.4's workaround (its issue 244)
        extra["layer_transformation"] = "softmax"
    return model_class.load_from_checkpoint(checkpoint, map_location=torch.device("cpu"), strict=False,
                                            weights_only=True, load_pretrained_weights=False,
                                            local_files_only=True, **extra)


def comet_inputs(lines: list[dict]) -> list[dict]:
    return [{"src": l["source"], "mt": l["hypothesis"], "ref": l["references"][0]} for l in lines]


class CometScorer:
    """Scores any number of predictions files with one model: the staged checkpoint is loaded
    once, when some file needs scoring (`loads` counts it), and the files are scored in one pass.
    A file that cannot be scored gets its reason as status; the others are scored all the same.

    `cache_dir`: segment scores by content (checkpoint identity, batch size, device, the
    (src, mt, ref) triples), so an unchanged file is never scored twice, and identical files
    (e.g. the untrained baseline's seeds) are scored once."""

    def __init__(self, staged: dict, batch_size: int = 16, cache_dir: Path | None = None):
        self.staged, self.batch_size = staged, batch_size
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.model, self.load_error, self.loads, self.scored, self.cached = None, None, 0, 0, 0
        self._memo: dict[str, list[float]] = {}

    def _gpus(self) -> int:
        from ..engine.device import pick_device

        return 1 if pick_device().type == "cuda" else 0

    def _key(self, data: list[dict]) -> str:
        import hashlib

        ckpt = Path(self.staged["checkpoint"])
        st = ckpt.stat()
        ident = [str(ckpt.resolve()), st.st_size, st.st_mtime_ns, self.batch_size, self._gpus(), data]
        return hashlib.sha256(json.dumps(ident, ensure_ascii=False).encode()).hexdigest()

    def _load(self):
        if self.model is None and self.load_error is None:
            import time

            t0 = time.perf_counter()
            try:
                self.model = load_comet_checkpoint(self.staged["checkpoint"])
                self.loads += 1
                print(f"COMET model loaded from {self.staged['checkpoint']} in {time.perf_counter() - t0:.1f} s", flush=True)
            except Exception as e:  # a broken checkpoint, an encoder that is not staged: every file says why
                self.load_error = f"COMET model could not be loaded: {first_line(e, limit=200)}"
        return self.model

    def _predict(self, data: list[dict]) -> list[float]:
        out = self.model.predict(data, batch_size=self.batch_size, gpus=self._gpus(), progress_bar=False)
        return [float(s) for s in out.scores]

    def _score_pending(self, pending: dict[str, list[dict]]) -> dict[str, str]:
        """Scores the files not seen before in one predict call (one pass over the data, one
        Trainer); when that fails, file by file. Returns key -> why it could not be scored."""
        if not pending:
            return {}
        if self._load() is None:
            return {k: self.load_error for k in pending}
        errors, keys = {}, list(pending)
        try:
            flat = self._predict([x for k in keys for x in pending[k]])
            parts, i = {}, 0
            for k in keys:
                parts[k], i = flat[i:i + len(pending[k])], i + len(pending[k])
        except Exception as e:  # out of memory on the whole task, one bad line: retry each file alone
            print(f"COMET: scoring all files at once failed ({first_line(e, limit=200)}); scoring them one by one", flush=True)
            parts = {}
            for k in keys:
                try:
                    parts[k] = self._predict(pending[k])
                except Exception as e1:
                    errors[k] = f"COMET scoring failed: {first_line(e1, limit=200)}"
        for k, scores in parts.items():
            self._memo[k] = scores
            self.scored += 1
            if self.cache_dir is not None:
                write_json(self.cache_dir / f"{k}.json", {"scores": scores})
        return errors

    def score_many(self, files: list) -> list[tuple[dict, list[float]]]:
        """Per predictions file (its lines; None when the file is missing, the exception when it
        could not be read): (row: comet (0-100,
        the mean of the segment scores), comet_status, n_scored; per-example scores x 100)."""
        rows, keys, pending = [], [], {}
        for lines in files:
            row, key = {"comet": None, "comet_status": OK, "n_scored": 0}, None
            if lines is None:
                row["comet_status"] = "no predictions file (its generation job did not finish)"
            elif isinstance(lines, Exception):  # read_lines failed on this file
                row["comet_status"] = f"COMET scoring failed: unreadable predictions: {first_line(lines, limit=200)}"
            elif not lines:
                row["comet_status"] = "no predictions (the cell failed)"
            elif self.staged.get("checkpoint") is None:
                row["comet_status"] = self.staged["reason"]
            else:
                try:
                    data = comet_inputs(lines)
                except Exception as e:  # a malformed line: this file only
                    row["comet_status"] = f"COMET scoring failed: {first_line(e, limit=200)}"
                else:
                    key = self._key(data)
                    cached = None if self.cache_dir is None else self.cache_dir / f"{key}.json"
                    if key in self._memo or key in pending:
                        self.cached += 1
                    elif cached is not None and cached.is_file():
                        self._memo[key] = read_json(cached)["scores"]
                        self.cached += 1
                    else:
                        pending[key] = data
            rows.append(row)
            keys.append(key)
        errors = self._score_pending(pending)
        out = []
        for row, key in zip(rows, keys):
            scores = []
            if key in errors:
                row["comet_status"] = errors[key]
            elif key is not None:
                scores = [100 * s for s in self._memo[key]]
                row.update(comet=sum(scores) / len(scores), n_scored=len(scores))
            out.append((row, scores))
        return out

    def score(self, lines: list[dict] | None) -> tuple[dict, list[float]]:
        return self.score_many([lines])[0]


class _Unavailable(Exception):
    pass


def score_file(staged_dir: Path, predictions: Path, out: Path, batch_size: int = 16) -> dict:
    """One predictions file -> a one-row comet.tsv (the workflow scores a whole task at once:
    peftgrid.jobs.comet)."""
    row, _ = CometScorer(read_json(Path(staged_dir) / STAGED_FILE), batch_size).score(read_lines(Path(predictions)))
    write_tsv(out, [row], ["comet", "comet_status"])
    return row

"""Kill a training job at a step, start it again: it resumes from its last checkpoint and ends
exactly where an uninterrupted run ends (CPU, fixed seeds: the tolerance is float rounding) — also
in a later epoch, where the data order comes from the restored generator, not a fresh one. The
costs add up over the segments: the first segment's peak memory is kept, loading the checkpoint
is not training time."""
import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from peftgrid.jobs.train import train_cell
from peftgrid.records import read_tsv
from test_training import cell_spec, clock, staged  # noqa: F401  (fixtures)

# what scripts/train.py does: the spec travels as its canonical params and is rebuilt from them
RUNNER = """
import json, sys
from pathlib import Path
from peftgrid.errors import Preempted
from peftgrid.jobs.train import train_cell
from peftgrid.plan.specs import TrainSpec
args = json.loads(Path(sys.argv[1]).read_text())
try:
    train_cell(TrainSpec.from_params(args["spec"]), Path(args["model"]), {"emo": Path(args["data"])}, Path(args["out"]))
except Preempted as e:
    print(e)
    sys.exit(143)
"""


SLOW_LOAD = 1000.0  # virtual seconds a patched checkpoint load takes (test_training's clock)


def run_in_subprocess(tmp_path, spec, model_dir, data, out, fault):
    args = tmp_path / "args.json"
    args.write_text(json.dumps({"spec": spec.to_params(), "model": str(model_dir), "data": str(data), "out": str(out)}))
    env = {**os.environ, "PEFTGRID_FAULT": fault, "PEFTGRID_DEVICE": "cpu"}
    return subprocess.run([sys.executable, "-c", RUNNER, str(args)], env=env, capture_output=True, text=True,
                          timeout=300)


def weights(out, kind):
    name = "model.safetensors" if kind == "full" else "adapter_model.safetensors"
    return load_file(out / "model" / name)


@pytest.mark.parametrize("method, fault, signal_code", [
    ("lora", "kill:7", -signal.SIGKILL),
    # 8 steps an epoch: killed at 11, resumed from step 9's checkpoint, in the second epoch, whose
    # order a fresh generator (seeded as at the start) would get wrong: it deals epoch 1's again
    ("lora", "kill:11", -signal.SIGKILL),
    ("full", "kill:4", -signal.SIGKILL),
    ("adalora", "kill:8", -signal.SIGKILL),
    ("lora", "term:5", 143),
])
def test_interrupted_run_resumes_to_the_same_result(tiny_bert, staged, tmp_path, method, fault, signal_code,  # noqa: F811
                                                    monkeypatch, clock):  # noqa: F811
    overrides = {"lr": 5.0e-3, "checkpoint_every_steps": 3, "epochs": 2}
    if method == "adalora":
        overrides.update(init_r=6, target_r=4)
    spec = cell_spec(tiny_bert, method, **overrides)
    model_dir = staged / "tiny"
    reference = train_cell(spec, model_dir, {"emo": staged / "emo"}, tmp_path / "reference")
    assert reference["status"] == "ok" and not (tmp_path / "reference" / "checkpoint").exists()

    out = tmp_path / "interrupted"
    proc = run_in_subprocess(tmp_path, spec, model_dir, staged / "emo", out, fault)
    assert proc.returncode == signal_code, proc.stderr[-2000:]
    assert (out / "checkpoint" / "state.pt").is_file()
    assert not (out / "run.json").exists() and not (out / "model").exists()  # nothing looks finished
    saved = torch.load(out / "checkpoint" / "state.pt", weights_only=True)["loop"]
    kind, at = fault.split(":")
    # SIGKILL: the last checkpoint (every 3 steps); SIGTERM: one written at the next step's end
    assert saved["step"] == (int(at) // 3 * 3 if kind == "kill" else int(at) + 1)
    # the first segment's peak (weights included: never 0) travels in the checkpoint
    assert saved["prior_peak_mb"] >= reference["stats"]["total_params"] * 4 / 2**20

    from peftgrid.engine.checkpoint import Checkpointer

    real_load = Checkpointer.load

    def slow_load(self):  # loading the checkpoint made slow: it must not count as training time
        clock.sleep(SLOW_LOAD)
        return real_load(self)

    monkeypatch.setattr(Checkpointer, "load", slow_load)
    resumed = train_cell(spec, model_dir, {"emo": staged / "emo"}, out)
    assert resumed["status"] == "ok" and resumed["resumed"] is True
    assert resumed["stats"]["peak_train_mem_mb"] >= round(saved["prior_peak_mb"], 1)
    assert resumed["stats"]["checkpoint_time_s"] >= SLOW_LOAD
    assert resumed["stats"]["train_time_s"] < SLOW_LOAD
    assert not (out / "checkpoint").exists()
    for key in ("final_train_loss", "final_val_loss", "steps"):
        assert resumed["stats"][key] == pytest.approx(reference["stats"][key], abs=1e-5), key
    ref_w, res_w = weights(tmp_path / "reference", method), weights(out, method)
    assert ref_w.keys() == res_w.keys()
    for name in ref_w:
        assert torch.allclose(ref_w[name], res_w[name], atol=1e-5), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]  # noqa: E731
    assert strip(read_tsv(out / "train_log.tsv")) == strip(read_tsv(tmp_path / "reference" / "train_log.tsv"))


def test_a_checkpoint_of_other_hyperparameters_is_not_resumed(tiny_bert, staged, tmp_path):  # noqa: F811
    spec = cell_spec(tiny_bert, "lora", lr=5.0e-3, checkpoint_every_steps=2)
    out = tmp_path / "cell"
    proc = run_in_subprocess(tmp_path, spec, staged / "tiny", staged / "emo", out, "kill:3")
    assert proc.returncode == -signal.SIGKILL and (out / "checkpoint" / "state.pt").is_file()
    edited = cell_spec(tiny_bert, "lora", lr=1.0e-3, checkpoint_every_steps=2)  # the user edited the cell
    record = train_cell(edited, staged / "tiny", {"emo": staged / "emo"}, out)
    assert record["resumed"] is False and record["hparams"]["lr"] == 1.0e-3


def test_a_second_trainer_of_a_run_folder_waits_for_the_first_and_keeps_its_finished_run(tiny_bert, staged, tmp_path,  # noqa: F811
                                                                                         capsys):
    """A Snakemake killed with kill -9 leaves its jobs running; restarted (README: --unlock, then the
    same command) it starts the same cells again. Defect caught: the new job training beside the old
    one in the same folder (both writing model.tmp, checkpoint/, run.json) instead of waiting for it,
    or retraining a cell the old one finished with the same settings."""
    import fcntl
    import threading
    import time

    from peftgrid.jobs.train import RUN_LOCK_FILE

    spec = cell_spec(tiny_bert, "lora", lr=5.0e-3)
    out = tmp_path / "cell"
    first = train_cell(spec, staged / "tiny", {"emo": staged / "emo"}, out)
    stamp = (out / "train_stats.tsv").stat().st_mtime_ns
    results = {}

    def second(name, s):
        results[name] = train_cell(s, staged / "tiny", {"emo": staged / "emo"}, out)

    for name, s in (("same", spec), ("other", cell_spec(tiny_bert, "lora", lr=1.0e-3))):
        with open(out / RUN_LOCK_FILE, "a+") as held:  # the old job, still training
            fcntl.flock(held, fcntl.LOCK_EX)
            thread = threading.Thread(target=second, args=(name, s))
            thread.start()
            time.sleep(1.0)
            assert thread.is_alive() and name not in results  # it waits, writing nothing
            assert (out / "train_stats.tsv").stat().st_mtime_ns == stamp
        thread.join(timeout=120)
        assert not thread.is_alive()
        if name == "same":  # the old job finished this spec: its files stand, nothing retrains
            assert results["same"] == first and (out / "train_stats.tsv").stat().st_mtime_ns == stamp
    assert "waiting for it to end" in capsys.readouterr().out
    # another spec in the folder (a config edited meanwhile) is trained, not taken for finished
    assert results["other"]["hparams"]["lr"] == 1.0e-3 and results["other"]["status"] == "ok"
    assert (out / "train_stats.tsv").stat().st_mtime_ns != stamp

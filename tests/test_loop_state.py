"""Halving rungs (TrainSpec.rung): a run stopped at step k keeps a checkpoint of k, and a run that
continues from that checkpoint ends bit-identical to a run that never stopped — same trainable
weights, same loss log — while the checkpoint it read is left as it was."""
import hashlib

import pytest
import torch
from safetensors.torch import load_file

from peftgrid.errors import ConfigError
from peftgrid.jobs.train import KEPT_CHECKPOINT, train_cell
from peftgrid.plan.specs import TrainSpec
from peftgrid.records import read_json, read_tsv
from test_training import cell_spec, staged  # noqa: F401  (fixtures)


def with_rung(spec, stop_at_step, from_checkpoint=None, total_steps=16):
    # what the workflow does: the spec travels as its params and is rebuilt from them; a rung is a share
    # of the run's steps (None: the whole run), here the share that stops a run of total_steps there
    share = 1.0 if stop_at_step is None else stop_at_step / total_steps
    rung = {"share": share, "min_steps": 1, "from_checkpoint": None if from_checkpoint is None else str(from_checkpoint)}
    return TrainSpec.from_params({**spec.to_params(), "rung": rung})


def train(spec, staged, out):  # noqa: F811
    record = train_cell(spec, staged / "tiny", {"emo": staged / "emo"}, out)
    assert record["status"] == "ok", record["error"]
    return record


def adapter(out):
    return load_file(out / "model" / "adapter_model.safetensors")


def log_without_time(out):
    return [{k: v for k, v in row.items() if k != "elapsed_s"} for row in read_tsv(out / "train_log.tsv")]


def folder_digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_a_rung_continued_from_a_kept_checkpoint_ends_as_an_uninterrupted_run(tiny_bert, staged, tmp_path):  # noqa: F811
    # 8 steps an epoch, 2 epochs; logs every 2 steps, validation every 4: the rung stops at 5, in
    # the middle of a logging window, and the continuation crosses into the second epoch
    spec = cell_spec(tiny_bert, "lora", lr=5.0e-3, epochs=2)
    first = train(with_rung(spec, 5), staged, tmp_path / "rung1")
    kept = tmp_path / "rung1" / KEPT_CHECKPOINT
    assert first["total_steps"] == 16 and first["stats"]["steps"] == 5
    assert (kept / "state.pt").is_file() and (tmp_path / "rung1" / "model").is_dir()
    assert not (tmp_path / "rung1" / "checkpoint").exists()
    before = folder_digest(kept)
    kept.chmod(0o555)  # read-only: the continuation may read it, never write it
    try:
        continued = train(with_rung(spec, 11, kept), staged, tmp_path / "rung2")
    finally:
        kept.chmod(0o755)
    assert folder_digest(kept) == before
    straight = train(with_rung(spec, 11), staged, tmp_path / "straight")
    assert continued["resumed"] is True and straight["resumed"] is False
    assert continued["stats"]["steps"] == straight["stats"]["steps"] == 11
    a, b = adapter(tmp_path / "rung2"), adapter(tmp_path / "straight")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert log_without_time(tmp_path / "rung2") == log_without_time(tmp_path / "straight")
    assert [int(r["step"]) for r in log_without_time(tmp_path / "rung1")] == [0, 2, 4]

    # the last rung (stop_at_step None: to the end) is the full run's own result
    last = train(with_rung(spec, None, tmp_path / "rung2" / KEPT_CHECKPOINT), staged, tmp_path / "rung3")
    full = train(spec, staged, tmp_path / "full")
    assert last["stats"]["steps"] == full["stats"]["steps"] == 16
    a, b = adapter(tmp_path / "rung3"), adapter(tmp_path / "full")
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert log_without_time(tmp_path / "rung3") == log_without_time(tmp_path / "full")
    assert read_json(tmp_path / "full" / "run.json")["rung"] is None
    assert not (tmp_path / "full" / KEPT_CHECKPOINT).exists()


def test_a_rung_leaves_every_other_cells_params_as_they_were(tiny_bert):
    spec = cell_spec(tiny_bert, "lora")
    assert "rung" not in spec.to_params()
    assert TrainSpec.from_params(spec.to_params()) == spec
    assert with_rung(spec, 5).hparams == spec.hparams  # the checkpoint's fingerprint is of hparams alone


def test_a_rung_whose_kept_checkpoint_was_freed_trains_from_step_zero_to_the_same_weights(tiny_bert, staged, tmp_path,  # noqa: F811
                                                                                        capsys):
    """A stage frees the kept checkpoints no rung continues from (jobs/select.free_checkpoints); a
    rung that later needs one (an edited grid, a stage decided again) retrains the steps before it.
    Defect caught: such a rung failing, or continuing from anything but the same prefix."""
    spec = cell_spec(tiny_bert, "lora", lr=5.0e-3, epochs=2)
    train(with_rung(spec, 5), staged, tmp_path / "rung0")
    continued = train(with_rung(spec, 11, tmp_path / "rung0" / KEPT_CHECKPOINT), staged, tmp_path / "continued")
    capsys.readouterr()
    retrained = train(with_rung(spec, 11, tmp_path / "freed" / KEPT_CHECKPOINT), staged, tmp_path / "retrained")
    assert "no kept checkpoint at" in capsys.readouterr().out
    assert continued["resumed"] is True and retrained["resumed"] is False
    assert retrained["stats"]["steps"] == continued["stats"]["steps"] == 11
    a, b = adapter(tmp_path / "retrained"), adapter(tmp_path / "continued")
    assert a.keys() == b.keys() and all(torch.equal(a[n], b[n]) for n in a)
    assert log_without_time(tmp_path / "retrained") == log_without_time(tmp_path / "continued")
    assert retrained["stats"]["final_val_loss"] == continued["stats"]["final_val_loss"]


def test_a_bad_rung_is_one_clear_error(tiny_bert, staged, tmp_path):  # noqa: F811
    spec = with_rung(cell_spec(tiny_bert, "lora"), 6, total_steps=8)
    bad = TrainSpec.from_params({**spec.to_params(), "rung": {"share": 0}})
    with pytest.raises(ConfigError, match="rung.share"):
        train_cell(bad, staged / "tiny", {"emo": staged / "emo"}, tmp_path / "out")


# the loop state's keys as the code before CHECKPOINT_FORMAT 2 wrote them (no "format" key)
OLD_LOOP_KEYS = {"step": "step", "examples": "examples", "loss_sum": "loss_sum", "window_steps": "loss_count",
                 "reg_sum": "reg_sum", "best_snapshot": "best_snapshot", "log_rows": "log_rows",
                 "train_loss": "last_train_loss", "val_loss": "val", "prior_seconds": "seconds",
                 "val_seconds": "val_seconds", "checkpoint_seconds": "checkpoint_seconds",
                 "prior_peak_mb": "peak_mem_mb", "best_val_loss": "best_val_loss", "epoch_rng": "epoch_rng",
                 "batch_pos": "batch_pos"}


def old_format(state: dict) -> dict:
    """A checkpoint as the old loop wrote it: the same tensors, its 15 string keys, no version."""
    loop = {old: state["loop"][new] for new, old in OLD_LOOP_KEYS.items()}
    old = {k: v for k, v in state.items() if k not in ("format", "loop")}
    return {**old, "loop": loop}


def test_a_checkpoint_of_the_old_format_is_not_resumed(tiny_bert, staged, tmp_path, capsys):  # noqa: F811
    spec = cell_spec(tiny_bert, "lora", lr=5.0e-3)
    train(with_rung(spec, 5, total_steps=8), staged, tmp_path / "rung")
    written = torch.load(tmp_path / "rung" / KEPT_CHECKPOINT / "state.pt", weights_only=True)
    assert written["format"] == 2 and written["loop"]["step"] == 5

    # control: the same checkpoint, as written, in a cell's checkpoint/ folder is resumed from step 5
    (tmp_path / "new" / "checkpoint").mkdir(parents=True)
    torch.save(written, tmp_path / "new" / "checkpoint" / "state.pt")
    assert train(spec, staged, tmp_path / "new")["resumed"] is True

    (tmp_path / "old" / "checkpoint").mkdir(parents=True)
    torch.save(old_format(written), tmp_path / "old" / "checkpoint" / "state.pt")
    capsys.readouterr()
    record = train(spec, staged, tmp_path / "old")
    assert "checkpoint format 1, this code resumes format 2: not resumed, training starts from step 0" in capsys.readouterr().out
    fresh = train(spec, staged, tmp_path / "fresh")
    assert record["resumed"] is False and record["checkpoint_format"] == 2
    assert log_without_time(tmp_path / "old") == log_without_time(tmp_path / "fresh")
    a, b = adapter(tmp_path / "old"), adapter(tmp_path / "fresh")
    assert all(torch.equal(a[n], b[n]) for n in a)

    # a rung never continues from one: it says why and trains from step 0, as when a stage freed it
    (tmp_path / "old_kept").mkdir()
    torch.save(old_format(written), tmp_path / "old_kept" / "state.pt")
    continued = train(with_rung(spec, 8, tmp_path / "old_kept", total_steps=8), staged, tmp_path / "continued")
    assert "checkpoint format 1, this code resumes format 2: not continued, training from step 0" in capsys.readouterr().out
    straight = train(with_rung(spec, 8, total_steps=8), staged, tmp_path / "straight")
    assert continued["resumed"] is False and log_without_time(tmp_path / "continued") == log_without_time(tmp_path / "straight")
    other = cell_spec(tiny_bert, "lora", lr=1.0e-3)  # another grid point's checkpoint is refused too
    train(with_rung(other, 8, tmp_path / "rung" / KEPT_CHECKPOINT, total_steps=8), staged, tmp_path / "other")
    assert "written for other hyperparameters: not continued" in capsys.readouterr().out
    train(with_rung(other, 8, total_steps=8), staged, tmp_path / "other_straight")
    assert log_without_time(tmp_path / "other") == log_without_time(tmp_path / "other_straight")


def test_training_hparams_are_the_schemas_keys_typed(tiny_bert):
    from dataclasses import fields

    from peftgrid.engine.loop import TrainingHparams
    from peftgrid.plan.config import training_keys

    hparams = cell_spec(tiny_bert, "lora").hparams
    hp = TrainingHparams.of(hparams)
    assert {f.name for f in fields(hp)} - {"hparams"} == training_keys() | {"kind", "seed"}
    assert hp.lr == hparams["lr"] and hp.hparams == hparams and hp.compile is False
    with pytest.raises(ConfigError, match=r"hparams\.batch_size: '16' is not int"):
        TrainingHparams.of({**hparams, "batch_size": "16"})
    with pytest.raises(ConfigError, match=r"hparams\.group_by_length: 1 is not bool"):
        TrainingHparams.of({**hparams, "group_by_length": 1})
    with pytest.raises(ConfigError, match=r"hparams\.lr: missing"):
        TrainingHparams.of({k: v for k, v in hparams.items() if k != "lr"})

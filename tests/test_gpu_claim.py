"""GPU claiming (peftgrid.engine.gpus) on a CPU machine, with simulated device ids.

Every test runs real, concurrent processes that claim through the real lock files: each child
claims, reports what it got, and holds its claim until the test tells it to exit (or kills it). A
lock that did nothing would hand every child GPU 0 slot 0 and never make one wait, so each
assertion below would fail."""
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO

CHILD = r"""
import json, os, sys, time
from pathlib import Path
from peftgrid.engine.gpus import claim_gpu
out, release, slots, locks = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
claim = claim_gpu(slots, base_dir=locks, poll_s=0.1, log=lambda line: print(line, flush=True))
out.write_text(json.dumps({**claim.record(), "env": os.environ.get("CUDA_VISIBLE_DEVICES"),
                           "torch_loaded": "torch" in sys.modules, "pid": os.getpid()}))
while not release.exists():
    time.sleep(0.05)
"""


class Claimers:
    """Child processes that claim a GPU slot and hold it until released or killed."""

    def __init__(self, tmp_path: Path, ids: str | None = "0,1,2,3", visible: str | None = None, wait_s: float | None = None):
        self.tmp, self.procs, self.outs = tmp_path, [], []
        self.release = tmp_path / "release"
        self.locks = tmp_path / "locks"
        env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "PEFTGRID_DEVICE",
                                                                "PEFTGRID_GPU_LOCK_DIR", "PEFTGRID_GPU_WAIT_S")}
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        if ids is not None:
            env["PEFTGRID_GPU_IDS"] = ids
        if visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = visible
        if wait_s is not None:
            env["PEFTGRID_GPU_WAIT_S"] = str(wait_s)
        self.env = env

    def start(self, slots: int = 1) -> int:
        i = len(self.procs)
        out = self.tmp / f"claim{i}.json"
        self.outs.append(out)
        self.procs.append(subprocess.Popen([sys.executable, "-c", CHILD, str(out), str(self.release), str(slots),
                                            str(self.locks)], env=self.env, cwd=self.tmp,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        return i

    def result(self, i: int, timeout: float = 120) -> dict:
        """What child i claimed, once it has claimed (it keeps holding the claim)."""
        deadline = time.monotonic() + timeout
        while not self.outs[i].exists() or not self.outs[i].read_text():
            if self.procs[i].poll() is not None:
                raise AssertionError(f"claimer {i} exited {self.procs[i].returncode}: {self.procs[i].stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"claimer {i} claimed nothing within {timeout} s")
            time.sleep(0.05)
        time.sleep(0.05)  # the write is one call; let it land completely
        return json.loads(self.outs[i].read_text())

    def claim_all(self, n: int, slots: int = 1) -> list[dict]:
        started = [self.start(slots) for _ in range(n)]  # all started before any result is read: concurrent
        return [self.result(i) for i in started]

    def finish(self, i: int, timeout: float = 120) -> tuple[int, str, str]:
        """Wait for child i to end by itself (the others keep holding their claims)."""
        out, err = self.procs[i].communicate(timeout=timeout)
        return self.procs[i].returncode, out, err

    def close(self):
        self.release.touch()
        for p in self.procs:
            try:
                p.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.communicate()


@pytest.fixture
def claimers(tmp_path):
    made = []

    def make(**kw):
        c = Claimers(tmp_path, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


def test_concurrent_jobs_get_distinct_devices(claimers):
    c = claimers(ids="0,1,2,3")
    got = c.claim_all(4)
    assert sorted(r["physical_id"] for r in got) == ["0", "1", "2", "3"]
    assert all(r["slot"] == 0 and r["how"] == "claimed" for r in got)
    # the child's CUDA_VISIBLE_DEVICES is its claimed device, set before torch was imported
    assert all(r["env"] == r["physical_id"] and not r["torch_loaded"] for r in got)


def test_no_free_device_means_waiting_not_sharing(claimers):
    c = claimers(ids="0,1", wait_s=1.5)
    assert sorted(r["physical_id"] for r in c.claim_all(2)) == ["0", "1"]
    late = c.start()
    code, out, err = c.finish(late)
    assert code != 0 and "GpuClaimTimeout" in err and "no free GPU slot" in err
    assert "held by other jobs; waiting" in out  # the log says it waits, and for what
    assert not c.outs[late].exists()


def test_a_waiting_job_gets_the_device_freed_by_a_finished_one(claimers):
    c = claimers(ids="0,1")
    first = c.claim_all(2)
    late = c.start()
    time.sleep(1.0)
    assert not c.outs[late].exists()  # both held: it waits
    c.procs[0].send_signal(signal.SIGTERM)  # a job that ends normally
    c.procs[0].wait(timeout=60)
    assert c.result(late)["physical_id"] == first[0]["physical_id"]


def test_slots_per_device_two_jobs_on_each_of_two_devices(claimers):
    c = claimers(ids="0,1", wait_s=1.5)
    got = c.claim_all(4, slots=2)
    assert Counter(r["physical_id"] for r in got) == {"0": 2, "1": 2}
    assert sorted((r["physical_id"], r["slot"]) for r in got) == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]
    assert all(r["slots_per_device"] == 2 and r["env"] == r["physical_id"] for r in got)
    code, _, err = c.finish(c.start(slots=2))  # a fifth: every slot is held
    assert code != 0 and "GpuClaimTimeout" in err


def test_jobs_spread_over_devices_before_sharing_one(claimers):
    c = claimers(ids="0,1")
    got = c.claim_all(2, slots=2)
    assert sorted(r["physical_id"] for r in got) == ["0", "1"]  # not both on GPU 0


def test_a_killed_holder_frees_its_device(claimers):
    c = claimers(ids="0,1", wait_s=60)
    first = c.claim_all(2)
    victim = next(i for i, r in enumerate(first) if r["physical_id"] == "1")
    os.kill(first[victim]["pid"], signal.SIGKILL)  # no cleanup runs: the kernel drops the flock
    c.procs[victim].wait(timeout=60)
    nxt = c.result(c.start())
    assert nxt["physical_id"] == "1" and nxt["env"] == "1"
    assert len(list(c.locks.rglob("gpu*.slot0.lock"))) == 2  # lock files stay; only the kernel's lock went


def test_cuda_visible_devices_restricts_the_pool(claimers):
    c = claimers(ids="0,1,2,3", visible="1,3", wait_s=1.5)
    got = c.claim_all(2)
    assert sorted(r["physical_id"] for r in got) == ["1", "3"]
    assert all(r["pool"] == ["1", "3"] and r["env"] == r["physical_id"] for r in got)
    code, _, err = c.finish(c.start())  # 0 and 2 are not ours even though they are free
    assert code != 0 and "GpuClaimTimeout" in err


def test_cuda_visible_devices_uuids_are_claimed_as_given(claimers):
    c = claimers(ids=None, visible="GPU-aaaa,GPU-bbbb")
    got = c.claim_all(2)
    assert sorted(r["env"] for r in got) == ["GPU-aaaa", "GPU-bbbb"]


def test_one_device_given_is_used_without_a_lock(claimers):
    """SLURM gave the job exactly one GPU: it is this job's; nothing to claim, nobody waits."""
    c = claimers(ids="0,1,2,3", visible="2", wait_s=1.5)
    got = c.claim_all(2)
    assert all(r["physical_id"] == "2" and r["slot"] is None and r["how"] == "only-device" and r["env"] == "2"
               for r in got)
    assert not c.locks.exists()


def test_no_gpu_claims_nothing(claimers):
    c = claimers(ids="")
    (got,) = c.claim_all(1)
    assert got["how"] == "no-gpu" and got["physical_id"] is None and got["env"] is None


def test_cpu_forced_claims_nothing(claimers):
    c = claimers(ids="0,1")
    c.env["PEFTGRID_DEVICE"] = "cpu"
    (got,) = c.claim_all(1)
    assert got["how"] == "no-gpu" and got["env"] is None


def test_in_process_claims_exclude_each_other(tmp_path, monkeypatch):
    """flock belongs to the open file, so even two claims of one process exclude each other."""
    from peftgrid.engine import gpus

    monkeypatch.setenv("PEFTGRID_GPU_IDS", "5,6")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv("PEFTGRID_DEVICE", raising=False)
    try:
        a = gpus.claim_gpu(1, base_dir=tmp_path, poll_s=0.05)
        assert os.environ["CUDA_VISIBLE_DEVICES"] == a.physical_id
        os.environ.pop("CUDA_VISIBLE_DEVICES")  # else the next claim's pool is just a's device
        b = gpus.claim_gpu(1, base_dir=tmp_path, poll_s=0.05)
        assert {a.physical_id, b.physical_id} == {"5", "6"} and os.environ["CUDA_VISIBLE_DEVICES"] == b.physical_id
        os.environ.pop("CUDA_VISIBLE_DEVICES")
        with pytest.raises(gpus.GpuClaimTimeout):
            gpus.claim_gpu(1, base_dir=tmp_path, poll_s=0.05, wait_s=0.2, log=lambda line: None)
        assert "[GPU 5, slot 0 of 1]" in (a.describe() + b.describe())
    finally:
        gpus.release_all()
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_the_train_script_claims_before_torch_and_passes_the_claim_on(tmp_path):
    """scripts/train.py with a stand-in for Snakemake's object and for the training job: the slot
    comes from the rule's resources, CUDA_VISIBLE_DEVICES is set and torch is not yet loaded when
    the job starts, and the claim reaches train_cell (which records it in run.json)."""
    code = r"""
import json, os, runpy, sys, types
seen = {}
fake = types.ModuleType("peftgrid.jobs.train")
def train_cell(spec, model_dir, data_dirs, out_dir, gpu=None):
    seen.update(env=os.environ.get("CUDA_VISIBLE_DEVICES"), torch="torch" in sys.modules, gpu=gpu.record(),
                skipped=sorted(n for n in ("sklearn", "bitsandbytes") if n in sys.modules and sys.modules[n] is None))
    return {"status": "ok", "error": None, "stats": {"train_time_s": 1.0}}
fake.train_cell = train_cell
import peftgrid.jobs
sys.modules["peftgrid.jobs.train"] = fake
class Spec:
    @staticmethod
    def from_params(p): return types.SimpleNamespace(hparams={"kind": "lora"})
specs = types.ModuleType("peftgrid.plan.specs"); specs.TrainSpec = Spec
sys.modules["peftgrid.plan.specs"] = specs
class NS(dict):
    __getattr__ = dict.__getitem__
smk = NS(resources=NS(gpu=1, gpu_slots_per_device=2), params=NS(spec={}), input=NS(datasets=[], model="m/staged.json"),
         output=NS(run="out/run.json"), log=[], rule="train")
runpy.run_path(sys.argv[1], init_globals={"snakemake": smk})
print(json.dumps(seen))
"""
    env = {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "PEFTGRID_DEVICE")}
    env.update(PEFTGRID_GPU_IDS="3,7", PEFTGRID_GPU_LOCK_DIR=str(tmp_path / "locks"),
               PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", code, str(REPO / "scripts" / "train.py")], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    seen = json.loads(proc.stdout.strip().splitlines()[-1])
    assert seen["env"] == "3" and seen["torch"] is False
    assert seen["skipped"] == ["bitsandbytes", "sklearn"]  # a LoRA job never imports them (skip_unused_imports)
    assert seen["gpu"]["physical_id"] == "3" and seen["gpu"]["slot"] == 0 and seen["gpu"]["slots_per_device"] == 2
    assert (tmp_path / "locks").is_dir()


@pytest.mark.slow
def test_gpu_jobs_share_the_cores_and_run_side_by_side(tiny_bert, tmp_path):
    """`--cores 2 --resources gpu=2`: each model job gets one core (rules/common.smk, model_job_threads),
    so two training jobs run at once. With every job asking for all cores, Snakemake ran them one after
    the other whatever `gpu` allowed: a 4-GPU machine trained one cell at a time."""
    from conftest import newcomer_study, run_snakemake, write_config
    from peftgrid.jobs.common import read_job_times

    config = newcomer_study(tiny_bert, tmp_path)
    config["experiments"][0]["methods"] = ["full", "lora"]
    write_config(tmp_path / "config.yaml", config)
    proc = run_snakemake(tmp_path, "--until", "train")  # --cores 2 --resources gpu=2
    spans = []
    for log in sorted((tmp_path / "logs").glob("results/runs/**/train.log")):
        wall = float(read_job_times(log)[-1]["wall_s"])  # the job's last line (run_job)
        run_json = tmp_path / log.parent.relative_to(tmp_path / "logs") / "run.json"
        end = run_json.stat().st_mtime
        spans.append((end - wall, end))
        assert json.loads(run_json.read_text())["device"] == "cpu:1threads"
    assert len(spans) == 2, proc.stderr[-3000:]
    (start_a, end_a), (start_b, end_b) = spans
    assert min(end_a, end_b) > max(start_a, start_b), f"the two training jobs ran one after the other: {spans}"

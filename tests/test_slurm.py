"""The slurm profile on a real one-node SLURM cluster on localhost (../shared/tools/slurm).
.ci/run starts the cluster; without one (no sinfo, or it does not answer) this test is skipped,
except in CI (CI=true), where it fails."""
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import REPO, require, run_snakemake, write_config
from test_workflow import read_summary, study

pytestmark = pytest.mark.slow


def slurm_is_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=20)
    return proc.returncode == 0 and "up" in proc.stdout


def test_tiny_study_through_the_slurm_profile(tiny_bert, tmp_path):
    require(slurm_is_up(), "no SLURM cluster answers here (.ci/run starts one)")
    config = study(tiny_bert)
    config["experiments"] = [{"tasks": ["emotion"], "methods": ["none", "lora"]}]
    write_config(tmp_path / "config.yaml", config)
    # the shipped profile, sized down for a one-node test cluster (partition debug, 2 CPUs)
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    profile["default-resources"].update(slurm_partition="debug", mem_mb=2000, cpus_per_task=1, runtime=15)
    for rule in profile["set-resources"].values():
        rule.update(mem_mb=2000, cpus_per_task=1, runtime=15)
    profile.update({"jobs": 2, "latency-wait": 5, "seconds-between-status-checks": 5,
                    "slurm-init-seconds-before-status-checks": 5, "retries": 0})
    (tmp_path / "profile").mkdir()
    write_config(tmp_path / "profile" / "config.yaml", profile)
    proc = run_snakemake(tmp_path, "--profile", str(tmp_path / "profile"), timeout=900)
    output = proc.stdout + proc.stderr
    # every train / evaluate job (2 cells) and the task's weight_distances job went through sbatch
    # (staging and reports stay local)
    assert len(re.findall(r"submitted with SLURM jobid", output)) == 5, output[-3000:]
    rows = read_summary(tmp_path)
    assert {(r["method"], r["status"]) for r in rows} == {("none", "ok"), ("lora", "ok")}

"""Every job's log ends with its time split into timed work and overhead (issue: per-job overhead);
benchmarks/bench_workflow.py tabulates those lines per rule."""
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest

from conftest import REPO

from peftgrid.jobs.common import JOB_TIME_PREFIX, process_age, run_job

sys.path.insert(0, str(REPO / "benchmarks"))
from bench_workflow import job_time_table, job_times  # noqa: E402


def parse(line: str) -> dict:
    assert line.startswith(JOB_TIME_PREFIX), line
    return dict(f.split("=", 1) for f in line[len(JOB_TIME_PREFIX):].split())


def test_process_age_counts_from_the_start_of_the_interpreter():
    code = "import time; time.sleep(0.8); from peftgrid.jobs.common import process_age; print(process_age())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert 0.8 <= float(out.stdout) < 10


def fake_job(tmp_path, rule="train"):
    log = tmp_path / "logs" / rule / "job.log"
    log.parent.mkdir(parents=True)
    return SimpleNamespace(log=[str(log)], rule=rule, params=SimpleNamespace()), log  # as Snakemake passes it


def test_the_log_ends_with_wall_time_split_into_timed_work_and_overhead(tmp_path, monkeypatch):
    monkeypatch.setattr("peftgrid.jobs.common.process_age", lambda: 1.5)  # start-up and imports before main

    def main(smk):
        time.sleep(0.5)
        return 0.2  # the job timed 0.2 s of its 0.5 s as work

    smk, log = fake_job(tmp_path)
    run_job(main, smk)
    fields = parse(log.read_text().splitlines()[-1])
    assert fields["rule"] == "train"
    assert float(fields["before_main_s"]) == 1.5
    assert float(fields["work_s"]) == 0.2
    assert 1.99 <= float(fields["wall_s"]) < 3.4  # 1.5 + 0.5, with room for a loaded machine; counting the 1.5 twice: 3.5
    assert float(fields["overhead_s"]) == pytest.approx(float(fields["wall_s"]) - 0.2, abs=0.011)


def test_a_job_that_times_nothing_counts_all_of_main_as_work_and_a_failed_one_still_logs(tmp_path, monkeypatch):
    monkeypatch.setattr("peftgrid.jobs.common.process_age", lambda: 1.0)
    smk, log = fake_job(tmp_path, "report")
    run_job(lambda smk: time.sleep(0.3), smk)
    fields = parse(log.read_text().splitlines()[-1])
    assert float(fields["work_s"]) >= 0.3 and float(fields["overhead_s"]) == pytest.approx(1.0, abs=0.011)

    def broken(smk):
        raise RuntimeError("boom")

    smk, log = fake_job(tmp_path / "x", "summary")
    with pytest.raises(RuntimeError):
        run_job(broken, smk)
    assert parse(log.read_text().splitlines()[-1])["rule"] == "summary"


def test_the_benchmark_tabulates_the_lines_per_rule(tmp_path):
    for i, (rule, wall, work) in enumerate([("train", 10.0, 7.0), ("train", 12.0, 8.0), ("train", 30.0, 20.0),
                                            ("summary", 2.0, 1.5)]):
        log = tmp_path / "logs" / f"{i}.log"
        log.parent.mkdir(exist_ok=True)
        log.write_text(f"some output\n{JOB_TIME_PREFIX} rule={rule} wall_s={wall} work_s={work} "
                       f"overhead_s={wall - work} before_main_s=1.0\n")
    by_rule = job_times(tmp_path)
    assert sorted(by_rule) == ["summary", "train"] and len(by_rule["train"]) == 3
    table = job_time_table(by_rule)
    # medians 12 / 8 / 4 and the largest overhead 10
    assert "| train | 3 | 12.00 | 8.00 | 4.00 | 10.00 | 1.00 |" in table
    assert "| summary | 1 | 2.00 | 1.50 | 0.50 | 0.50 | 1.00 |" in table


SKIP_CHECK = r"""
import importlib.util, json, sys
from peftgrid.jobs.common import skip_unused_imports
from peftgrid.methods import method_of
skip_unused_imports(method_of(sys.argv[1]).libraries)
method_of(sys.argv[1]).import_libraries()   # transformers' Auto classes and peft, as the jobs import them
import torch
from peft import LoraConfig, get_peft_model
from transformers import BertConfig, BertForSequenceClassification
model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                 num_attention_heads=2, intermediate_size=16))
model = get_peft_model(model, LoraConfig(r=2, target_modules=["query", "value"]))
model(input_ids=torch.tensor([[1, 2, 3]])).logits.sum().backward()
print(json.dumps({n: (n in sys.modules and sys.modules[n] is not None) for n in ("sklearn", "bitsandbytes")}))
"""


@pytest.mark.parametrize("kind,imported", [("lora", {"sklearn": False, "bitsandbytes": False}),
                                           ("full", {"sklearn": False, "bitsandbytes": False}),
                                           ("qlora", {"sklearn": False, "bitsandbytes": True})])
def test_a_job_skips_the_optional_imports_its_method_does_not_use(kind, imported):
    """transformers imports scikit-learn and peft imports bitsandbytes whenever they are installed;
    a job process skips both (~1.5 s of start-up), except bitsandbytes for a quantised method, and
    peft still builds and trains a LoRA model."""
    import importlib.util
    import json

    for name in ("sklearn", "bitsandbytes"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed: nothing to skip")
    out = subprocess.run([sys.executable, "-c", SKIP_CHECK, kind], capture_output=True, text=True, cwd=REPO,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == imported

"""No model code ever runs, and no job waits on stdin: every transformers loader gets
trust_remote_code=False. A model folder whose config and tokenizer name code of their own
(`auto_map`, a model type transformers does not ship) is refused at once by each of our loaders —
left unset, transformers asks on stdin for 15 s before refusing (the job here keeps stdin open, as a
batch job's may be), and a "y" there would run the folder's code."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

PROMPT_SECONDS = 15  # transformers' TIME_OUT_REMOTE_CODE

# each of our loaders, on a folder with code of its own; prints the seconds the load took
LOADERS = {
    "training tokenizer (jobs.train)": """
from peftgrid.jobs.train import train_cell
from peftgrid.plan.specs import TrainSpec
spec = TrainSpec.from_params(json.loads(sys.argv[2]))
train_cell(spec, folder, {"emo": Path(sys.argv[3])}, Path(sys.argv[4]))
""",
    "evaluation tokenizer (jobs.evaluate)": """
import torch
from peftgrid.jobs.evaluate import load_eval_model
from peftgrid.plan.specs import EvalSpec
(folder.parent / "trained").mkdir()
(folder.parent / "trained" / "tokenizer").symlink_to(folder)
spec = EvalSpec.from_params(json.loads(sys.argv[5]))
load_eval_model(spec, folder, folder.parent / "trained", ["a", "b"], torch.device("cpu"))
""",
    "task model (tasks.base)": """
from peftgrid.tasks import task_type
task_type("sequence_classification").load_pretrained(folder, ["a", "b"], False)
""",
    "probe encoder (methods.native)": """
import torch
from peftgrid.methods import method_of
from peftgrid.tasks import task_type
method_of("linear_probe").load_base(folder, task_type("sequence_classification"), ["a", "b"], {"head": {}},
                                    torch.device("cpu"), False)
""",
}
RUNNER = """
import json, sys, time
from pathlib import Path
import transformers, peft  # imports before the clock
folder = Path(sys.argv[1])
t0 = time.perf_counter()
try:
{body}
finally:
    print(f"LOAD_SECONDS {{time.perf_counter() - t0:.2f}}", flush=True)
"""


def own_code_folder(tiny_bert, out):
    """The tiny BERT whose config and tokenizer point at code of their own (never written: it must
    not be needed to refuse the folder)."""
    shutil.copytree(tiny_bert, out)
    config = json.loads((out / "config.json").read_text())
    config.update(model_type="peftgrid_custom", architectures=["CustomModel"],
                  auto_map={"AutoConfig": "configuration_custom.CustomConfig",
                            "AutoModel": "modeling_custom.CustomModel",
                            "AutoModelForSequenceClassification": "modeling_custom.CustomForSequenceClassification"})
    (out / "config.json").write_text(json.dumps(config))
    tok = json.loads((out / "tokenizer_config.json").read_text())
    tok.update(tokenizer_class="CustomTokenizer", auto_map={"AutoTokenizer": ["tokenization_custom.CustomTokenizer", None]})
    (out / "tokenizer_config.json").write_text(json.dumps(tok))
    (out / "staged.json").write_text(json.dumps({"name": "custom"}))  # as staging leaves it (no sizes: not checked)
    return out


@pytest.mark.parametrize("loader", list(LOADERS))
def test_a_model_with_its_own_code_is_refused_at_once(tiny_bert, tmp_path, loader):
    from test_training import cell_spec, study

    from peftgrid.plan.specs import eval_spec

    from conftest import stage_emotion

    folder = own_code_folder(tiny_bert, tmp_path / "custom")
    data = stage_emotion(tmp_path / "emo", "train", "validation") if loader.startswith("training") else tmp_path
    spec = json.dumps(cell_spec(tiny_bert, "lora").to_params())
    evaluation = json.dumps(eval_spec(*study(tiny_bert, "lora"), "validation").to_params())
    body = "\n".join("    " + line for line in LOADERS[loader].strip().splitlines())
    t0 = time.perf_counter()
    with open(tmp_path / "stdout", "w") as stdout, open(tmp_path / "stderr", "w") as stderr:
        # stdin an open pipe nobody writes to (communicate() would close it): a prompt would wait on it
        proc = subprocess.Popen([sys.executable, "-c", RUNNER.format(body=body), str(folder), spec, str(data),
                                 str(tmp_path / "out"), evaluation], stdin=subprocess.PIPE, stdout=stdout,
                                stderr=stderr, env={**os.environ, "PEFTGRID_DEVICE": "cpu"})
        try:
            proc.wait(timeout=PROMPT_SECONDS * 8)
        finally:
            proc.kill()
            proc.stdin.close()
    out, err = (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text()
    assert proc.returncode != 0, f"{loader} loaded a model with code of its own"
    assert "trust_remote_code" in err, err[-2000:]
    load_seconds = float(out.split("LOAD_SECONDS")[1].split()[0])
    assert load_seconds < PROMPT_SECONDS / 2, f"{loader}: {load_seconds:.1f} s (waited on stdin?)"
    assert time.perf_counter() - t0 < PROMPT_SECONDS * 6

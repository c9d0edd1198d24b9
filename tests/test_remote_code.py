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

import pytest

PROMPT_SECONDS = 15  # transformers' TIME_OUT_REMOTE_CODE

# each of our loaders, given a folder with code of its own
LOADERS = {
    "training tokenizer (jobs.train)": """
from peftgrid.jobs.train import train_cell
from peftgrid.plan.specs import TrainSpec
spec = TrainSpec.from_params(json.loads(sys.argv[3]))
train_cell(spec, folder, {"emo": Path(sys.argv[4])}, Path(sys.argv[5]))
""",
    "evaluation tokenizer (jobs.evaluate)": """
import torch
from peftgrid.jobs.evaluate import load_eval_model
from peftgrid.plan.specs import EvalSpec
(folder.parent / "trained").mkdir()
(folder.parent / "trained" / "tokenizer").symlink_to(folder)
spec = EvalSpec.from_params(json.loads(sys.argv[6]))
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
# runs every loader in one process (one import of torch and transformers), each timed on its own:
# "RESULT\t<loader>\t<seconds>\t<the error on one line, or 'loaded'>" per line
RUNNER = """
import json, sys, time
from pathlib import Path
import transformers, peft  # imports before the clocks
folder = Path(sys.argv[1])
for name, body in json.loads(sys.argv[2]).items():
    t0 = time.perf_counter()
    try:
        exec(body)
        outcome = "loaded"
    except Exception as e:
        outcome = f"{type(e).__name__}: {' '.join(str(e).split())}"
    print()  # a prompt's text, if any, ends its line
    print(f"RESULT\t{name}\t{time.perf_counter() - t0:.2f}\t{outcome}", flush=True)
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


def test_a_model_with_its_own_code_is_refused_at_once(tiny_bert, tmp_path):
    from test_training import cell_spec, study

    from conftest import stage_emotion
    from peftgrid.plan.specs import eval_spec

    folder = own_code_folder(tiny_bert, tmp_path / "custom")
    args = [json.dumps(LOADERS), json.dumps(cell_spec(tiny_bert, "lora").to_params()),
            str(stage_emotion(tmp_path / "emo", "train", "validation")), str(tmp_path / "out"),
            json.dumps(eval_spec(*study(tiny_bert, "lora"), "validation").to_params())]
    with open(tmp_path / "stdout", "w") as stdout:
        # stdin an open pipe nobody writes to (communicate() would close it): a prompt would wait on it
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(folder), *args], stdin=subprocess.PIPE,
                                stdout=stdout, stderr=subprocess.DEVNULL, env={**os.environ, "PEFTGRID_DEVICE": "cpu"})
        try:
            proc.wait(timeout=PROMPT_SECONDS * (len(LOADERS) + 4))
        finally:
            proc.kill()
            proc.stdin.close()
    lines = [line.split("\t")[1:] for line in (tmp_path / "stdout").read_text().splitlines() if line.startswith("RESULT\t")]
    results = {name: (float(seconds), outcome) for name, seconds, outcome in lines}
    assert proc.returncode == 0 and set(results) == set(LOADERS), results
    wrong = {loader: f"{seconds:.1f} s: {outcome[:200]}" for loader, (seconds, outcome) in results.items()
             if "trust_remote_code" not in outcome or seconds >= PROMPT_SECONDS / 2}  # loaded, or waited on stdin
    assert not wrong, wrong


def test_staging_refuses_a_model_with_its_own_code_in_one_line(tiny_bert, tmp_path):
    from peftgrid.errors import ModelError
    from peftgrid.staging.models import stage_model

    folder = own_code_folder(tiny_bert, tmp_path / "custom")
    with pytest.raises(ModelError) as err:
        stage_model("custom", {"source": str(folder)}, tmp_path / "staged")
    message = str(err.value)
    assert "\n" not in message and message.startswith("models.custom.source")
    assert "config.json and tokenizer_config.json" in message and "trust_remote_code" in message
    assert not (tmp_path / "staged").exists() and not (tmp_path / "staged.staging").exists()
    # a type transformers ships, with a leftover auto_map: staged, and loaded with transformers' classes
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "model_type": "bert", "architectures": ["BertModel"]}))
    (folder / "tokenizer_config.json").write_text((tiny_bert / "tokenizer_config.json").read_text())
    assert stage_model("custom", {"source": str(folder)}, tmp_path / "staged")["kind"] == "local"

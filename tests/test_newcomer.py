"""Studies written the way a new user writes them from the README (conftest.newcomer_study): each
either plans, or stops at parse time with one line naming the key — and no job starts.

The table runs what the Snakefile runs at parse time (peftgrid.plan.plan_study) in-process; real
Snakemake runs check that the same line reaches the console and that a valid study plans. The study
itself runs end to end, with the README's command, in tests/test_readme_commands.py."""
import pytest

from conftest import newcomer_study, run_snakemake, shared, write_config
from peftgrid.errors import ConfigError
from peftgrid.plan import plan_study


def pos_task(c):
    c["datasets"]["ewt"] = {"format": "conllu", "splits": {"train": str(shared("ud_english_ewt", "en_ewt-ud-train.conllu")),
                                                           "validation": str(shared("ud_english_ewt", "en_ewt-ud-dev.conllu"))}}
    c["tasks"]["pos"] = {"type": "token_classification", "model": "tiny", "dataset": "ewt",
                         "columns": {"tokens": "form", "tags": "upos"},
                         "eval": {"en_dev": {"split": "validation"}}, "max_examples": {"train": 32, "validation": 16}}
    c["experiments"] = [{"tasks": ["pos"], "methods": ["none", "lora"]}]


def edit(**changes):
    def apply(c):
        for path, value in changes.items():
            node = c
            *head, last = path.split("__")
            for key in head:
                node = node[key] if not key.isdigit() else node[int(key)]
            if value is DELETE:
                del node[last]
            else:
                node[last] = value
    return apply


DELETE = object()

# (id, edit of the base config, None when it must plan, else the key the one error line names)
CASES = [
    ("no methods section", lambda c: None, None),
    ("partial methods section", edit(methods={"lora": {"r": 4}, "full": {"lr": 1.0e-4}}), None),
    ("new named variant", edit(methods={"dora_qv": {"kind": "dora", "target_modules": ["query", "value"]}},
                               experiments=[{"tasks": ["emotion"], "methods": ["lora", "dora_qv", "vera"]}]), None),
    ("any peft method", edit(methods={"my_loha": {"kind": "peft", "peft_type": "LOHA", "r": 4, "alpha": 8,
                                                  "target_modules": ["query", "value"]}},
                             experiments=[{"tasks": ["emotion"], "methods": ["my_loha"]}]), None),
    ("max_examples by split names", edit(tasks__emotion__max_examples={"train": 64, "validation": 16, "test": 16}), None),
    ("CoNLL-U field names", pos_task, None),
    ("typo in a method name", edit(experiments=[{"tasks": ["emotion"], "methods": ["none", "lorra"]}]),
     "unknown method 'lorra' — did you mean 'lora'?"),
    ("typo in a peft field", edit(methods={"lora": {"rank": 4}}), "methods.lora.rank: LoraConfig has no field 'rank'"),
    ("missing local file", edit(datasets__emotion__splits__test="data/tset.txt"),
     "datasets.emotion.splits.test: data/tset.txt: no such file"),
    ("missing model folder", edit(models={"tiny": {"source": "./models/bert"}}), "models.tiny.source"),
    ("unknown max_examples key", edit(tasks__emotion__max_examples={"training": 64}),
     "tasks.emotion.max_examples.training: neither a split this task reads nor an eval set"),
    ("prompt tuning on a token task", lambda c: (pos_task(c), c["experiments"][0].update(methods=["prompt_tuning"])),
     "method 'prompt_tuning' cannot train task 'pos'"),
    ("exponent without a dot", edit(methods={"lora": {"lr": "1e-4"}}), "is a string, not a number"),
]


@pytest.mark.parametrize("name,change,error", CASES, ids=[c[0] for c in CASES])
def test_newcomer_config(tiny_bert, tmp_path, monkeypatch, name, change, error):
    config = newcomer_study(tiny_bert, tmp_path)
    change(config)
    monkeypatch.chdir(tmp_path)  # relative paths start at the working directory, as under snakemake -d
    if error is None:
        _, cells = plan_study(config, ".")
        assert cells and all(c.hparams["lr"] > 0 for c in cells)
    else:
        with pytest.raises(ConfigError) as err:
            plan_study(config, ".")
        assert error in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["partial methods section", "typo in a method name"])
def test_snakemake_plans_or_prints_the_one_line(tiny_bert, tmp_path, name):
    _, change, error = next(c for c in CASES if c[0] == name)
    config = newcomer_study(tiny_bert, tmp_path)
    change(config)
    write_config(tmp_path / "config.yaml", config)
    proc = run_snakemake(tmp_path, "-n", check=False)
    output = proc.stdout + proc.stderr
    if error is None:
        assert proc.returncode == 0, output[-3000:]
        assert "train" in output and "check_data" in output
    else:
        assert proc.returncode != 0
        lines = [l for l in output.splitlines() if "config error" in l]
        assert len(lines) == 1 and error in lines[0], output[-3000:]
        assert "Traceback" not in output
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


@pytest.mark.slow
def test_hub_id_offline_stops_at_staging_with_one_line_and_nothing_trains(tiny_bert, tmp_path):
    config = newcomer_study(tiny_bert, tmp_path)
    config["models"]["tiny"] = {"source": "google-bert/bert-base-uncased"}
    write_config(tmp_path / "config.yaml", config)
    proc = run_snakemake(tmp_path, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ("ModelError: models.tiny.source: cannot download 'google-bert/bert-base-uncased' from the Hugging Face "
            "Hub") in output
    assert "models.tiny.source at a local folder" in output
    assert not (tmp_path / "results" / "runs").exists()

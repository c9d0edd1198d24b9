"""Configs a newcomer writes from the README, each with the outcome it must have (tests/configs/*.yaml,
first lines `# <what the user did>` and `# expect: <outcome>`):

- `config error: <text>` — the workflow stops at parse time with one line containing <text> (` ... `
  stands for any text: an absolute path);
- `plans <n> cells` — it plans that many cells;
- `same cells as <file>` — a value that is coerced (32.0 -> 32, sep: '\\t' -> a tab) plans exactly the
  cells of the clean twin <file>.

The table runs what the Snakefile runs at parse time, in-process (load_config_file refuses a key
written twice, as the Snakefile's re-read does; plan_study validates, checks paths and peeks at the
data); a few real `snakemake -n` runs check what only Snakemake shows. Relative paths start at
tests/configs, as a user's start at their working directory."""
import copy
import json
import shutil
from pathlib import Path

import pytest

from conftest import run_snakemake
from peftgrid.errors import ConfigError
from peftgrid.plan import plan_study
from peftgrid.plan.config import load_config_file

CONFIGS = Path(__file__).resolve().parent / "configs"
CASES = sorted(p.name for p in CONFIGS.glob("*.yaml"))


def expectation(name: str) -> str:
    line = (CONFIGS / name).read_text().splitlines()[1]
    assert line.startswith("# expect: "), f"{name}: the second line says what must happen"
    return line[len("# expect: "):]


def contains(message: str, expect: str) -> bool:
    """`expect`'s parts, split at ' ... ', appear in `message` in order."""
    at = 0
    for part in expect.split(" ... "):
        at = message.find(part, at)
        if at < 0:
            return False
        at += len(part)
    return True


def as_json(cells, config) -> str:
    return json.dumps([[(c.key, c.hparams) for c in cells], config["datasets"], config["tasks"]], sort_keys=True)


def plan(name: str):
    return plan_study(load_config_file(CONFIGS / name), CONFIGS)


def test_the_set_covers_every_category():
    outcomes = [expectation(n).split(":")[0].split(" ")[0] for n in CASES]
    assert len(CASES) >= 40 and outcomes.count("config") >= 30
    assert outcomes.count("same") >= 5 and outcomes.count("plans") >= 5


@pytest.mark.parametrize("name", CASES)
def test_config_outcome(name):
    expect = expectation(name)
    if expect.startswith("config error: "):
        with pytest.raises(ConfigError) as err:
            plan(name)
        message = f"config error: {err.value}"  # as the Snakefile prints it
        assert contains(message, expect), message
        assert "\n" not in message
    elif expect.startswith("plans "):
        _, cells = plan(name)
        assert len(cells) == int(expect.split()[1]), [c.dir for c in cells]
    else:
        # as JSON, where 8.0 is not 8: the cells and what the jobs read of the datasets and tasks
        config, cells = plan(name)
        clean_config, clean = plan(expect.removeprefix("same cells as "))
        assert cells and as_json(cells, config) == as_json(clean, clean_config)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["duplicate_nested_key.yaml", "task_named_ranks.yaml", "decoding_name_with_equals.yaml",
                                  "column_typo.yaml"])
def test_snakemake_prints_the_one_line(tmp_path, name):
    """Through Snakemake: the Snakefile re-reads the config file for keys written twice, and every
    refusal is one `config error:` line, no traceback, no job."""
    shutil.copytree(CONFIGS, tmp_path, dirs_exist_ok=True)
    shutil.copy(tmp_path / name, tmp_path / "config.yaml")
    proc = run_snakemake(tmp_path, "-n", check=False, timeout=300)
    output = proc.stdout + proc.stderr
    expect = expectation(name).replace(name, "config.yaml")
    lines = [line for line in output.splitlines() if "config error" in line]
    assert proc.returncode != 0 and len(lines) == 1 and contains(lines[0], expect), output[-3000:]
    assert "Traceback" not in output and "Exception" not in output
    assert not (tmp_path / "results").exists() and not (tmp_path / "resources").exists()


WRONG_VALUES = [None, "x", 3, 2.5, -1, 0, [], {}, True, ["a", "a"], {"a": 1}, "1e-4", "a/b", 2.0, "", "train"]


def test_no_wrong_value_anywhere_gives_a_traceback():
    """Every key of a study (a tuned sweep, a named variant, labels, report settings) replaced by
    each of WRONG_VALUES, or deleted: it plans, or stops with one ConfigError line — never another
    exception (an AttributeError or TypeError is a traceback naming no key)."""
    config = load_config_file(CONFIGS / "base.yaml")
    config["tasks"]["emotion"].update(labels=["joy", "sadness", "anger"], max_examples={"train": 6})
    config["methods"] = {"lora": {"r": 4, "target_modules": ["query", "value"]}, "my_dora": {"kind": "dora"}}
    config["experiments"][0].update(sweep={"lora": {"r": [2, 4]}}, tune={"full": {"lr": "auto"}})
    config["report"] = {"quality_metric": {"emotion": "accuracy"}, "within_points": 1.0}
    plan_study(config, CONFIGS)  # the control: as written, it plans

    def paths(node, prefix=()):
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
        for key, value in items:
            yield prefix + (key,)
            yield from paths(value, prefix + (key,))

    tried = 0
    for path in paths(config):
        for value in WRONG_VALUES + [DELETE]:
            changed = copy.deepcopy(config)
            node = changed
            for key in path[:-1]:
                node = node[key]
            if value is DELETE:
                del node[path[-1]]
            else:
                node[path[-1]] = copy.deepcopy(value)
            try:
                plan_study(changed, CONFIGS)
            except ConfigError as err:
                assert "\n" not in str(err), (path, value)
            tried += 1
    assert tried > 800


DELETE = object()

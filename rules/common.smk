# The run table, wildcard constraints and input functions shared by all rules.
import json
import re

from peftgrid.config import task_params

CELL_BY_KEY = {(c.task, c.method, c.variant, int(c.seed)): c for c in CELLS}


wildcard_constraints:
    task=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    method=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    variant=r"[A-Za-z0-9_.+=-]+",
    seed=r"\d+",
    eval=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    decoding=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    dataset=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",
    model=r"[A-Za-z0-9][A-Za-z0-9_.+-]*",


RUN_DIR = "results/runs/{task}/{method}/{variant}/seed{seed}"


def cell_of(wildcards):
    key = (wildcards.task, wildcards.method, wildcards.variant, int(wildcards.seed))
    if key not in CELL_BY_KEY:
        raise WorkflowError(f"no cell {'/'.join(map(str, key))} in the config's experiments")
    return CELL_BY_KEY[key]


def staged_model(name):
    return f"resources/models/{name}/staged.json"


def staged_dataset(name):
    return f"resources/datasets/{name}/meta.json"


def train_datasets(task):
    """The datasets training reads: the task's own and its validation set's."""
    t = config["tasks"][task]
    names = [t["dataset"]]
    if t["validation"] is not None:
        names.append(t["eval"][t["validation"]]["dataset"])
    return sorted(set(names))


def train_params(wildcards):
    """Exactly what this cell's training depends on, as one sorted dict."""
    cell = cell_of(wildcards)
    t = config["tasks"][cell.task]
    model = config["models"][t["model"]]
    return {
        "cell": {"task": cell.task, "method": cell.method, "variant": cell.variant, "seed": cell.seed},
        "hparams": cell.hparams,
        "model": {"name": t["model"], "allow_pickle": model["allow_pickle"]},
        "task": task_params(config, cell.task),
    }


def eval_params(wildcards):
    params = train_params(wildcards)
    t = config["tasks"][wildcards.task]
    ev = t["eval"][wildcards.eval]
    params["eval"] = {"name": wildcards.eval, **ev}
    params["task"] = {**params["task"], "metrics": t["metrics"],
                      "max_examples": {wildcards.eval: t["max_examples"].get(wildcards.eval)}}
    params["task"].pop("validation", None)
    return json.loads(json.dumps(params, sort_keys=True))


GENERATION = ("seq2seq", "causal_lm")


def is_generation(task):
    return config["tasks"][task]["type"] in GENERATION


def generation_params(wildcards):
    """A generation job's params: the evaluation's, plus its decoding strategy."""
    params = eval_params(wildcards)
    t = config["tasks"][wildcards.task]
    params["task"]["metrics"] = [m for m in t["metrics"] if m != "comet"]  # COMET has its own rule
    params["decoding"] = {"name": wildcards.decoding, "settings": t["decoding"][wildcards.decoding]}
    params["max_new_tokens"] = t["max_new_tokens"]
    return json.loads(json.dumps(params, sort_keys=True))


def uses_comet(task):
    return "comet" in config["tasks"][task]["metrics"] and config.get("comet") is not None


def cell_eval_outputs(cell):
    t = config["tasks"][cell.task]
    if t["type"] in GENERATION:
        return [f"{cell.dir}/eval/{e}/{d}/metrics.tsv" for e in t["eval"] for d in t["decoding"]]
    return [f"{cell.dir}/eval/{name}/metrics.tsv" for name in t["eval"]]


def all_metrics():
    return [path for cell in CELLS for path in cell_eval_outputs(cell)]


def all_comet():
    return [p.replace("metrics.tsv", "comet.tsv") for cell in CELLS if uses_comet(cell.task)
            for p in cell_eval_outputs(cell)]


TASKS_IN_STUDY = sorted({c.task for c in CELLS})
# report file names end in the task name (<task>.md, <task>_qualitative.md): only a real task matches
TASK_PATTERN = "|".join(re.escape(t) for t in TASKS_IN_STUDY) or "(?!)"


def report_params(task):
    """What a task's report reads from the config: its eval sets, metrics and the report settings."""
    t = config["tasks"][task]
    return json.loads(json.dumps(
        {"task": task, "eval": list(t["eval"]), "metrics": t["metrics"], "transfer": t.get("transfer"),
         "report": config["report"]}, sort_keys=True))

# Choosing fairly (peftgrid/plan/tune.py): every choice is made on the task's unreported selection
# set among runs at the experiment's selection seed (`select.seed`), which no table reports.
# - Tuned (task, method, sweep variant): its grid trains at the selection seed, each point is
#   scored on the selection set, and the `select` checkpoint picks the winner; the aggregates then
#   ask for the winner at every reported seed, so that stage is planned from the checkpoint's file.
# - Every (task, method) with a choice (a tune grid, an untuned sweep, several decodings): rule
#   `choose` picks its (variant, decoding) among its selection-seed runs -> results/choices/, which
#   the report reads. Grid cells are directories keyed by variant (lr=0.0005): an unchanged grid
#   point is reused when the grid is edited, and a winner that does not change keeps its seeds.
# - A staged group (`strategy: halving`, or `extend` past an lr: auto grid's edge) is selected stage
#   by stage (rules/halving.smk); `select` then reads its stage files, and `choose` its groups' winners.
from peftgrid.plan import build_tune_groups
from peftgrid.plan.runs import build_choices
from peftgrid.plan.tune import CHOICE_FILE, SELECTION_FILE

TUNE_GROUPS = build_tune_groups(config)
GROUP_BY_KEY = {g.key: g for g in TUNE_GROUPS}
TUNED_TASKS = sorted({g.task for g in TUNE_GROUPS})
CHOICES = build_choices(config)
CHOICE_BY_KEY = {c.key: c for c in CHOICES}


wildcard_constraints:
    group=VARIANT_PATTERN,  # a group is named as its sweep variant (plan/runs.py variant_name)


localrules:
    select,
    choose,


def tune_group(wildcards):
    key = (wildcards.task, wildcards.method, wildcards.group)
    if key not in GROUP_BY_KEY:
        raise WorkflowError(f"no tuned {'/'.join(key)} in the config's experiments")
    return GROUP_BY_KEY[key]


def method_choice(wildcards):
    key = (wildcards.task, wildcards.method)
    if key not in CHOICE_BY_KEY:
        raise WorkflowError(f"no choice for {'/'.join(key)} in the config's experiments")
    return CHOICE_BY_KEY[key]


def run_dir_of(choice):
    """variant, seed -> that run's directory, for a group's or a choice's (task, method)."""
    return lambda variant, seed: RUN_DIR.format(task=choice.task, method=choice.method, variant=variant, seed=seed)


checkpoint select:
    input:
        # a staged group (halving, extension; rules/halving.smk): its stage files, in order
        scores=lambda w: stage_files(tune_group(w)) if tune_group(w).staged else tune_group(w).score_files(
            run_dir_of(tune_group(w))),
        # a plain grid: its points' run.json (the validation loss that breaks equal scores)
        runs=lambda w: [] if tune_group(w).staged else tune_group(w).run_files(
            run_dir_of(tune_group(w)), tune_group(w).candidates),
    output:
        SELECTION_FILE,
    params:
        spec=lambda w: specs.select_spec(tune_group(w)).to_params(),
    log:
        "logs/tune/{task}/{method}/{group}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/select.py"


rule choose:
    input:
        scores=lambda w: method_choice(w).score_files(run_dir_of(method_choice(w))),
        runs=lambda w: method_choice(w).run_files(run_dir_of(method_choice(w))),
    output:
        CHOICE_FILE,
    params:
        spec=lambda w: specs.choose_spec(method_choice(w)).to_params(),
    log:
        "logs/choices/{task}/{method}.log",
    conda:
        "../envs/report.yaml"
    script:
        "../scripts/choose.py"


def selection_files(task):
    """Every tuned group's selection.tsv of a task, as plain paths: listing them as ordinary inputs
    schedules all first stages at once (the checkpoints are then resolved one by one)."""
    return [g.selection_file for g in TUNE_GROUPS if g.task == task]


def choice_files(task):
    """Every (task, method) choice file of a task (report/tuning.py read_choices reads them)."""
    return [c.file for c in CHOICES if c.task == task]


def untuned_outputs():
    """The reported untuned cells' evaluations and every choice as plain targets of `rule all`: they
    run beside the tuning grids instead of waiting for the aggregates to see past the checkpoints."""
    if not TUNE_GROUPS:
        return []
    return [m for c in CELLS if not c.tuned and not c.selecting for m in cell_eval_outputs(c)] + [c.file for c in CHOICES]

"""The tuning checkpoint: pick one (task, method, sweep variant)'s grid point on the selection set."""
from peftgrid.jobs.common import run_job
from peftgrid.jobs.select import select, select_staged
from peftgrid.plan.specs import SelectSpec
from peftgrid.plan.tune import TuneGroup


def main(smk):
    spec = SelectSpec.from_params(smk.params.spec)
    # a staged group (halving, extension: plan/tune.py) reads its stage files, a plain grid its points' scores and runs
    if TuneGroup.from_params(spec.group).staged:
        row = select_staged(spec.group, list(smk.input.scores), smk.output[0])
    else:
        row = select(spec.group, list(smk.input.scores), smk.output[0], list(smk.input.runs))
    print(f"selected {row['variant']} ({row['metric']} {row['score']} on {row['on']}; "
          f"{row['finished']} of {len(spec.group['candidates'])} grid points finished)")


run_job(main, snakemake, offline=False)  # noqa: F821

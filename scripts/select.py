"""The tuning checkpoint: pick one (task, method, sweep variant)'s grid point on the selection set."""
from peftgrid.jobs.common import run_job
from peftgrid.jobs.select import select
from peftgrid.plan.specs import SelectSpec


def main(smk):
    spec = SelectSpec.from_params(smk.params.spec)
    row = select(spec.group, list(smk.input.scores), smk.output[0])
    print(f"selected {row['variant']} ({row['metric']} {row['score']} on {row['on']}; "
          f"{row['finished']} of {len(spec.group['candidates'])} grid points finished)")


run_job(main, snakemake, offline=False)  # noqa: F821

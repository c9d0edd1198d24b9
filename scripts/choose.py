"""One (task, method)'s (variant, decoding), chosen on the selection set at the selection seed."""
from peftgrid.jobs.common import run_job
from peftgrid.jobs.select import choose
from peftgrid.plan.specs import ChooseSpec


def main(smk):
    spec = ChooseSpec.from_params(smk.params.spec)
    row = choose(spec.choice, list(smk.input.scores), smk.output[0], list(smk.input.runs))
    print(f"chose {row['variant']}{' ' + row['decoding'] if row['decoding'] else ''} ({row['metric']} {row['score']} "
          f"on {row['on']} at seed {row['seed']}; {row['finished']} of {len(smk.input.scores)} runs finished)")


run_job(main, snakemake, offline=False)  # noqa: F821

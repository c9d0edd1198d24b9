"""One stage of a staged tuning group: score its competitors at the stage's rung, say who goes on."""
from peftgrid.jobs.common import run_job
from peftgrid.jobs.select import stage
from peftgrid.plan.specs import StageSpec


def main(smk):
    spec = StageSpec.from_params(smk.params.spec)
    rows = stage(spec.group, spec.stage, spec.competitors, list(smk.input.scores), smk.output[0],
                 list(smk.input.runs))
    # each with what ranked it (an extension point has not trained yet)
    going = [r["variant"] + ("" if r["status"] == "extension" else f" (score {r['score']}, validation loss {r['val_loss']})")
             for r in rows if r["advance"]]
    print(f"stage {spec.stage}: {len(spec.competitors)} points, going on: {', '.join(going) or 'none'}")
    for note in sorted({part for r in rows if r["note"] for part in r["note"].split("; ")}):
        print(f"note: {note}")  # min_steps covering the run, the extension limit


run_job(main, snakemake, offline=False)  # noqa: F821

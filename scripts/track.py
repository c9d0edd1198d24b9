"""Export every finished cell to MLflow (runs, params, metrics, loss curves, run.json); record the run ids."""
from peftgrid.jobs.common import run_job
from peftgrid.jobs.track import export_study
from peftgrid.plan.specs import TrackSpec


def main(smk):
    spec = TrackSpec.from_params(smk.params.spec)
    record = export_study(spec, smk.input.summary, list(smk.input.runs), list(smk.input.logs), smk.output[0])
    done = sum(r["action"] == "exported" for r in record["runs"])
    print(f"{len(record['runs'])} cells in MLflow experiment {record['experiment']!r} at {record['tracking_uri']} "
          f"({done} exported, {len(record['runs']) - done} unchanged)")


run_job(main, snakemake, offline=False)  # noqa: F821

"""One task's tables, recommendations and figures."""
from pathlib import Path

from peftgrid.jobs import run_job
from peftgrid.report import build_task_report


def cell_label(path: str) -> str:
    # results/runs/<task>/<method>/<variant>/seed<seed>/<file>
    _, _, _, method, variant, seed = Path(path).parent.parts[-6:]
    return f"{method}" + ("" if variant == "default" else f" {variant}") + f" {seed}"


def main(smk):
    s = smk.params.settings
    task_cfg = {"eval": {e: {} for e in s["eval"]}, "metrics": s["metrics"], "transfer": s.get("transfer")}
    logs = {cell_label(p): Path(p) for p in smk.input.logs}
    distances = {cell_label(p): Path(p) for p in smk.input.distances}
    out = {name: Path(getattr(smk.output, name)) for name in
           ("table", "table_md", "recommendations", "transfer", "learning_curves", "pareto", "distances",
            "sweep")}
    build_task_report(s["task"], smk.input.summary, logs, distances, task_cfg, s["report"], out)


run_job(main, snakemake, offline=False)  # noqa: F821

"""A generation task's qualitative table and sentence-score distributions."""
from pathlib import Path

from peftgrid.analysis import primary_eval
from peftgrid.jobs import run_job
from peftgrid.report import build_generation_report


def key_of(path: str) -> tuple[str, str, str]:
    # results/runs/<task>/<method>/<variant>/seed<seed>/eval/<eval>/<decoding>/predictions.jsonl
    method, variant, seed, _, eval_name, decoding = Path(path).parent.parts[-6:]
    cell = method + ("" if variant == "default" else f" {variant}") + f" {seed}"
    return cell, eval_name, decoding


def main(smk):
    s = smk.params.settings
    predictions = {key_of(p): Path(p) for p in smk.input.predictions}
    eval_name = primary_eval({"eval": {e: {} for e in s["eval"]}}, s["report"], s["task"])
    out = {name: Path(getattr(smk.output, name)) for name in ("qualitative", "sentence_bleu", "sentence_chrf")}
    build_generation_report(s["task"], predictions, eval_name, out)


run_job(main, snakemake, offline=False)  # noqa: F821

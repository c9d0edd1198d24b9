"""Evaluate one cell on one eval set (generation: with one decoding strategy) -> metrics.tsv + predictions.jsonl."""
from pathlib import Path

from peftgrid.engine.gpus import claim_gpu
from peftgrid.jobs.common import run_job, skip_unused_imports
from peftgrid.methods import method_of
from peftgrid.plan.specs import EvalSpec

TIMED = ("eval_load_time_s", "infer_time_s", "infer_time_unmerged_s")


def main(smk):
    # a GPU slot of our own, before torch is imported (CUDA reads CUDA_VISIBLE_DEVICES once, at its start)
    gpu = claim_gpu(smk.resources.get("gpu_slots_per_device", 1))
    spec = EvalSpec.from_params(smk.params.spec)
    skip_unused_imports(method_of(spec.hparams["kind"]).libraries)
    from peftgrid.jobs.evaluate import evaluate_cell

    per_label = Path(smk.output.per_label) if hasattr(smk.output, "per_label") else None
    row = evaluate_cell(spec, Path(smk.input.model).parent, Path(smk.input.trained),
                        Path(smk.input.dataset).parent, Path(smk.input.run), Path(smk.output.metrics),
                        Path(smk.output.predictions), per_label, gpu=gpu)
    print({k: v for k, v in row.items() if k not in ("task", "method", "variant", "seed")})
    return sum(row.get(k) or 0.0 for k in TIMED)  # the work this job timed (see run_job)


run_job(main, snakemake)  # noqa: F821

"""COMET for one task: every cell's predictions scored with one model load -> scores.tsv + examples.tsv."""
from pathlib import Path

from peftgrid.engine.gpus import claim_gpu
from peftgrid.jobs.common import run_job


def main(smk):
    # a GPU slot of our own, before torch is imported (CUDA reads CUDA_VISIBLE_DEVICES once, at its start)
    gpu = claim_gpu(smk.resources.get("gpu_slots_per_device", 1))
    from peftgrid.jobs.comet import score_task
    from peftgrid.plan.specs import CometSpec

    print(f"GPU claim: {gpu.record()}")
    scores = Path(smk.output.scores)
    print(score_task(CometSpec.from_params(smk.params.spec), Path(smk.input.comet), scores, Path(smk.output.examples),
                     cache_dir=scores.parent.parent / "cache"))


run_job(main, snakemake)  # noqa: F821

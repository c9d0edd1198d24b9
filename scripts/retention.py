"""Retention (issue 20): rule retention_base scores the pretrained model on a retention set once;
rule retention scores one cell on it against that reference (peftgrid/jobs/retention.py)."""
from pathlib import Path

from peftgrid.engine.gpus import claim_gpu
from peftgrid.jobs.common import run_job, skip_unused_imports
from peftgrid.methods import method_of
from peftgrid.plan.specs import RetentionBaseSpec, RetentionSpec


def main(smk):
    # a GPU slot of our own, before torch is imported (CUDA reads CUDA_VISIBLE_DEVICES once, at its start)
    claim_gpu(smk.resources.get("gpu_slots_per_device", 1))
    if smk.rule == "retention_base":
        from peftgrid.jobs.retention import measure_base

        spec = RetentionBaseSpec.from_params(smk.params.spec)
        row = measure_base(spec, Path(smk.input.model).parent, Path(smk.input.dataset).parent,
                           Path(smk.output.metrics).parent)
    else:
        spec = RetentionSpec.from_params(smk.params.spec)
        skip_unused_imports(method_of(spec.hparams["kind"]).libraries)
        from peftgrid.jobs.retention import measure_cell

        out = {k: Path(smk.output[k]) for k in ("metrics", "per_document", "per_layer")}
        row = measure_cell(spec, Path(smk.input.model).parent, Path(smk.input.trained), Path(smk.input.dataset).parent,
                           Path(smk.input.run), Path(smk.input.base_metrics).parent, out)
    print(row)
    return row.get("retention_time_s") or 0.0  # the work this job timed (see run_job)


run_job(main, snakemake)  # noqa: F821

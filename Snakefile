# peftgrid: a PEFT study as a Snakemake workflow. See README.md and config.yaml.
import sys

sys.path.insert(0, workflow.basedir)  # the peftgrid package lives beside this file

from peftgrid.errors import ConfigError
from peftgrid.plan import plan_study
from peftgrid.plan.config import check_config_files

# `--configfile other.yaml` replaces config.yaml instead of being merged into it
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


try:
    check_config_files(workflow.configfiles)  # a key written twice: YAML keeps the last silently
    config, CELLS = plan_study(config)
except ConfigError as err:
    raise WorkflowError(f"config error: {err}") from None


include: "rules/common.smk"
include: "rules/assets.smk"
include: "rules/train.smk"
include: "rules/tune.smk"
include: "rules/evaluate.smk"
include: "rules/retention.smk"
include: "rules/halving.smk"
include: "rules/analysis.smk"
include: "rules/report.smk"
include: "rules/track.smk"


report: "report/workflow.rst"


rule all:
    input:
        SUMMARY_FILE,
        REPORT_FILE,
        specs.tracking_targets(config),  # results/tracking.json when `tracking:` is set
        untuned_outputs(),  # with tune: the untuned cells start beside the grids (rules/tune.smk)
        all_retention_outputs,  # every reported cell on every retention set (rules/retention.smk)
    default_target: True

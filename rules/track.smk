# Experiment tracking (optional): after the summary, export every finished cell to MLflow. Its own
# local rule, which nothing else reads, so tracking can never break training, and editing the
# `tracking:` section re-runs this rule only (its params hold the tracking settings and the cells).

if config.get("tracking") is not None:

    localrules:
        track,

    rule track:
        input:
            summary="results/summary.tsv",
            # in the order of spec.cells: the job pairs them by position, never by path
            runs=[f"{c.dir}/run.json" for c in CELLS],
            logs=[f"{c.dir}/train_log.tsv" for c in CELLS],
        output:
            specs.TRACKING_RECORD,
        params:
            spec=specs.track_spec(config, CELLS).to_params(),
        log:
            "logs/track.log",
        conda:
            "../envs/report.yaml"
        script:
            "../scripts/track.py"

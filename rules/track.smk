# Experiment tracking (optional): after the summary, export every finished cell to MLflow. Its own
# local rule, which nothing else reads, so tracking can never break training, and editing the
# `tracking:` section re-runs this rule only (its params hold the tracking settings and the cells).

if config.get("tracking") is not None:

    localrules:
        track,

    rule track:
        input:
            summary=SUMMARY_FILE,
            # in the order of spec.cells: the job pairs them by position, never by path (tuned: the reported cells)
            runs=lambda w: [f"{c.dir}/{RUN_FILE}" for c in reported()],
            logs=lambda w: [f"{c.dir}/{TRAIN_LOG_FILE}" for c in reported()],
        output:
            specs.TRACKING_RECORD,
        params:
            spec=lambda w: specs.track_spec(config, reported()).to_params(),
        log:
            "logs/track.log",
        conda:
            "../envs/report.yaml"
        script:
            "../scripts/track.py"

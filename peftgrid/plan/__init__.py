"""The planning layer: config validation, the run table, the run-directory pattern and the
typed job specs. Imports no torch: the Snakefile and every rule import only this layer."""
from .config import canonical, load_schema, training_defaults, training_keys, validate_config
from .runs import RUN_DIR, Cell, build_run_table, build_tune_groups, reported_cells, variant_name
from .tune import TuneGroup, auto_lr_grid, choose_best, read_selection


def plan_study(raw: dict, base_dir=".") -> tuple[dict, list[Cell]]:
    """What the Snakefile does at parse time: validate the config, check every local path it names,
    check the local data files it can read quickly (columns, labels) and expand the run table.
    Raises one ConfigError line naming the key."""
    from .paths import check_local_data, check_local_paths

    config = validate_config(raw)
    check_local_paths(config, base_dir)
    check_local_data(config, base_dir)
    return config, build_run_table(config)

__all__ = ["canonical", "load_schema", "training_defaults", "training_keys", "validate_config", "RUN_DIR", "Cell",
           "build_run_table", "variant_name", "plan_study", "build_tune_groups", "reported_cells",
           "TuneGroup", "auto_lr_grid", "choose_best", "read_selection"]

"""The planning layer: config validation, the run table, the run-directory pattern and the
typed job specs. Imports no torch: the Snakefile and every rule import only this layer."""
from .config import canonical, load_schema, training_defaults, training_keys, validate_config
from .runs import RUN_DIR, Cell, build_run_table, variant_name

__all__ = ["canonical", "load_schema", "training_defaults", "training_keys", "validate_config", "RUN_DIR", "Cell",
           "build_run_table", "variant_name"]

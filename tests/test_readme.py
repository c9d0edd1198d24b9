"""The README stays true where it can be checked mechanically."""
from conftest import REPO


def test_readme_preset_table_is_the_registry():
    from peftgrid.methods import PRESETS, preset_table

    readme = (REPO / "README.md").read_text()
    assert preset_table() in readme, "regenerate the table: python -c 'from peftgrid.methods import preset_table; print(preset_table())'"
    assert all(f"| `{name}` |" in readme for name in PRESETS if name != "peft")


def test_readme_defines_the_cost_columns_as_the_code_measures_them():
    """The cost-column definitions beside the column list name what the code records: each
    mem_measure value, and the inference protocol's repeats and subset size."""
    from peftgrid.engine.device import MEM_MEASURE
    from peftgrid.jobs.evaluate import TIMED_BATCHES, TIMED_REPEATS

    readme = (REPO / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in MEM_MEASURE.values())
    assert f"then {TIMED_REPEATS} timed passes over an evenly spaced subset of at most {TIMED_BATCHES} eval batches" \
        in " ".join(readme.split())

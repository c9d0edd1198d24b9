"""The README stays true where it can be checked mechanically."""
from conftest import REPO


def test_readme_preset_table_is_the_registry():
    from peftgrid.methods import PRESETS, preset_table

    readme = (REPO / "README.md").read_text()
    assert preset_table() in readme, "regenerate the table: python -c 'from peftgrid.methods import preset_table; print(preset_table())'"
    assert all(f"| `{name}` |" in readme for name in PRESETS if name != "peft")

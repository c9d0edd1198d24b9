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


def test_each_fact_in_the_code_layout_table_has_one_definition():
    """"Where each fact lives": every name the table gives a home is defined (at module level) in
    that home and nowhere else under peftgrid/ (a second `def first_line` or `reference_streams`,
    as there once were three and two, fails here)."""
    import re

    section = (REPO / "README.md").read_text().split("### Where each fact lives", 1)[1].split("\n#", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # the header row left out
    checked = 0
    for row in rows:
        home = row.split("|")[2]
        module = re.match(r"\s*`(peftgrid/[\w/.]*)`", home)
        if module is None:
            continue  # pyproject.toml
        where = REPO / module.group(1)
        for name in re.findall(r"`(\w+)`", home):
            pattern = re.compile(rf"^(?:def {name}\(|class {name}\b|{name}\s*[:=])", re.M)
            homes = [f for f in (REPO / "peftgrid").rglob("*.py") if pattern.search(f.read_text())]
            assert len(homes) == 1 and (homes[0] == where or where in homes[0].parents), (
                f"{name}: defined in {[str(h.relative_to(REPO)) for h in homes]}; the README says {module.group(1)}")
            checked += 1
    assert checked >= 20

"""Every `snakemake` command the README shows runs as written, in a finished tiny study.

The study directory looks like the user's checkout (the repository's files linked in, ../shared
beside it for the offline CPU config) with the study a new user writes (conftest.newcomer_study:
data and config.yaml of its own, relative paths), run to the end once with the README's first
command as a newcomer types it — the one end-to-end run of that study. Then each command, read from the README (code blocks and inline code; `<task>`-style placeholders filled with
the study's cell), runs there as written: for real when it starts no job (the report, --unlock, or
nothing left to do), else as a dry run (-n) — the CPU studies, a forced rerun, the SLURM profile."""
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import REPO, SHARED_DATA, newcomer_study, require

pytestmark = pytest.mark.slow

# the repository's files a study directory needs (everything but the study's own outputs and config)
NOT_LINKED = {"config.yaml", "results", "resources", "logs", ".snakemake", ".git", "report.html"}
PLACEHOLDER = re.compile(r"<(task|method|variant|seed)>")


def readme_commands() -> list[str]:
    """The README's snakemake commands: lines of its code blocks and inline code spans, comments
    dropped; an elided one (`snakemake ... --flag`) is not a command. Placeholders stay (`fill`)."""
    text = (REPO / "README.md").read_text()
    found, in_block = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            in_block = not in_block
        elif in_block:
            found.append(line.split("#")[0].strip())
        else:
            found += re.findall(r"`(snakemake [^`]+)`", line)
    commands = []
    for cmd in found:
        if not cmd.startswith("snakemake ") or "..." in cmd:
            continue
        if cmd not in commands:
            commands.append(cmd)
    return commands


def fill(command: str, study) -> str:
    """`<task>`, `<method>`, `<variant>`, `<seed>` from the study's LoRA cell, as its run folder names them."""
    (run,) = (study / "results" / "runs").glob("emotion/lora/*/seed*/run.json")
    cell = dict(zip(("task", "method", "variant", "seed"), run.relative_to(study / "results" / "runs").parts))
    cell["seed"] = cell["seed"].removeprefix("seed")
    return PLACEHOLDER.sub(lambda m: cell[m.group(1)], command)


def snakemake(study, command: str, *extra: str, timeout: int = 300) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "snakemake", *command.split()[1:], *extra]
    env = {**os.environ, "PEFTGRID_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    return subprocess.run(args, cwd=study, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def first_run(tiny_bert, tmp_path_factory) -> tuple:
    """(the study folder, the console output of its first run)."""
    root = tmp_path_factory.mktemp("readme")
    require(SHARED_DATA.is_dir(), f"{SHARED_DATA} not found")
    (root / "shared").symlink_to(SHARED_DATA.parent)  # ../shared/data, as beside the repository
    study = root / "study"
    study.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in NOT_LINKED and not entry.name.startswith("."):
            (study / entry.name).symlink_to(entry)
    config = newcomer_study(tiny_bert, study)
    config["methods"] = {"lora": {"r": 4}}  # a partial methods section: the rest keep their presets
    (study / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    proc = snakemake(study, "snakemake --cores 2 --resources gpu=1", timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return study, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def finished_study(first_run):
    return first_run[0]


def test_the_newcomers_study_runs_end_to_end(first_run):
    study, console = first_run
    summary = (study / "results" / "summary.tsv").read_text().splitlines()
    assert len(summary) == 1 + 4 * 2  # 4 methods x 2 eval sets
    assert (study / "results" / "report" / "report.md").is_file()
    # the comparison table is printed to the console when the run ends
    assert "emotion — accuracy on test" in console
    train_log = (study / "logs" / "results" / "runs" / "emotion" / "lora" / "default" / "seed42" / "train.log").read_text()
    assert "step 4/4" in train_log and "ex/s" in train_log and "ETA" in train_log


def starts_no_job(command: str) -> bool:
    return "--report" in command or "--unlock" in command


def test_the_readme_shows_the_commands_this_test_runs():
    commands = readme_commands()
    assert "snakemake --report report.html" in commands
    assert any("--profile profiles/slurm" in c for c in commands) and any("--unlock" in c for c in commands)
    assert all(PLACEHOLDER.sub("", c).count("<") == 0 for c in commands), commands  # no placeholder unfilled


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_runs_as_written(finished_study, command):
    command = fill(command, finished_study)
    if "--sdm conda" in command:
        if shutil.which("conda") is None and shutil.which("mamba") is None:
            # conda is an optional route (README: envs/*.yaml), not one of CI's required pieces
            pytest.skip(f"{command!r} needs conda, which this machine does not have")
    if starts_no_job(command):
        proc = snakemake(finished_study, command)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        if "--report" in command:
            html = finished_study / command.split("--report")[1].split()[0]
            assert html.stat().st_size > 100_000 and "pareto.png" in html.read_text(errors="replace")  # figures packed in
        return
    dry = snakemake(finished_study, command, "-n")
    assert dry.returncode == 0, f"{command} -n:\n{dry.stdout[-2000:]}\n{dry.stderr[-3000:]}"
    if "Nothing to be done" in dry.stdout + dry.stderr:  # starts no job: run it for real
        proc = snakemake(finished_study, command)
        assert proc.returncode == 0, f"{command}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"

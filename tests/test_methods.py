"""Every built-in method preset on tiny in-process models, for every task type it can train:
sequence and token classification on a tiny BERT, causal LM on a tiny GPT-2, seq2seq on a tiny T5.

For each (preset, task type) pair the registry accepts: the loss falls over a few optimizer steps,
exactly the trainable parameters move, the parameter count is the model's real count (and, for a
few presets, a hand formula), and save -> load gives back the same logits. Pairs the registry
refuses are skipped with its reason; qlora (bitsandbytes 4-bit) runs only where CUDA exists.
"""
from __future__ import annotations

import copy
import shutil

import pytest
import torch

from peftgrid.engine.batching import collate
from peftgrid.errors import CellFailure, MethodError
from peftgrid.methods import PRESETS, method_of, preset_defaults
from peftgrid.plan.config import training_defaults
from peftgrid.tasks import task_type

CPU = torch.device("cpu")
TASK_TYPES = ("sequence_classification", "token_classification", "causal_lm", "seq2seq")
KINDS = [k for k in PRESETS if k not in ("peft", "none", "qlora")]  # `none` trains nothing: tested below

LABELS = ["anger", "joy", "sadness"]
TEXTS = ["i feel angry and furious", "i am so happy today", "i feel sad and lonely", "what a joyful day",
         "this makes me mad", "i cried all night"]
GOLD = ["anger", "joy", "sadness", "joy", "anger", "sadness"]
SEQ_TASK = {"type": "sequence_classification", "columns": {"text": "text", "label": "label"}}
SEQ_ROWS = [{"text": t, "label": g} for t, g in zip(TEXTS, GOLD)]

TAGS = ["ADJ", "DET", "NOUN", "PRON", "VERB"]
TOKEN_TASK = {"type": "token_classification", "columns": {"tokens": "tokens", "tags": "tags"}}
TOKEN_ROWS = [
    {"tokens": ["i", "feel", "happy"], "tags": ["PRON", "VERB", "ADJ"]},
    {"tokens": ["the", "day", "was", "joyful"], "tags": ["DET", "NOUN", "VERB", "ADJ"]},
    {"tokens": ["she", "cried", "all", "night"], "tags": ["PRON", "VERB", "DET", "NOUN"]},
    {"tokens": ["this", "makes", "me", "mad"], "tags": ["DET", "VERB", "PRON", "ADJ"]},
]

PAIRS = [("good morning", "доброе утро"), ("thank you very much", "большое спасибо"),
         ("the house is big", "дом большой"), ("i love music", "я люблю музыку")]
GEN_ROWS = [{"en": en, "ru": ru} for en, ru in PAIRS]


def gen_task(kind: str) -> dict:
    return {"type": kind, "columns": {"source": "en", "target": "ru"}, "prompt": "{source} =>", "max_new_tokens": 8}


# task type -> (model fixture, task entry, rows, labels)
SETUPS = {
    "sequence_classification": ("tiny_bert", SEQ_TASK, SEQ_ROWS, LABELS),
    "token_classification": ("tiny_bert", TOKEN_TASK, TOKEN_ROWS, TAGS),
    "causal_lm": ("wide_gpt2", gen_task("causal_lm"), GEN_ROWS, []),
    "seq2seq": ("tiny_t5", gen_task("seq2seq"), GEN_ROWS, []),
}
# peft's LoHa, LoKr, OFT and BOFT layers wrap nn.Linear only, not GPT-2's Conv1D (a model limit, not
# a task-type one): on GPT-2 they stop with one line (tested below) and train the causal-LM task on a
# tiny Llama instead
LINEAR_ONLY = {"loha", "lokr", "oft", "boft"}

# small settings for tiny models (hidden size 32); the hand formulas below assume them
SMALL = {
    "lora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "dora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "rslora": {"r": 4, "alpha": 8, "dropout": 0.0},
    "pissa": {"r": 4, "alpha": 8},
    "lora_plus": {"r": 4, "alpha": 8, "dropout": 0.0},
    "adalora": {"init_r": 6, "target_r": 4, "dropout": 0.0},
    "loha": {"r": 4, "alpha": 8},
    "lokr": {"r": 4, "alpha": 8},
    "vera": {"r": 16},
    "prompt_tuning": {"num_virtual_tokens": 4},
    "p_tuning": {"num_virtual_tokens": 4, "encoder_hidden_size": 16},
    "prefix_tuning": {"num_virtual_tokens": 4},
    # a random tiny encoder gives nearly the same [CLS] vector for every input; the token mean differs
    "linear_probe": {"head": {"hidden": [16], "dropout": 0.0, "pooling": "mean", "activation": "gelu"}},
}
# a moderate learning rate per preset (default 5e-3): the loss must fall visibly within STEPS steps
LR = {"full": 1e-3, "bitfit": 1e-2, "linear_probe": 1e-2, "adalora": 1e-2, "prompt_tuning": 1e-1, "p_tuning": 3e-2,
      "prefix_tuning": 3e-2, "vera": 3e-2, "fourierft": 3e-2, "ia3": 3e-2, "ln_tuning": 3e-2}
STEPS = 20
# the loss after STEPS steps on one fixed batch, as a share of the first: six labelled sentences are
# fitted quickly; a 800-token vocabulary from a random model falls slowly (prompt methods least)
FALLS_TO = {"sequence_classification": 0.7, "token_classification": 0.7, "causal_lm": 0.96, "seq2seq": 0.96}
TRAINING = training_defaults()
SESSION_THREADS = torch.get_num_threads()  # the session's (tests/conftest.py: a core per xdist worker)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine the thread
    pool's spin-waiting makes every step several times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wide_gpt2(tiny_gpt2, tmp_path_factory):
    """The tiny GPT-2 re-initialised wide (std 0.2, as conftest's tiny BERT): at GPT-2's 0.02 its
    tied output embeddings give a nearly uniform next-token distribution that adapters can hardly move."""
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("wide_gpt2")
    copy_tokenizer(tiny_gpt2, out)
    cfg = AutoConfig.from_pretrained(tiny_gpt2)
    cfg.initializer_range = 0.2
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def tiny_llama(tiny_gpt2, tmp_path_factory):
    """A tiny Llama (nn.Linear projections) with the tiny GPT-2's tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_llama")
    copy_tokenizer(tiny_gpt2, out)
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    return out


def copy_tokenizer(src, dst):
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "vocab", "special", "merges")):
            shutil.copy(f, dst / f.name)


def hparams(kind: str, **extra) -> dict:
    hp = {**TRAINING, **preset_defaults(kind), "kind": kind, **copy.deepcopy(SMALL.get(kind, {}))}
    hp.update(lr=LR.get(kind, 5e-3), weight_decay=0.0)  # no decay: a parameter without gradient must not move
    hp.update(extra)
    return hp


def settings_of(hp: dict) -> dict:
    return {k: v for k, v in hp.items() if k not in TRAINING}


def model_dir(request, kind: str, ttype_name: str):
    name = "tiny_llama" if ttype_name == "causal_lm" and kind in LINEAR_ONLY else SETUPS[ttype_name][0]
    return request.getfixturevalue(name)


def make_batch(mdir, ttype_name: str, rows=None) -> dict:
    from transformers import AutoTokenizer

    ttype = task_type(ttype_name)
    _, task, default_rows, labels = SETUPS[ttype_name]
    tok = ttype.prepare_tokenizer(AutoTokenizer.from_pretrained(mdir))
    examples = ttype.encode(copy.deepcopy(task), rows or default_rows, tok, labels, 64)
    return collate(examples, tok.pad_token_id if tok.pad_token_id is not None else 0)


def build(mdir, ttype_name: str, hp: dict, total_steps: int = STEPS, labels=None):
    torch.manual_seed(0)
    ttype = task_type(ttype_name)
    method = method_of(hp["kind"])
    model, new = method.load_base(mdir, ttype, SETUPS[ttype_name][3] if labels is None else labels, hp, CPU, False)
    model = method.prepare(model, hp, ttype, total_steps, new)
    return method, model, new


def train(method, model, hp, batch, steps: int = STEPS) -> list[float]:
    optimizer = method.make_optimizer(model, hp)
    model.eval()  # no dropout: the loss curve is deterministic, so "it went down" means learning
    losses = []
    for step in range(1, steps + 1):
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        method.after_step(model, step)  # AdaLoRA reallocates ranks here (it reads the gradients)
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses))), losses
    return losses


def logits(model, batch, ttype_name: str) -> torch.Tensor:
    """The model's logits on the batch, without labels (a reloaded AdaLoRA model, in inference
    mode, cannot add its training-time regulariser to a loss)."""
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    if ttype_name == "seq2seq":  # teacher forcing: the decoder reads the target shifted right
        labels = batch["labels"].masked_fill(batch["labels"] == -100, 0)
        inputs["decoder_input_ids"] = torch.cat([torch.zeros_like(labels[:, :1]), labels[:, :-1]], 1)
    model.eval()
    with torch.no_grad():
        return model(**inputs).logits.float()


def trainable_count(model) -> int:
    """Independent of Method.count_parameters: the elements of every tensor that gets a gradient."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def reload(method, mdir, ttype_name, hp, model, new, out, labels=None):
    method.save(model, hp, out, new)
    assert (out / "method.json").is_file()
    if hp["kind"] == "full":  # a fully fine-tuned model directory carries its own tokenizer
        copy_tokenizer(mdir, out)
    torch.manual_seed(123)  # a different init of any new weight must not leak into the reloaded model
    labels = SETUPS[ttype_name][3] if labels is None else labels
    return method.load(mdir, out, task_type(ttype_name), labels, hp, CPU, False)


def assert_only_trainable_moved(model, start, frozen):
    pruned = []
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), f"{n} is frozen but changed"
        elif "ranknum" in n:
            continue  # AdaLoRA's rank budget: set by AdaLoRA, not learned
        elif "lora_E" in n and not p.any():
            pruned.append(n)  # AdaLoRA pruned every rank of this update (E starts at zero)
        else:
            assert not torch.equal(p, start[n]), f"{n} is trainable but did not change"
    assert len(pruned) < sum("lora_E" in n for n in start) or not pruned, "AdaLoRA pruned every rank"


# ---------------------------------------------------------------------------------- the matrix

PAIRS_ALL = [(k, t) for k in KINDS for t in TASK_TYPES]


@pytest.mark.parametrize("kind,ttype_name", PAIRS_ALL, ids=[f"{k}-{t}" for k, t in PAIRS_ALL])
def test_preset_trains_counts_and_round_trips(request, tmp_path, kind, ttype_name):
    method = method_of(kind)
    hp = hparams(kind)
    reason = method.refusal(settings_of(hp), ttype_name)
    if reason is not None:
        assert reason.strip() and "\n" not in reason
        pytest.skip(f"{kind} x {ttype_name} refused by the registry: {reason}")
    mdir = model_dir(request, kind, ttype_name)
    if kind == "bitfit" and ttype_name == "seq2seq":
        # T5 has no bias terms at all: BitFit cannot train it (a model limit, not a task-type one)
        with pytest.raises(MethodError, match="no bias terms") as err:
            build(mdir, ttype_name, hp)
        assert "\n" not in str(err.value)
        return
    method, model, new = build(mdir, ttype_name, hp)
    batch = make_batch(mdir, ttype_name)

    # (3) the parameter count is the model's real one
    trainable, total = method.count_parameters(model)
    assert trainable == trainable_count(model) > 0
    assert total == sum(p.numel() for p in model.parameters())
    assert (trainable == total) == (kind == "full")

    # (1) the loss falls; (2) exactly the trainable parameters move
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    losses = train(method, model, hp, batch)
    assert losses[-1] < FALLS_TO[ttype_name] * losses[0], f"{kind} x {ttype_name}: {losses}"
    assert_only_trainable_moved(model, start, frozen)

    # (4) save -> load gives the same model
    expected = logits(model, batch, ttype_name)
    loaded = reload(method, mdir, ttype_name, hp, model, new, tmp_path / "model")
    assert torch.allclose(logits(loaded, batch, ttype_name), expected, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(LINEAR_ONLY))
def test_linear_only_adapters_on_gpt2_stop_with_one_line(wide_gpt2, kind):
    with pytest.raises(MethodError, match=f"peft cannot apply {kind} to GPT2LMHeadModel") as err:
        build(wide_gpt2, "causal_lm", hparams(kind))
    assert "Conv1D" in str(err.value) and "\n" not in str(err.value)


def expected_trainable(kind, hidden=32, layers=2, ffn=64, num_labels=3):
    """Trainable parameters of the tiny BERT for sequence classification, by hand."""
    head = hidden * num_labels + num_labels  # peft's SEQ_CLS keeps a trainable copy of the classifier
    lora = layers * 2 * 4 * (hidden + hidden)  # query + value, r=4: A (4 x 32) and B (32 x 4)
    biases = layers * (4 * hidden + hidden + ffn + hidden + hidden) + hidden + hidden  # + embeddings LN, pooler
    return {
        "lora": lora + head,
        "dora": lora + layers * 2 * hidden + head,                            # + a magnitude per output row
        "adalora": layers * 2 * (6 * hidden + hidden * 6 + 6) + head,         # A, B and E (init_r=6)
        "ia3": layers * (3 * hidden + ffn) + head,  # key, value, attention.output.dense; output.dense scales its 64 inputs
        "vera": layers * 2 * (hidden + 16) + head,                            # lambda_b (32) and lambda_d (r=16)
        "ln_tuning": (2 * layers + 1) * 2 * hidden + head,                    # a copy of every LayerNorm
        "bitfit": biases + head,
        "prompt_tuning": 4 * hidden + head,
        "p_tuning": 4 * hidden + (hidden * 16 + 16) + (16 * 16 + 16) + (16 * hidden + hidden) + head,  # + MLP encoder
        "prefix_tuning": 4 * layers * 2 * hidden + head,                      # key and value per layer
        "linear_probe": hidden * 16 + 16 + 16 * num_labels + num_labels,
    }[kind]


@pytest.mark.parametrize("kind", ["lora", "dora", "adalora", "ia3", "vera", "ln_tuning", "bitfit", "prompt_tuning",
                                  "p_tuning", "prefix_tuning", "linear_probe"])
def test_trainable_parameters_match_a_hand_formula(tiny_bert, kind):
    method, model, _ = build(tiny_bert, "sequence_classification", hparams(kind))
    trainable, total = method.count_parameters(model)
    assert trainable == trainable_count(model) == expected_trainable(kind)
    if hasattr(model, "get_nb_trainable_parameters") and kind != "adalora":
        assert (trainable, total) == model.get_nb_trainable_parameters()  # peft agrees (it also counts AdaLoRA's ranknum)


def test_lora_plus_learning_rates(tiny_bert):
    """B matrices at lr x ratio, A at lr; the new head's weight and bias both at B's rate (not split
    between A's and B's as peft's 1-D heuristic would)."""
    hp = hparams("lora_plus", lr=1e-3, weight_decay=0.01)
    method, model, _ = build(tiny_bert, "sequence_classification", hp)
    lr_of = {id(p): (g["lr"], g["weight_decay"]) for g in method.make_optimizer(model, hp).param_groups
             for p in g["params"]}
    named = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(lr_of) == {id(p) for p in named.values()}  # every trainable tensor, once
    for n, p in named.items():
        if "lora_A" in n:
            assert lr_of[id(p)] == (1e-3, 0.01), n
        elif "lora_B" in n:
            assert lr_of[id(p)] == (1e-3 * 16, 0.01), n
        else:
            assert "classifier" in n and lr_of[id(p)] == (1e-3 * 16, 0.01 if n.endswith("weight") else 0.0), n


def test_ia3_vectors_move_at_the_preset_learning_rate(tiny_llama):
    """IA3's scaling vectors start at exactly 1.0 and, under Adam, move by about lr per step. At the
    preset's own lr (not this file's LR table) they must leave 1.0 by a clear margin in STEPS steps
    (3e-3 x 20 steps allows up to 0.06); at lr 1e-6 they would stay within 2e-5 of it, and a
    trained cell would generate exactly what the untrained model does."""
    hp = hparams("ia3")
    hp["lr"] = preset_defaults("ia3")["lr"]
    method, model, _ = build(tiny_llama, "causal_lm", hp)
    vectors = {n: p for n, p in model.named_parameters() if "ia3_l" in n}
    assert vectors and all(p.requires_grad and torch.all(p == 1.0) for p in vectors.values())
    losses = train(method, model, hp, make_batch(tiny_llama, "causal_lm"))
    moved = {n: float((p.detach() - 1.0).abs().max()) for n, p in vectors.items()}
    assert max(moved.values()) >= 0.02, moved
    assert sum(m >= 0.01 for m in moved.values()) >= len(moved) / 2, moved  # most vectors, not one
    assert losses[-1] < losses[0], losses


def test_adalora_schedule_is_a_share_of_the_cell_steps(tiny_bert):
    """The preset's tinit / tfinal are shares of the cell's total steps (peft wants step counts): a
    warm-up before any rank is pruned and a final phase with the ranks fixed, whatever the cell's length.
    A step count in the entry wins over the share."""
    from peftgrid.errors import ConfigError
    from peftgrid.tasks import task_type as tt

    method = method_of("adalora")
    defaults = preset_defaults("adalora")
    config = method.peft_config({**defaults, "kind": "adalora"}, tt("sequence_classification"), 141, [])
    assert (config.total_step, config.tinit, config.tfinal) == (141, int(141 * defaults["tinit_ratio"]),
                                                                int(141 * defaults["tfinal_ratio"]))
    assert 0 < config.tinit < config.total_step - config.tfinal < config.total_step
    config = method.peft_config({**defaults, "kind": "adalora", "tinit": 5}, tt("sequence_classification"), 141, [])
    assert config.tinit == 5
    for steps in (1, 2, 3, 7):  # tiny cells still leave peft a budgeting phase
        config = method.peft_config({**defaults, "kind": "adalora"}, tt("sequence_classification"), steps, [])
        assert config.tinit < config.total_step - config.tfinal
    for bad in ({"tinit_ratio": 1.0}, {"tfinal_ratio": -0.1}, {"tinit_ratio": 0.5, "tfinal_ratio": 0.5},
                {"tinit_ratio": "10%"}):
        with pytest.raises(ConfigError, match="ratio"):
            method.validate("methods.adalora", {**settings_of(defaults), **bad})


@pytest.mark.parametrize("kind", ["prompt_tuning", "p_tuning", "prefix_tuning"])
def test_the_prompt_itself_learns(tiny_bert, kind):
    """Control: with the classification head frozen, only the prompt trains, and the loss still falls."""
    method, model, _ = build(tiny_bert, "sequence_classification", hparams(kind))
    head = [p for n, p in model.named_parameters() if "modules_to_save" in n and p.requires_grad]
    assert head, "the head should be trainable by default"
    for p in head:
        p.requires_grad_(False)
    head_before = [p.detach().clone() for p in head]
    prompt = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    assert prompt and all("prompt_encoder" in n for n in prompt)
    losses = train(method, model, hparams(kind), make_batch(tiny_bert, "sequence_classification"))
    assert losses[-1] < 0.9 * losses[0], losses
    assert all(torch.equal(a, b) for a, b in zip(head, head_before))


# ---------------------------------------------------------------------------------- new weights

@pytest.fixture(scope="module")
def bert_without_pooler(tiny_bert, tmp_path_factory):
    """A BERT checkpoint that has no pooler weights: loading it initialises `bert.pooler.dense` afresh."""
    from transformers import BertModel

    out = tmp_path_factory.mktemp("no_pooler")
    encoder = BertModel.from_pretrained(tiny_bert)
    state = {k: v for k, v in encoder.state_dict().items() if not k.startswith("pooler.")}
    encoder.save_pretrained(out, state_dict=state, safe_serialization=True)
    copy_tokenizer(tiny_bert, out)
    return out


@pytest.mark.parametrize("kind", ["lora", "prompt_tuning"])
def test_a_fresh_pooler_trains_and_is_saved(bert_without_pooler, tmp_path, kind):
    hp = hparams(kind)
    method, model, new = build(bert_without_pooler, "sequence_classification", hp)
    assert {"bert.pooler.dense.weight", "bert.pooler.dense.bias"} <= set(new)
    pooler = {n: p.detach().clone() for n, p in model.named_parameters() if "pooler" in n and p.requires_grad}
    assert len(pooler) == 2 and all("modules_to_save" in n for n in pooler), list(pooler)
    batch = make_batch(bert_without_pooler, "sequence_classification")
    train(method, model, hp, batch)
    current = dict(model.named_parameters())
    assert all(not torch.equal(current[n], p) for n, p in pooler.items()), "the new pooler did not train"
    expected = logits(model, batch, "sequence_classification")
    loaded = reload(method, bert_without_pooler, "sequence_classification", hp, model, new, tmp_path / "m")
    assert torch.allclose(logits(loaded, batch, "sequence_classification"), expected, atol=1e-5)


def test_generic_peft_entry_through_the_config_trains(tiny_bert, tmp_path):
    from peftgrid.plan.config import validate_config

    config = validate_config({
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emo": {"format": "csv", "splits": {"train": "x", "test": "y"}}},
        "tasks": {"emo": {"type": "sequence_classification", "model": "tiny", "dataset": "emo",
                          "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "test"}}}},
        "methods": {"my_loha": {"kind": "peft", "peft_type": "LOHA", "r": 4, "alpha": 8,
                                "target_modules": ["query", "value"]}},
        "experiments": [{"tasks": ["emo"], "methods": ["my_loha"]}],
    })
    hp = {**TRAINING, **config["methods"]["my_loha"], "lr": 5e-3, "weight_decay": 0.0}
    assert hp["kind"] == "peft" and hp["peft_type"] == "LOHA"
    method, model, new = build(tiny_bert, "sequence_classification", hp)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("hada_w1_a" in n and "query" in n for n in names) and any("hada_w1_a" in n and "value" in n for n in names)
    assert not any("hada" in n and "key" in n for n in names)
    # LoHa, r=4, on query and value: w1_a, w1_b, w2_a, w2_b (4 x 32 each way) per target, plus the head
    assert method.count_parameters(model)[0] == trainable_count(model) == 2 * 2 * 4 * (4 * 32) + 99
    batch = make_batch(tiny_bert, "sequence_classification")
    start = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    losses = train(method, model, hp, batch)
    assert losses[-1] < 0.7 * losses[0], losses
    assert_only_trainable_moved(model, start, frozen)
    expected = logits(model, batch, "sequence_classification")
    loaded = reload(method, tiny_bert, "sequence_classification", hp, model, new, tmp_path / "m")
    assert torch.allclose(logits(loaded, batch, "sequence_classification"), expected, atol=1e-5)


# ---------------------------------------------------------------------------------- the rest

def test_untrained_baseline_keeps_its_random_head(tiny_bert, tmp_path):
    hp = hparams("none")
    method, model, new = build(tiny_bert, "sequence_classification", hp)
    assert not method.trains(settings_of(hp))
    assert set(new) == {"classifier.weight", "classifier.bias"}  # the tiny BERT ships its pooler
    assert method.count_parameters(model)[0] == 0 == trainable_count(model)
    batch = make_batch(tiny_bert, "sequence_classification")
    expected = logits(model, batch, "sequence_classification")
    loaded = reload(method, tiny_bert, "sequence_classification", hp, model, new, tmp_path / "m")
    assert torch.allclose(logits(loaded, batch, "sequence_classification"), expected)
    # and the reloaded head is the saved one, not a fresh random one
    torch.manual_seed(123)
    fresh, _ = method.load_base(tiny_bert, task_type("sequence_classification"), LABELS, hp, CPU, False)
    assert not torch.allclose(logits(fresh, batch, "sequence_classification"), expected)


def test_linear_probe_pooling(tiny_bert):
    from transformers import AutoModel

    from peftgrid.methods.heads import LinearProbe

    encoder = AutoModel.from_pretrained(tiny_bert)
    data = make_batch(tiny_bert, "sequence_classification")
    probe = LinearProbe(encoder, 3, hidden=(), dropout=0.0, pooling="mean").eval()
    pooled = probe.pool(data["input_ids"], data["attention_mask"])
    hidden = encoder(input_ids=data["input_ids"], attention_mask=data["attention_mask"]).last_hidden_state
    for i in range(len(pooled)):
        n = int(data["attention_mask"][i].sum())
        assert torch.allclose(pooled[i], hidden[i, :n].mean(0), atol=1e-6)  # padding stays out of the mean
    cls = LinearProbe(encoder, 3, hidden=(), dropout=0.0, pooling="cls").eval()
    assert torch.allclose(cls.pool(data["input_ids"], data["attention_mask"]), hidden[:, 0])
    probe.train()
    assert not probe.encoder.training and probe.head.training
    assert not any(p.requires_grad for p in probe.encoder.parameters())


def test_peft_refusal_is_one_line(tiny_bert):
    hp = hparams("lora", target_modules=["no_such_module"])
    with pytest.raises(MethodError, match="peft cannot apply lora to BertForSequenceClassification") as err:
        build(tiny_bert, "sequence_classification", hp)
    assert "\n" not in str(err.value)


def test_peft_config_refusal_is_one_line(tiny_bert):
    hp = hparams("boft", boft_block_size=0, boft_block_num=0)  # BOFTConfig needs exactly one of the two
    with pytest.raises(MethodError, match="methods.boft: BOFTConfig refuses these settings") as err:
        build(tiny_bert, "sequence_classification", hp)
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------- qlora

def test_qlora_without_cuda_is_a_recorded_cell_failure(tiny_bert, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA present: qlora trains (test_qlora_trains_on_cuda)")
    method = method_of("qlora")
    hp = hparams("qlora")
    assert method.needs_cuda(settings_of(hp))
    with pytest.raises(CellFailure) as err:
        method.check_device(hp, CPU)
    assert "CUDA" in str(err.value) and "\n" not in str(err.value)
    method_of("lora").check_device(hparams("lora"), CPU)  # the same adapter over a full-precision base runs anywhere

    # the training job records it as a failed cell (the job itself succeeds)
    from conftest import stage_emotion
    from peftgrid.jobs.train import train_cell
    from peftgrid.plan.config import validate_config
    from peftgrid.plan.runs import build_run_table
    from peftgrid.plan.specs import train_spec
    from peftgrid.staging.models import stage_model

    stage_model("tiny", {"source": str(tiny_bert)}, tmp_path / "tiny")
    emo = stage_emotion(tmp_path / "emo", "train", "test")
    config = validate_config({
        "models": {"tiny": {"source": str(tiny_bert)}},
        "datasets": {"emo": {"format": "csv", "splits": {"train": "x", "test": "y"}}},
        "tasks": {"emo": {"type": "sequence_classification", "model": "tiny", "dataset": "emo",
                          "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "test"}}}},
        "experiments": [{"tasks": ["emo"], "methods": ["qlora"]}],
    })
    (cell,) = build_run_table(config)
    record = train_cell(train_spec(config, cell), tmp_path / "tiny", {"emo": emo}, tmp_path / "cell")
    assert record["status"] == "failed"
    assert "CUDA" in record["error"] and "\n" not in record["error"]
    assert (tmp_path / "cell" / "model" / "FAILED.json").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="qlora needs CUDA (bitsandbytes 4-bit)")
def test_qlora_trains_on_cuda(tiny_bert, tmp_path):
    cuda = torch.device("cuda")
    hp = hparams("qlora", r=4, alpha=8, dropout=0.0)
    method = method_of("qlora")
    torch.manual_seed(0)
    ttype = task_type("sequence_classification")
    model, new = method.load_base(tiny_bert, ttype, LABELS, hp, cuda, False)
    model = method.place(method.prepare(model, hp, ttype, STEPS, new), cuda)
    trainable, total = method.count_parameters(model)
    assert trainable == trainable_count(model) == expected_trainable("lora")
    # total counts each 4-bit weight as the parameters it stands for: the full-precision model's total
    base, _ = ttype.load_pretrained(tiny_bert, LABELS, False)
    assert total == sum(p.numel() for p in base.parameters()) + trainable  # + adapters and the head's copy
    batch = {k: v.to(cuda) for k, v in make_batch(tiny_bert, "sequence_classification").items()}
    losses = train(method, model, hp, batch)
    assert losses[-1] < 0.7 * losses[0], losses
    expected = logits(model, batch, "sequence_classification")
    loaded = method.load(tiny_bert, _save(method, model, hp, new, tmp_path / "m"), ttype, LABELS, hp,
                                       cuda, False)
    assert torch.allclose(logits(loaded, batch, "sequence_classification"), expected, atol=1e-3)


def _save(method, model, hp, new, out):
    method.save(model, hp, out, new)
    return out


# ---------------------------------------------------------------------------------- a real model

# learning rates for 76 steps; lora_plus keeps its preset default (2e-4; B, the head: x16)
REAL = {"none": {}, "dora": {"lr": 2.0e-3}, "pissa": {"lr": 2.0e-3}, "lora_plus": {}, "vera": {"lr": 1.0e-2}}


@pytest.mark.slow
def test_lora_variants_on_minilm_beat_the_untrained_baseline(minilm_dir, tmp_path):
    """DoRA, PiSSA, LoRA+ and VeRA through the real training and evaluation jobs, on MiniLM-L6 and a
    slice of the real emotion data: each must clearly beat the untrained baseline (a random head)."""
    from conftest import stage_emotion
    from peftgrid.jobs.evaluate import evaluate_cell
    from peftgrid.jobs.train import train_cell
    from peftgrid.plan.config import validate_config
    from peftgrid.plan.runs import build_run_table
    from peftgrid.plan.specs import eval_spec, train_spec
    from peftgrid.staging.models import stage_model

    torch.set_num_threads(SESSION_THREADS)  # a 22M-parameter model uses the cores this process has
    stage_model("minilm", {"source": str(minilm_dir)}, tmp_path / "minilm")
    emo = stage_emotion(tmp_path / "emotion", "train", "test")
    config = validate_config({
        "models": {"minilm": {"source": str(minilm_dir)}},
        "datasets": {"emotion": {"format": "csv", "splits": {"train": "x", "test": "y"}}},
        "tasks": {"emotion": {"type": "sequence_classification", "model": "minilm", "dataset": "emotion",
                              "columns": {"text": "text", "label": "label"}, "eval": {"test": {"split": "test"}},
                              "max_examples": {"train": 600, "test": 200}}},
        # eval_batch_size changes no score; it sizes the inference-cost timing (4 batches' worth of the
        # 200 examples, timed 3 times, and again merged): 64 rows instead of all 200
        "training": {"epochs": 2, "batch_size": 16, "max_length": 64, "eval_every_steps": 1000, "eval_batch_size": 16},
        "methods": REAL,
        "experiments": [{"tasks": ["emotion"], "methods": list(REAL)}],
    })
    acc = {}
    for cell in build_run_table(config):
        out = tmp_path / cell.method
        record = train_cell(train_spec(config, cell), tmp_path / "minilm", {"emotion": emo}, out)
        assert record["status"] == "ok", record["error"]
        row = evaluate_cell(eval_spec(config, cell, "test"), tmp_path / "minilm", out / "model", emo,
                            out / "run.json", out / "metrics.tsv", out / "predictions.jsonl")
        acc[cell.method] = row["accuracy"]
    print("MiniLM, 600 emotion examples x 2 epochs, test accuracy on 200:", acc)
    assert acc["none"] < 0.40  # a random head on 6 classes (majority class: 35%)
    for kind in ("dora", "pissa", "lora_plus", "vera"):
        assert acc[kind] >= acc["none"] + 0.15, (kind, acc)

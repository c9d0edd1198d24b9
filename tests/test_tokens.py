"""Token classification: the CoNLL-U loader on the real treebanks, subword alignment, sentence
splitting, unseen tags, and every applicable method on a tiny BERT."""
from types import SimpleNamespace

import pytest
import torch

from conftest import build_tiny_bert, shared
from peftgrid.engine.batching import IGNORE, collate
from peftgrid.errors import ConfigError, DataError
from peftgrid.methods import method_of, preset_defaults
from peftgrid.metrics.classification import classification_metrics, per_label_table
from peftgrid.plan import training_defaults, validate_config
from peftgrid.staging.datasets import read_conllu
from peftgrid.tasks import task_type

COLUMNS = {"tokens": "tokens", "tags": "upos"}
TOKENS = task_type("token_classification")
TASK = {"type": "token_classification", "columns": COLUMNS}


def encode_tokens(rows, tokenizer, labels, max_length):
    return TOKENS.encode(TASK, rows, tokenizer, labels, max_length)
UPOS = ["ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN", "PUNCT",
        "SCONJ", "SYM", "VERB", "X"]


@pytest.fixture(scope="module")
def ewt_train():
    return read_conllu(shared("ud_english_ewt", "en_ewt-ud-train.conllu"))


@pytest.fixture(scope="module")
def tiny_multilingual(tmp_path_factory, ewt_train):
    de = read_conllu(shared("ud_german_gsd", "de_gsd-ud-dev.conllu"))
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_ml"), [r["text"] for r in ewt_train[:3000] + de])


def test_treebank_counts_match_the_published_statistics(ewt_train):
    assert len(ewt_train) == 12544 and sum(len(r["tokens"]) for r in ewt_train) == 204577
    gsd = read_conllu(shared("ud_german_gsd", "de_gsd-ud-test.conllu"))
    assert len(gsd) == 977 and sum(len(r["tokens"]) for r in gsd) == 16499
    assert sorted({t for r in gsd for t in r["upos"]}) == UPOS
    assert sorted({t for r in ewt_train for t in r["upos"]}) == UPOS
    assert all(len(r["tokens"]) == len(r["upos"]) == len(r["xpos"]) for r in ewt_train)
    assert ewt_train[0]["sent_id"].startswith("weblog-juancole.com")


def test_multiword_ranges_and_empty_nodes_are_skipped(tmp_path):
    (tmp_path / "s.conllu").write_text(
        "# sent_id = x1\n# text = I don't know\n"
        "1\tI\tI\tPRON\tPRP\tCase=Nom|Number=Sing\t3\tnsubj\t_\t_\n"
        "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_\n"
        "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
        "3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t_\t_\n"
        "4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_\n\n")
    (row,) = read_conllu(tmp_path / "s.conllu")
    assert row == {"sent_id": "x1", "text": "I don't know", "tokens": ["I", "do", "n't", "know"],
                   "upos": ["PRON", "AUX", "PART", "VERB"], "xpos": ["PRP", "VBP", "RB", "VB"],
                   "lemmas": ["I", "do", "not", "know"], "feats": ["Case=Nom|Number=Sing", "_", "_", "_"],
                   "head": ["3", "4", "4", "0"], "deprel": ["nsubj", "aux", "advmod", "root"]}


def test_first_subword_carries_the_label(minilm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    row = {"tokens": ["Unbelievably", "good", "tokenization"], "upos": ["ADV", "ADJ", "NOUN"]}
    (ex,) = encode_tokens([row], tok, UPOS, 64)
    pieces = tok.convert_ids_to_tokens(ex["input_ids"])
    # hand-checked: [CLS] un ##bel ##ie ##va ##bly good token ##ization [SEP]
    assert pieces == ["[CLS]", "un", "##bel", "##ie", "##va", "##bly", "good", "token", "##ization", "[SEP]"]
    adv, adj, noun = UPOS.index("ADV"), UPOS.index("ADJ"), UPOS.index("NOUN")
    assert ex["labels"] == [IGNORE, adv, IGNORE, IGNORE, IGNORE, IGNORE, adj, noun, IGNORE, IGNORE]
    assert ex["word_positions"] == [1, 6, 7]
    batch = collate([ex, encode_tokens([{"tokens": ["ok"], "upos": ["INTJ"]}], tok, UPOS, 64)[0]], 0)
    assert batch["labels"].shape == batch["input_ids"].shape and batch["labels"][1, 3:].eq(IGNORE).all()


def test_long_sentences_are_split_between_words_never_dropped(minilm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    words = [f"word{i}" for i in range(40)]  # several subwords each
    row = {"tokens": words, "upos": ["NOUN"] * 40}
    pieces = encode_tokens([row], tok, UPOS, 24)
    assert len(pieces) > 1 and all(len(p["input_ids"]) <= 24 for p in pieces)
    assert sum(p["n_words"] for p in pieces) == 40
    assert [p["first_word"] for p in pieces] == sorted(p["first_word"] for p in pieces)
    labelled = sum(sum(1 for l in p["labels"] if l != IGNORE) for p in pieces)
    assert labelled == 40


class FirstSubwordLookup(torch.nn.Module):
    """A stand-in tagger: the logits at each position are a fixed row per token id."""

    def __init__(self, table):
        super().__init__()
        self.table = table

    def forward(self, input_ids, **kwargs):
        return SimpleNamespace(logits=self.table[input_ids])


@pytest.mark.parametrize("invisible", ["\u00ad", "\u200b", "\ufeff"], ids=["soft_hyphen", "zwsp", "bom"])
@pytest.mark.parametrize("max_length", [64, 4])  # 4: two words a piece, the invisible word starts a piece
def test_a_word_without_subwords_is_wrong_and_shifts_nothing(tiny_bert, invisible, max_length):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_bert)
    assert tok([invisible], is_split_into_words=True, add_special_tokens=False)["input_ids"] == []  # no subword
    rows = [{"sent_id": "a", "tokens": ["i", "feel", invisible, "very", "good", "today"],
             "upos": ["PRON", "VERB", "X", "ADV", "ADJ", "NOUN"]},
            {"sent_id": "b", "tokens": ["so", "happy"], "upos": ["ADV", "ADJ"]}]
    counts = [len(tok([w], is_split_into_words=True, add_special_tokens=False)["input_ids"]) for w in rows[0]["tokens"]]
    assert counts == [1, 1, 0, 1, 1, 2]  # today: to ##day
    # a "perfect" tagger: each word's first subword predicts that word's gold tag; anything else PUNCT
    table = torch.zeros(len(tok), len(UPOS))
    table[:, UPOS.index("PUNCT")] = 1.0
    first_ids = {}
    for r in rows:
        for word, tag in zip(r["tokens"], r["upos"]):
            ids = tok([word], is_split_into_words=True, add_special_tokens=False)["input_ids"]
            if ids:
                assert first_ids.setdefault(ids[0], tag) == tag
                table[ids[0], UPOS.index(tag)] = 5.0
    assert len(first_ids) == 7  # distinct first subwords: a shifted prediction would show

    examples = TOKENS.encode(TASK, rows, tok, UPOS, max_length)
    if max_length == 64:
        assert examples[0]["word_positions"] == [1, 2, None, 3, 4, 5]
    else:
        assert [e["word_positions"] for e in examples if e["row"] == 0] == [[1, 2], [None, 1], [1], [1]]
    hp = {"max_length": max_length, "eval_batch_size": 2, "precision": "fp32"}
    out = TOKENS.evaluate(TASK, FirstSubwordLookup(table), tok, rows, UPOS, hp, torch.device("cpu"))

    assert out["predictions"][0]["predictions"] == ["PRON", "VERB", "_", "ADV", "ADJ", "NOUN"]
    assert out["predictions"][1]["predictions"] == ["ADV", "ADJ"]
    gold = [UPOS.index(t) for r in rows for t in r["upos"]]
    assert out["gold"] == gold
    expected = list(gold)
    expected[2] = len(UPOS)  # no prediction: an id outside every real label
    assert out["pred"] == expected
    assert out["extra"]["words_without_subword"] == 1 and out["units"] == 8
    scores = classification_metrics(out["gold"], out["pred"], len(UPOS), ["accuracy", "f1_macro"])
    assert scores["accuracy"] == pytest.approx(7 / 8)
    # every other tag is perfect; X (the invisible word's tag) has recall 0 and so F1 0
    present = {"PRON", "VERB", "X", "ADV", "ADJ", "NOUN"}
    assert scores["f1_macro"] == pytest.approx((len(present) - 1) / len(present))
    x_row = per_label_table(out["gold"], out["pred"], UPOS)[UPOS.index("X")]
    assert x_row == {"label": "X", "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_label_set_from_training_and_unseen_tags(ewt_train):
    task = TASK
    assert TOKENS.label_list(task, ewt_train[:2000], {}) == sorted({t for r in ewt_train[:2000] for t in r["upos"]})
    eval_rows = [{"tokens": ["a", "b"], "upos": ["NOUN", "NEWTAG"]}]
    with pytest.raises(DataError, match="labels 'NEWTAG' never occur in training"):
        TOKENS.check_labels(task, eval_rows, UPOS, "eval set 'de_test'")
    TOKENS.check_labels({**task, "unseen_labels": "ignore"}, eval_rows, UPOS, "eval set 'de_test'")


def test_per_tag_table_by_hand():
    table = per_label_table([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], ["DET", "NOUN", "VERB"])
    assert table[0] == {"label": "DET", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert table[1] == {"label": "NOUN", "precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert table[2]["recall"] == pytest.approx(2 / 3) and table[2]["precision"] == 1.0


def tagger_hparams(kind):
    """A cell's flat hp for `kind`, small enough for the tiny model."""
    hp = {**training_defaults(), **preset_defaults(kind), "kind": kind}
    if kind == "lora":
        hp.update(r=4, alpha=8, dropout=0.0)
    if kind == "adalora":
        hp.update(init_r=6, target_r=4, dropout=0.0)
    if kind == "prefix_tuning":
        hp["num_virtual_tokens"] = 4
    if kind == "linear_probe":
        hp["head"] = {**hp["head"], "hidden": [16], "dropout": 0.0, "pooling": "mean"}
    return hp


@pytest.mark.parametrize("kind", ["full", "linear_probe", "prefix_tuning", "lora", "ia3", "adalora"])
def test_methods_train_a_tagger(tiny_multilingual, ewt_train, kind):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_multilingual)
    batch = collate(encode_tokens(ewt_train[:16], tok, UPOS, 64), tok.pad_token_id)
    torch.manual_seed(0)
    hp = tagger_hparams(kind)
    method = method_of(kind)
    model, new = method.load_base(tiny_multilingual, TOKENS, UPOS, hp, torch.device("cpu"), False)
    model = method.prepare(model, hp, TOKENS, 20, new)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.eval()
    losses = []
    for step in range(20):
        out = model(**batch)
        assert out.logits.shape[:2] == batch["input_ids"].shape
        out.loss.backward()
        optimizer.step()
        method.after_step(model, step + 1)  # AdaLoRA reallocates its ranks here
        optimizer.zero_grad()
        losses.append(out.loss.item())
    assert losses[-1] < losses[0], losses


def test_prompt_tuning_for_tagging_is_refused_at_parse_time():
    config = {"models": {"m": {"source": "/m"}}, "datasets": {"d": {"format": "conllu", "splits": {"train": "x"}}},
              "tasks": {"pos": {"type": "token_classification", "model": "m", "dataset": "d",
                                "columns": {"tokens": "tokens", "tags": "upos"}}},
              "methods": {"prompt_tuning": {}}, "experiments": [{"tasks": ["pos"], "methods": ["prompt_tuning"]}]}
    with pytest.raises(ConfigError, match="method 'prompt_tuning' cannot train task 'pos'.*use prefix_tuning"):
        validate_config(config)

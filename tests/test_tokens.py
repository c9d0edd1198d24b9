"""Token classification: the CoNLL-U loader on the real treebanks, subword alignment, sentence
splitting, unseen tags, and every applicable method on a tiny BERT."""
import pytest
import torch

from conftest import build_tiny_bert, shared
from peftgrid import methods
from peftgrid.config import ConfigError, validate_config
from peftgrid.data import DataError, read_conllu
from peftgrid.metrics import per_label_table
from peftgrid.tasks import IGNORE, check_labels, collate, encode_tokens, label_list

COLUMNS = {"tokens": "tokens", "tags": "upos"}
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
        "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n"
        "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
        "2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_\n"
        "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
        "3.1\tgone\tgo\tVERB\tVBN\t_\t_\t_\t_\t_\n"
        "4\tknow\tknow\tVERB\tVB\t_\t0\troot\t_\t_\n\n")
    (row,) = read_conllu(tmp_path / "s.conllu")
    assert row == {"sent_id": "x1", "text": "I don't know", "tokens": ["I", "do", "n't", "know"],
                   "upos": ["PRON", "AUX", "PART", "VERB"], "xpos": ["PRP", "VBP", "RB", "VB"],
                   "lemmas": ["I", "do", "not", "know"]}


def test_first_subword_carries_the_label(minilm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    row = {"tokens": ["Unbelievably", "good", "tokenization"], "upos": ["ADV", "ADJ", "NOUN"]}
    (ex,) = encode_tokens([row], tok, COLUMNS, UPOS, 64)
    pieces = tok.convert_ids_to_tokens(ex["input_ids"])
    # hand-checked: [CLS] un ##bel ##ie ##va ##bly good token ##ization [SEP]
    assert pieces == ["[CLS]", "un", "##bel", "##ie", "##va", "##bly", "good", "token", "##ization", "[SEP]"]
    adv, adj, noun = UPOS.index("ADV"), UPOS.index("ADJ"), UPOS.index("NOUN")
    assert ex["labels"] == [IGNORE, adv, IGNORE, IGNORE, IGNORE, IGNORE, adj, noun, IGNORE, IGNORE]
    assert ex["word_positions"] == [1, 6, 7]
    batch = collate([ex, encode_tokens([{"tokens": ["ok"], "upos": ["INTJ"]}], tok, COLUMNS, UPOS, 64)[0]], 0)
    assert batch["labels"].shape == batch["input_ids"].shape and batch["labels"][1, 3:].eq(IGNORE).all()


def test_long_sentences_are_split_between_words_never_dropped(minilm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(minilm_dir)
    words = [f"word{i}" for i in range(40)]  # several subwords each
    row = {"tokens": words, "upos": ["NOUN"] * 40}
    pieces = encode_tokens([row], tok, COLUMNS, UPOS, 24)
    assert len(pieces) > 1 and all(len(p["input_ids"]) <= 24 for p in pieces)
    assert sum(p["n_words"] for p in pieces) == 40
    assert [p["first_word"] for p in pieces] == sorted(p["first_word"] for p in pieces)
    labelled = sum(sum(1 for l in p["labels"] if l != IGNORE) for p in pieces)
    assert labelled == 40


def test_label_set_from_training_and_unseen_tags(ewt_train):
    task = {"type": "token_classification", "columns": COLUMNS}
    assert label_list(task, ewt_train[:2000], {}) == sorted({t for r in ewt_train[:2000] for t in r["upos"]})
    eval_rows = [{"tokens": ["a", "b"], "upos": ["NOUN", "NEWTAG"]}]
    with pytest.raises(DataError, match="labels 'NEWTAG' never occur in training"):
        check_labels(task, eval_rows, UPOS, "eval set 'de_test'")
    check_labels({**task, "unseen_labels": "ignore"}, eval_rows, UPOS, "eval set 'de_test'")


def test_per_tag_table_by_hand():
    table = per_label_table([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], ["DET", "NOUN", "VERB"])
    assert table[0] == {"label": "DET", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    assert table[1] == {"label": "NOUN", "precision": 0.5, "recall": 1.0, "f1": pytest.approx(2 / 3), "support": 1}
    assert table[2]["recall"] == pytest.approx(2 / 3) and table[2]["precision"] == 1.0


@pytest.mark.parametrize("kind", ["full", "linear_probe", "prefix_tuning", "lora", "ia3", "adalora"])
def test_methods_train_a_tagger(tiny_multilingual, ewt_train, kind):
    from test_methods import hparams
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_multilingual)
    batch = collate(encode_tokens(ewt_train[:16], tok, COLUMNS, UPOS, 64), tok.pad_token_id)
    torch.manual_seed(0)
    hp = hparams(kind)
    model, _ = methods.load_base(tiny_multilingual, "token_classification", UPOS, hp, torch.device("cpu"))
    model = methods.prepare(model, hp, "token_classification", 20)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.eval()
    losses = []
    for step in range(20):
        out = model(**batch)
        assert out.logits.shape[:2] == batch["input_ids"].shape
        out.loss.backward()
        optimizer.step()
        if kind == "adalora":
            model.base_model.update_and_allocate(step + 1)
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

"""Token classification (POS tagging): one label per word, on the word's first subword.

Words map to model positions through the tokenizer's word ids, never by counting: a word that
tokenizes to no subword at all (a soft hyphen, a zero-width space, a BOM) gets no position, no
prediction, and is counted as wrong — every later word keeps its own prediction."""
from __future__ import annotations

from ..errors import DataError
from .classification import IGNORE, LabelTask

NO_PREDICTION = "_"  # shown for a word the model has no position for


class TokenClassification(LabelTask):
    name = "token_classification"
    required_columns = frozenset({"tokens", "tags"})
    default_metrics = ("accuracy", "f1_macro")
    auto_class = "AutoModelForTokenClassification"
    peft_task_type = "TOKEN_CLS"
    short_name = "tokens"
    per_token = True
    own_keys = frozenset({"labels", "unseen_labels"})

    def label_column(self, task):
        return task["columns"]["tags"]

    def label_values(self, task, rows):
        col = task["columns"]["tags"]
        return {str(t) for r in rows for t in r[col]}

    def check_rows(self, task, rows, where):
        words_col, tags_col = task["columns"]["tokens"], task["columns"]["tags"]
        for i, r in enumerate(rows):
            words, tags = r[words_col], r[tags_col]
            if not isinstance(words, list) or not isinstance(tags, list) or len(words) != len(tags):
                raise DataError(f"{where} row {i + 1}: columns {words_col!r} and {tags_col!r} must be "
                                f"lists of the same length")
            if any(t is None or not str(t).strip() for t in tags):  # it would become a tag named ''
                raise DataError(f"{where} row {i + 1}: column {tags_col!r} (columns.tags) has a blank tag; a blank tag "
                                f"is not a class: fill it in or remove the row")

    @staticmethod
    def word_chunks(rows: list[dict], tokenizer, column: str, budget: int) -> list[tuple[int, int, int]]:
        """(row, first word, end word) pieces whose subwords fit in `budget`: a sentence longer than
        the model's window is split between words, so no word is ever dropped."""
        counts = tokenizer([r[column] for r in rows], is_split_into_words=True, add_special_tokens=False)
        pieces = []
        for i, r in enumerate(rows):
            per_word = [0] * len(r[column])
            for w in counts.word_ids(i):
                if w is not None:
                    per_word[w] += 1
            start, used = 0, 0
            for w, n in enumerate(per_word):
                n = max(n, 1)
                if used + n > budget and w > start:
                    pieces.append((i, start, w))
                    start, used = w, 0
                used += n
            pieces.append((i, start, len(per_word)))
        return pieces

    def encode(self, task, rows, tokenizer, labels, max_length):
        """Word-level tags on the first subword of each word; other subwords and special tokens get
        IGNORE, so loss and metrics count each word once. `word_positions[k]` is word k's first
        subword position in this piece, or None when the word has no subword."""
        columns = task["columns"]
        label2id = {name: i for i, name in enumerate(labels)}
        special = len(tokenizer.build_inputs_with_special_tokens([]))
        pieces = self.word_chunks(rows, tokenizer, columns["tokens"], max_length - special)
        words = [rows[i][columns["tokens"]][a:b] for i, a, b in pieces]
        enc = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        out = []
        for j, (i, a, b) in enumerate(pieces):
            tags = rows[i][columns["tags"]][a:b]
            positions: list[int | None] = [None] * (b - a)
            ids = []
            for pos, w in enumerate(enc.word_ids(j)):
                first = w is not None and positions[w] is None
                ids.append(label2id.get(str(tags[w]), IGNORE) if first else IGNORE)
                if first:
                    positions[w] = pos
            ex = {k: enc[k][j] for k in keys}
            ex.update(labels=ids, row=i, first_word=a, n_words=b - a, word_positions=positions)
            out.append(ex)
        return out

    def unpack(self, example, probs, argmax):
        pos = example["word_positions"]
        preds = [None if p is None else int(argmax[p]) for p in pos]
        confs = [None if p is None else float(probs[p]) for p in pos]
        return preds, confs

    def score_units(self, task, rows, examples, preds, confs, labels):
        """Word-level gold and predicted ids; a word with no prediction counts as wrong
        (predicted id len(labels), outside every real label)."""
        label2id = {name: i for i, name in enumerate(labels)}
        tok_col, tag_col = task["columns"]["tokens"], task["columns"]["tags"]
        words = [[None] * len(r[tok_col]) for r in rows]
        for ex, p, c in zip(examples, preds, confs):
            for k, (pid, conf) in enumerate(zip(p, c)):
                words[ex["row"]][ex["first_word"] + k] = pid
        gold_ids, pred_ids, lines, unpredicted = [], [], [], 0
        for r, predicted in zip(rows, words):
            tags = [str(t) for t in r[tag_col]]
            for gold, pid in zip(tags, predicted):
                unpredicted += pid is None
                if gold in label2id:  # unseen tags (unseen_labels: ignore) stay out of the metrics
                    gold_ids.append(label2id[gold])
                    pred_ids.append(len(labels) if pid is None else pid)
            lines.append({"id": r.get("sent_id"), "tokens": r[tok_col], "tags": tags,
                          "predictions": [NO_PREDICTION if p is None else labels[p] for p in predicted]})
        return {"gold": gold_ids, "pred": pred_ids, "predictions": lines,
                "units": sum(len(r[tok_col]) for r in rows), "extra": {"words_without_subword": unpredicted}}

    def truncated(self, examples, max_length):
        """Extra pieces of sentences split to fit max_length (their words are all kept)."""
        return sum(1 for e in examples if e["first_word"] > 0)

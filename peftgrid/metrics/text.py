"""Generation metrics: sacrebleu corpus BLEU, mean sentence BLEU and chrF, ROUGE-1/2/L with a
tokenizer that keeps every script (rouge-score's default keeps only [a-z0-9]: Russian would
score 0). Several references per source are used where the data has them. Scores are 0-100."""
from __future__ import annotations

import re

import sacrebleu

WORD = re.compile(r"\w+", re.UNICODE)


SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class UnicodeTokenizer:
    """Lower-cased word characters of any script (Cyrillic included); with `stem`, English words
    of more than 3 letters are Porter-stemmed, as rouge-score's own tokenizer does."""

    def __init__(self, stem: bool = False):
        self.stemmer = None
        if stem:
            from nltk.stem import porter

            self.stemmer = porter.PorterStemmer()

    def tokenize(self, text: str) -> list[str]:
        words = WORD.findall(text.lower())
        if self.stemmer is None:
            return words
        return [self.stemmer.stem(w) if len(w) > 3 else w for w in words]


def sentences(text: str) -> str:
    """One sentence per line, what ROUGE-Lsum reads (a summary-level LCS over sentences)."""
    return "\n".join(s for s in SENTENCE_END.split(text.strip()) if s)


def reference_streams(references) -> list[list[str]]:
    """Per-example reference lists -> sacrebleu's one stream per reference slot; a source with
    fewer references repeats its first one (a duplicate reference changes neither BLEU nor chrF).
    The corpus scores and the report's paired tests (report.significance) both use it."""
    width = max(len(r) for r in references)
    return [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]


def generation_metrics(hypotheses: list[str], references: list[list[str]], names: list[str],
                       rouge: dict | None = None) -> tuple[dict, list[dict]]:
    """(corpus scores by metric name, per-sentence scores) for the metrics asked for. Nothing to
    score (no hypotheses) gives NaN, never 0. `rouge`: {stem: true} stems English words."""
    if not hypotheses:
        nan = float("nan")
        columns = [c for n in names for c in ({"rouge": ("rouge1", "rouge2", "rougeL", "rougeLsum")}.get(n, (n,)))]
        return {c: nan for c in columns}, []
    streams = reference_streams(references)
    out: dict[str, float] = {}
    per_sentence = [{} for _ in hypotheses]
    if "bleu" in names:
        out["bleu"] = sacrebleu.corpus_bleu(hypotheses, streams).score
    if "sentence_bleu" in names or "bleu" in names:
        scores = [sacrebleu.sentence_bleu(h, refs).score for h, refs in zip(hypotheses, references)]
        for row, s in zip(per_sentence, scores):
            row["sentence_bleu"] = s
        if "sentence_bleu" in names:
            out["sentence_bleu"] = sum(scores) / len(scores)
    if "chrf" in names:
        out["chrf"] = sacrebleu.corpus_chrf(hypotheses, streams).score
        for row, h, refs in zip(per_sentence, hypotheses, references):
            row["sentence_chrf"] = sacrebleu.sentence_chrf(h, refs).score
    if "rouge" in names:
        from rouge_score import rouge_scorer  # here: the report's environment reads reference_streams only

        keys = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
        scorer = rouge_scorer.RougeScorer(keys, tokenizer=UnicodeTokenizer(stem=(rouge or {}).get("stem", False)))
        totals = dict.fromkeys(keys, 0.0)
        for row, h, refs in zip(per_sentence, hypotheses, references):
            best = scorer.score_multi([sentences(r) for r in refs], sentences(h))
            for key in totals:
                totals[key] += best[key].fmeasure
                row[key] = 100 * best[key].fmeasure
        n = len(hypotheses)
        out.update({key: 100 * value / n for key, value in totals.items()})
    return out, per_sentence

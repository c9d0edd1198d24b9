"""Generation metrics: sacrebleu corpus BLEU, mean sentence BLEU and chrF, ROUGE-1/2/L with a
tokenizer that keeps every script (rouge-score's default keeps only [a-z0-9]: Russian would
score 0). Several references per source are used where the data has them. Scores are 0-100."""
from __future__ import annotations

import re

import sacrebleu
from rouge_score import rouge_scorer

WORD = re.compile(r"\w+", re.UNICODE)


class UnicodeTokenizer:
    """Lower-cased word characters of any script (Cyrillic included)."""

    def tokenize(self, text: str) -> list[str]:
        return WORD.findall(text.lower())


def reference_streams(references: list[list[str]]) -> list[list[str]]:
    """sacrebleu wants one stream per reference slot; a source with fewer references repeats
    its first one (a duplicate reference changes neither BLEU nor chrF)."""
    width = max(len(r) for r in references)
    return [[refs[i] if i < len(refs) else refs[0] for refs in references] for i in range(width)]


def generation_metrics(hypotheses: list[str], references: list[list[str]], names: list[str]) -> tuple[dict, list[dict]]:
    """(corpus scores by metric name, per-sentence scores) for the metrics asked for."""
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
            out["sentence_bleu"] = sum(scores) / len(scores) if scores else 0.0
    if "chrf" in names:
        out["chrf"] = sacrebleu.corpus_chrf(hypotheses, streams).score
        for row, h, refs in zip(per_sentence, hypotheses, references):
            row["sentence_chrf"] = sacrebleu.sentence_chrf(h, refs).score
    if "rouge" in names:
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=UnicodeTokenizer())
        totals = {"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}
        for row, h, refs in zip(per_sentence, hypotheses, references):
            best = scorer.score_multi(refs, h)
            for key in totals:
                totals[key] += best[key].fmeasure
                row[key] = 100 * best[key].fmeasure
        n = max(len(hypotheses), 1)
        out.update({key: 100 * value / n for key, value in totals.items()})
    return out, per_sentence

"""Generation task types: seq2seq and causal_lm. Prompts, labels, the tokenizer coverage check
and decoding.

Seq2seq: the encoder reads the prompt (a task prefix such as "translate English to Russian:
{source}"), the labels are the target's tokens. Causal LM: one sequence prompt + target + EOS,
the loss only on the target tokens; batched generation pads on the left and the prompt is cut
from the output. A long source is cut inside the template — the instruction around `{source}`
is always kept — so that the prompt leaves `max_new_tokens` of room for the answer.
"""
from __future__ import annotations

import unicodedata
from collections import Counter

from ..errors import CellFailure, ConfigError
from .base import TaskType

IGNORE = -100
DECODING_KEYS = {"num_beams", "do_sample", "top_p", "top_k", "temperature", "repetition_penalty",
                 "no_repeat_ngram_size", "length_penalty", "seed"}


class CoverageError(CellFailure):
    """The tokenizer cannot write the target language (a recorded cell failure)."""


def source_text(value) -> str:
    """A list-valued source (e.g. the sentences of an abstract) is joined with spaces."""
    return " ".join(map(str, value)) if isinstance(value, list) else str(value)


def references(value) -> list[str]:
    """A list-valued target holds several references for one source."""
    refs = [str(v) for v in value] if isinstance(value, list) else [str(value)]
    return refs or [""]


def coverage(tokenizer, texts: list[str]) -> tuple[float, list[str]]:
    """Share of the target characters (whitespace excluded) the tokenizer cannot represent —
    mapped to the unknown token or lost in a round trip — and the commonest such characters."""
    counts = Counter(c for t in texts for c in t if not c.isspace())
    total = sum(counts.values())
    if not total:
        return 0.0, []
    unk = tokenizer.unk_token_id
    lost = {}
    for char, n in counts.items():
        ids = tokenizer.encode(char, add_special_tokens=False)
        decoded = tokenizer.decode(ids, skip_special_tokens=True).strip()
        if not ids or (unk is not None and unk in ids) or unicodedata.normalize("NFKC", decoded) != unicodedata.normalize("NFKC", char):
            lost[char] = n
    worst = [c for c, _ in Counter(lost).most_common(8)]
    return sum(lost.values()) / total, worst


class GenerationTask(TaskType):
    required_columns = frozenset({"source", "target"})
    metric_kind = "text"
    default_metrics = ("bleu", "sentence_bleu", "chrf", "rouge")
    generates = True
    own_keys = frozenset({"prompt", "decoding", "max_new_tokens", "coverage_threshold", "rouge"})
    # an evaluation job gets its one decoding in its spec's own field; coverage is checked before
    # training; rouge's settings are a metric's
    train_ignores = frozenset({"decoding", "rouge"})
    eval_ignores = frozenset({"decoding", "coverage_threshold"})

    def validate(self, where, task):
        super().validate(where, task)
        task.setdefault("prompt", "{source}")
        if "{source}" not in task["prompt"]:
            raise ConfigError(f"{where}.prompt: must contain {{source}}, where the source text goes")
        try:
            task["prompt"].format(source="")
        except (KeyError, IndexError, ValueError) as e:
            raise ConfigError(f"{where}.prompt: only {{source}} may appear in braces (found {e}); write {{{{ }}}} for a brace")
        task.setdefault("max_new_tokens", 64)
        task.setdefault("coverage_threshold", 0.02)
        task.setdefault("decoding", {"greedy": {}})
        if not isinstance(task["decoding"], dict) or not task["decoding"]:
            raise ConfigError(f"{where}.decoding: expected name -> mapping of generate() settings")
        for name, settings in task["decoding"].items():
            if not isinstance(settings, dict):
                raise ConfigError(f"{where}.decoding.{name}: expected a mapping of generate() settings")
            bad = sorted(set(settings) - DECODING_KEYS)
            if bad:
                raise ConfigError(f"{where}.decoding.{name}.{bad[0]}: unknown setting "
                                  f"(allowed: {', '.join(sorted(DECODING_KEYS))})")

    def prepare_tokenizer(self, tokenizer):
        """Decoder-only tokenizers often have no pad token: pad with EOS (masked anyway)."""
        if tokenizer.pad_token is None and tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
        return tokenizer

    def check_training_data(self, task, tokenizer, rows, model_name):
        share, worst = coverage(tokenizer, [t for r in rows for t in references(r[task["columns"]["target"]])])
        if share > task.get("coverage_threshold", 0.02):
            raise CoverageError(f"the tokenizer of model {model_name!r} cannot write {share:.0%} of the target "
                                f"characters (e.g. {' '.join(worst)}); use a model whose vocabulary covers the "
                                f"target language")
        return {"target_coverage_loss": share}

    def prompt_parts(self, tokenizer, task: dict) -> tuple[list[int], list[int]]:
        """Token ids of the template's text before and after `{source}`."""
        before, _, after = task["prompt"].partition("{source}")
        return _ids(tokenizer, before), _ids(tokenizer, after)

    def prompt_ids(self, tokenizer, task: dict, rows: list[dict], budget: int) -> list[list[int]]:
        """Token ids of each prompt, at most `budget` long: the template around `{source}` is always
        kept; the source is cut at its end when it does not fit."""
        head, tail = self.prompt_parts(tokenizer, task)
        sources = tokenizer([source_text(r[task["columns"]["source"]]) for r in rows],
                            add_special_tokens=False)["input_ids"]
        room = max(budget - len(head) - len(tail), 1)
        return [head + s[:room] + tail for s in sources]

    def prompt_budget(self, task: dict, max_length: int) -> int:
        return max(max_length - task.get("max_new_tokens", 64), max_length // 4)

    def stop_ids(self, tokenizer) -> list[int]:
        return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    @staticmethod
    def settings(decoding: dict) -> dict:
        """generate() settings, explicit: greedy is do_sample=False, num_beams=1 whatever the model's
        generation_config says (instruct models ship do_sample=True); beams never sample unless asked."""
        explicit = {"do_sample": False, "num_beams": 1}
        explicit.update({k: v for k, v in decoding.items() if k != "seed"})
        if not explicit["do_sample"]:
            explicit.update(temperature=None, top_p=None, top_k=None)  # sampling knobs off, so no warning
        return explicit

    def evaluate(self, task, model, tokenizer, rows, labels, hp, device, decoding: dict, max_new_tokens: int):
        """Hypotheses for every row, generated tokens, and the inference meter."""
        import torch

        from ..engine.device import PhaseMeter, autocast

        ids = self.inference_ids(tokenizer, task, rows, hp["max_length"])
        settings = self.settings(decoding)
        if decoding.get("seed") is not None or settings.get("do_sample"):
            torch.manual_seed(decoding.get("seed", 0))
        order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
        hyps, lengths = [None] * len(ids), [0] * len(ids)
        eos = set(self.stop_ids(tokenizer))
        meter = PhaseMeter(device)
        batch_size = hp["eval_batch_size"]
        with meter, torch.no_grad():
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                batch = pad_prompts([ids[i] for i in idx], tokenizer.pad_token_id, left=self.pad_left)
                batch = {k: v.to(device) for k, v in batch.items()}
                with autocast(device, hp["precision"]):
                    out = model.generate(**batch, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
                                         eos_token_id=self.stop_ids(tokenizer), **settings)
                if self.pad_left:
                    out = out[:, batch["input_ids"].shape[1]:]  # the prompt is not part of the answer
                texts = tokenizer.batch_decode(out, skip_special_tokens=True)
                for i, text, seq in zip(idx, texts, out):
                    hyps[i] = text.strip()
                    lengths[i] = generated_length(seq.tolist(), eos, tokenizer.pad_token_id)
                print(f"generated {min(start + batch_size, len(order))}/{len(order)} examples", flush=True)
        hit = sum(n >= max_new_tokens for n in lengths)
        return {"hypotheses": hyps, "generated_tokens": sum(lengths), "meter": meter, "settings": settings,
                "gen_len_mean": sum(lengths) / max(len(lengths), 1), "gen_len_max": max(lengths, default=0),
                "hit_max_new_tokens": hit / max(len(lengths), 1)}


def generated_length(seq: list[int], stop: set[int], pad_id) -> int:
    """Tokens generated up to and including the first stop token (padding after it not counted)."""
    seq = seq[1:] if seq and seq[0] == pad_id and pad_id not in stop else seq  # seq2seq: decoder start
    for n, token in enumerate(seq, 1):
        if token in stop:
            return n
    return len([t for t in seq if t != pad_id]) if pad_id not in stop else len(seq)


def pad_prompts(prompts: list[list[int]], pad_id: int, left: bool):
    """Pad to the longest prompt; decoder-only models generate after the last token, so they pad left."""
    import torch

    width = max(len(p) for p in prompts)
    pads = [width - len(p) for p in prompts]
    if left:
        return {"input_ids": torch.tensor([[pad_id] * n + p for p, n in zip(prompts, pads)]),
                "attention_mask": torch.tensor([[0] * n + [1] * len(p) for p, n in zip(prompts, pads)])}
    return {"input_ids": torch.tensor([p + [pad_id] * n for p, n in zip(prompts, pads)]),
            "attention_mask": torch.tensor([[1] * len(p) + [0] * n for p, n in zip(prompts, pads)])}


class Seq2Seq(GenerationTask):
    name = "seq2seq"
    auto_class = "AutoModelForSeq2SeqLM"
    peft_task_type = "SEQ_2_SEQ_LM"
    short_name = "seq2seq"
    pad_left = False

    def inference_ids(self, tokenizer, task, rows, max_length):
        """The encoder input: the prompt with the tokenizer's own special tokens (T5: a final </s>)."""
        before, after = special_wrap(tokenizer)
        return [before + p + after
                for p in self.prompt_ids(tokenizer, task, rows, max_length - len(before) - len(after))]

    def encode(self, task, rows, tokenizer, labels, max_length):
        prompts = self.inference_ids(tokenizer, task, rows, max_length)
        targets = [references(r[task["columns"]["target"]])[0] for r in rows]  # training uses the first reference
        lab = tokenizer(text_target=targets, truncation=True, max_length=max_length)["input_ids"]
        return [{"input_ids": p, "attention_mask": [1] * len(p), "labels": t, "row": i}
                for i, (p, t) in enumerate(zip(prompts, lab))]


def special_wrap(tokenizer) -> tuple[list[int], list[int]]:
    """The special tokens tokenizer(text) puts before and after a text. Read from the tokenizer's
    own output: build_inputs_with_special_tokens adds none for a generic PreTrainedTokenizerFast
    (its template lives in the backend's post-processor), which would drop T5's final </s>."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return full[:i], full[i + len(plain):]
    return [], []


SENTINEL = "\x00SOURCE\x00"


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"] if text else []


def _render(tokenizer, messages: list[dict], **kwargs) -> str:
    return tokenizer.apply_chat_template(messages, tokenize=False, **kwargs)


class CausalLM(GenerationTask):
    """A decoder-only model: prompt + answer + end token, the loss on the answer only.

    Special tokens come from what the model really uses, which its chat template knows: an answer
    ends with the token the template puts after an assistant turn (SmolLM2: <|im_end|>; its GGUF
    tokenizer reports <|im_start|> as both BOS and EOS), and BOS is prepended only when it is a
    true begin-of-sequence token (once per conversation), not a turn marker. With
    `chat_template: true` the prompt is the user turn and the answer the assistant turn."""
    name = "causal_lm"
    auto_class = "AutoModelForCausalLM"
    peft_task_type = "CAUSAL_LM"
    short_name = "causal"
    pad_left = True
    own_keys = GenerationTask.own_keys | {"chat_template"}

    @staticmethod
    def answer_end(tokenizer) -> list[int]:
        """The token that ends an answer: the chat template's end of an assistant turn, else EOS."""
        if getattr(tokenizer, "chat_template", None):
            text = _render(tokenizer, [{"role": "user", "content": "u"}, {"role": "assistant", "content": SENTINEL}])
            tail = _ids(tokenizer, text.split(SENTINEL, 1)[1])
            if tail:
                return tail[:1]
        return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []

    @staticmethod
    def bos(tokenizer) -> list[int]:
        if tokenizer.bos_token_id is None or not getattr(tokenizer, "add_bos_token", False):
            return []
        if getattr(tokenizer, "chat_template", None):
            chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                    {"role": "user", "content": "c"}]
            if _render(tokenizer, chat).count(tokenizer.bos_token) != 1:
                return []  # it starts every turn: a turn marker, not a sequence start
        return [tokenizer.bos_token_id]

    def prompt_parts(self, tokenizer, task):
        if not task.get("chat_template"):
            head, tail = super().prompt_parts(tokenizer, task)
            return self.bos(tokenizer) + head, tail
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"chat_template: true, but the tokenizer of this model has no chat template")
        text = _render(tokenizer, [{"role": "user", "content": task["prompt"].replace("{source}", SENTINEL)}],
                       add_generation_prompt=True)
        before, _, after = text.partition(SENTINEL)
        return _ids(tokenizer, before), _ids(tokenizer, after)

    def stop_ids(self, tokenizer):
        return sorted(set(self.answer_end(tokenizer)) | set(super().stop_ids(tokenizer)))

    def inference_ids(self, tokenizer, task, rows, max_length):
        """The same prompt ids in training and generation."""
        return self.prompt_ids(tokenizer, task, rows, self.prompt_budget(task, max_length))

    def encode(self, task, rows, tokenizer, labels, max_length):
        p_ids = self.inference_ids(tokenizer, task, rows, max_length)
        targets = [references(r[task["columns"]["target"]])[0] for r in rows]
        t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
        end = self.answer_end(tokenizer)
        out = []
        for i, (p, t) in enumerate(zip(p_ids, t_ids)):
            t = (t + end)[: max_length - len(p)]
            out.append({"input_ids": p + t, "attention_mask": [1] * (len(p) + len(t)),
                        "labels": [IGNORE] * len(p) + t, "row": i})
        return out

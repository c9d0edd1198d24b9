"""Fine-tuning methods: turn a freshly loaded base model into the model a method trains,
save what the method learned, and load it back for evaluation.

Every cell starts from the staged pretrained weights (`resources/models/<name>/`), never from
another cell's model object: the seed notebooks' worst bug was applying LoRA to a model that
had already been fully fine-tuned.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn
from transformers.modeling_outputs import SequenceClassifierOutput

PEFT_KINDS = {"prompt_tuning", "prefix_tuning", "lora", "qlora", "adalora", "ia3"}
CUDA_ONLY_KINDS = {"qlora"}


class MethodError(RuntimeError):
    """A one-line reason why a method cannot run in this cell (device, model, task)."""


def check_device(kind: str, device: torch.device) -> None:
    if kind in CUDA_ONLY_KINDS and device.type != "cuda":
        raise MethodError(f"{kind} needs a CUDA GPU: bitsandbytes 4-bit layers have no working forward pass on "
                          f"{device.type} (this cell is skipped; run it on a GPU node)")


# --------------------------------------------------------------------------- linear probing

class LinearProbe(nn.Module):
    """A frozen encoder and a small trainable head.

    Default head: dropout -> Linear(hidden, 256) -> GELU -> dropout -> Linear(256, labels) on the
    [CLS] vector. One hidden layer because a frozen encoder's features are not linearly tuned to
    the task (a single Linear under-fits: 0.46 accuracy in the seed solution), 256 units because
    that is enough for 6 classes while staying ~100k parameters, and dropout because the head
    otherwise memorises small training sets. `pooling: mean` averages the unpadded tokens instead,
    which suits encoders trained with mean pooling (sentence-transformers such as MiniLM).
    """

    def __init__(self, encoder: nn.Module, num_labels: int, hidden=(256,), dropout=0.1, pooling="cls",
                 activation="gelu", per_token: bool = False):
        super().__init__()
        self.per_token = per_token  # token classification: the head labels every position
        self.encoder = encoder
        for p in self.encoder.parameters():
            p.requires_grad_(False)
        self.pooling = pooling
        act = {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh}[activation]
        layers, width = [], encoder.config.hidden_size
        for h in hidden:
            layers += [nn.Dropout(dropout), nn.Linear(width, h), act()]
            width = h
        layers += [nn.Dropout(dropout), nn.Linear(width, num_labels)]
        self.head = nn.Sequential(*layers)
        self.config = encoder.config

    def train(self, mode: bool = True):
        super().train(mode)
        self.encoder.eval()  # frozen: its dropout stays off, so features are deterministic
        return self

    def pool(self, input_ids, attention_mask, **kwargs) -> torch.Tensor:
        with torch.no_grad():
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        if self.pooling == "mean":
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return hidden[:, 0]

    def forward(self, input_ids, attention_mask, labels=None, **kwargs):
        if self.per_token:
            with torch.no_grad():
                features = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state
        else:
            features = self.pool(input_ids, attention_mask, **kwargs)
        logits = self.head(features.float())
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                               ignore_index=-100)
        return SequenceClassifierOutput(loss=loss, logits=logits)


# --------------------------------------------------------------------------- building

def _load_kwargs(allow_pickle: bool) -> dict:
    return {"use_safetensors": None if allow_pickle else True}


def load_base(model_dir: str | Path, task_type: str, labels: list[str], hp: dict, device: torch.device,
              allow_pickle: bool = False):
    """The pretrained model for a task type, plus the names of freshly initialised weights."""
    from transformers import (AutoModel, AutoModelForCausalLM, AutoModelForSeq2SeqLM,
                              AutoModelForSequenceClassification, AutoModelForTokenClassification, BitsAndBytesConfig)

    kind = hp["kind"]
    kwargs = _load_kwargs(allow_pickle)
    if kind == "qlora":
        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=hp["quant_type"], bnb_4bit_use_double_quant=hp["double_quant"],
            bnb_4bit_compute_dtype=compute)
        kwargs["device_map"] = {"": device.index or 0}
    auto_class = {"sequence_classification": AutoModelForSequenceClassification,
                  "token_classification": AutoModelForTokenClassification,
                  "seq2seq": AutoModelForSeq2SeqLM, "causal_lm": AutoModelForCausalLM}.get(task_type)
    if auto_class is None:
        raise MethodError(f"task type {task_type!r} is not implemented")
    if task_type in ("seq2seq", "causal_lm"):
        if kind == "linear_probe":
            raise MethodError("linear_probe cannot generate text")
        model, info = auto_class.from_pretrained(model_dir, output_loading_info=True, **kwargs)
        return model, list(info["missing_keys"])
    id2label = dict(enumerate(labels))
    if kind == "linear_probe":
        encoder = AutoModel.from_pretrained(model_dir, **kwargs)
        head = hp["head"]
        model = LinearProbe(encoder, len(labels), tuple(head["hidden"]), head["dropout"], head["pooling"],
                            head["activation"], per_token=task_type == "token_classification")
        return model, []
    model, info = auto_class.from_pretrained(
        model_dir, num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()},
        output_loading_info=True, **kwargs)
    return model, list(info["missing_keys"])


def _target(value):
    return None if value == "auto" else list(value)


def peft_config(hp: dict, task_type: str, total_steps: int):
    import peft

    task = {"sequence_classification": peft.TaskType.SEQ_CLS, "token_classification": peft.TaskType.TOKEN_CLS,
            "seq2seq": peft.TaskType.SEQ_2_SEQ_LM, "causal_lm": peft.TaskType.CAUSAL_LM}[task_type]
    kind = hp["kind"]
    if kind in ("lora", "qlora"):
        return peft.LoraConfig(task_type=task, r=hp["r"], lora_alpha=hp["alpha"], lora_dropout=hp["dropout"],
                               target_modules=_target(hp["target_modules"]))
    if kind == "adalora":
        return peft.AdaLoraConfig(task_type=task, init_r=hp["init_r"], target_r=hp["target_r"],
                                  lora_alpha=hp["alpha"], lora_dropout=hp["dropout"],
                                  target_modules=_target(hp["target_modules"]), tinit=hp["tinit"],
                                  tfinal=hp["tfinal"], deltaT=hp["delta_t"], total_step=max(total_steps, 1))
    if kind == "ia3":
        targets, ff = _target(hp["target_modules"]), _target(hp["feedforward_modules"])
        if targets is not None and ff is None:
            ff = []
        return peft.IA3Config(task_type=task, target_modules=targets, feedforward_modules=ff)
    if kind == "prompt_tuning":
        return peft.PromptTuningConfig(task_type=task, num_virtual_tokens=hp["num_virtual_tokens"])
    if kind == "prefix_tuning":
        return peft.PrefixTuningConfig(task_type=task, num_virtual_tokens=hp["num_virtual_tokens"],
                                       prefix_projection=hp["prefix_projection"])
    raise MethodError(f"no peft config for {kind!r}")


def prepare(model, hp: dict, task_type: str, total_steps: int):
    """Set what trains: nothing (none), everything (full), the head (linear_probe), an adapter."""
    kind = hp["kind"]
    if kind == "none":
        model.requires_grad_(False)
        return model
    if kind in ("full", "linear_probe"):
        return model
    import peft

    if kind == "qlora":
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    try:
        return peft.get_peft_model(model, peft_config(hp, task_type, total_steps))
    except (ValueError, TypeError, NotImplementedError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MethodError(f"peft cannot apply {kind} to {type(model).__name__}: {first}") from None


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total); peft's own count for peft models (it unpacks 4-bit weights)."""
    if hasattr(model, "get_nb_trainable_parameters"):
        return model.get_nb_trainable_parameters()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


# --------------------------------------------------------------------------- saving / loading

def save_trained(model, hp: dict, out_dir: Path, new_weights: list[str]) -> None:
    """Write what the method learned (safetensors), never more than needed to rebuild it."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    kind = hp["kind"]
    if kind in PEFT_KINDS:
        model.save_pretrained(out_dir, safe_serialization=True)
    elif kind == "full":
        model.save_pretrained(out_dir, safe_serialization=True)
    elif kind == "linear_probe":
        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, out_dir / "head.safetensors")
    elif kind == "none":
        # the untrained baseline: only its randomly initialised head, so evaluation sees the same one
        state = model.state_dict()
        save_file({k: state[k].contiguous() for k in new_weights}, out_dir / "new_weights.safetensors")
    (out_dir / "method.json").write_text(json.dumps({"kind": kind}, indent=2) + "\n")


def load_trained(model_dir: str | Path, trained_dir: str | Path, task_type: str, labels: list[str], hp: dict,
                 device: torch.device, allow_pickle: bool = False):
    """Rebuild a cell's trained model from the staged base and the cell's saved weights."""
    from safetensors.torch import load_file

    trained_dir = Path(trained_dir)
    kind = hp["kind"]
    if kind == "full":
        model, _ = load_base(trained_dir, task_type, labels, {**hp, "kind": "none"}, device, allow_pickle)
        return model
    model, _ = load_base(model_dir, task_type, labels, hp, device, allow_pickle)
    if kind == "linear_probe":
        model.head.load_state_dict(load_file(trained_dir / "head.safetensors"))
    elif kind == "none":
        missing = model.load_state_dict(load_file(trained_dir / "new_weights.safetensors"), strict=False)
        if missing.unexpected_keys:
            raise MethodError(f"{trained_dir}: unexpected weights {missing.unexpected_keys[:3]}")
    else:
        import peft

        if kind == "qlora":
            model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        model = peft.PeftModel.from_pretrained(model, trained_dir)
    return model

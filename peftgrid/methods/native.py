"""Methods that need no adapter library: the untrained baseline, full fine-tuning, linear
probing (frozen encoder + a small head) and BitFit (bias terms + the new head only)."""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, MethodError
from .base import Method, check_keys, save_pretrained, write_method_file

WEIGHTS_FILE = "weights.safetensors"


def _save_tensors(model, names, out_dir: Path, kind: str) -> None:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    state = model.state_dict()
    save_file({n: state[n].detach().contiguous().cpu() for n in sorted(names)}, out_dir / WEIGHTS_FILE)
    write_method_file(out_dir, kind)


def _load_tensors(model, trained_dir: Path):
    from safetensors.torch import load_file

    result = model.load_state_dict(load_file(Path(trained_dir) / WEIGHTS_FILE), strict=False)
    if result.unexpected_keys:
        raise MethodError(f"{trained_dir}: weights {result.unexpected_keys[:3]} do not belong to this model")
    return model


class _SavesTensors(Method):
    """A method whose cells save some of the model's tensors (_save_tensors): loading rebuilds the
    base model as training did and puts them back."""

    def load(self, model_dir, trained_dir, task_type, labels, hp, device, allow_pickle):
        model, _ = self.load_base(model_dir, task_type, labels, hp, device, allow_pickle)
        return _load_tensors(model, trained_dir)


class NoTraining(_SavesTensors):
    """The untrained baseline: the pretrained model with its task head as initialised (seeded)."""
    family = "none"
    presets = {"none": {}}
    lr_sources = {"none": "no training"}

    def validate(self, where, settings):
        check_keys(where, settings, set(), "none")

    def trains(self, settings):
        return False

    def describe(self, settings):
        return "nothing (the pretrained model with its seeded task head)"

    def prepare(self, model, hp, task_type, total_steps, new_weights):
        model.requires_grad_(False)
        return model

    def save(self, model, hp, out_dir, new_weights):
        _save_tensors(model, new_weights, out_dir, hp["kind"])  # its random head, so evaluation sees the same one


class FullFineTuning(Method):
    family = "full"
    presets = {"full": {"lr": 2.0e-5}}
    lr_sources = {"full": "BERT paper (Devlin et al. 2019): 2e-5 to 5e-5 for GLUE fine-tuning"}

    def validate(self, where, settings):
        check_keys(where, settings, set(), "full")

    def describe(self, settings):
        return "every weight"

    def save(self, model, hp, out_dir, new_weights):
        save_pretrained(model, out_dir, hp["kind"])

    def load(self, model_dir, trained_dir, task_type, labels, hp, device, allow_pickle):
        model, _ = task_type.load_pretrained(trained_dir, labels, allow_pickle)
        return model


HEAD_KEYS = {"hidden", "dropout", "pooling", "activation"}
HEAD_DEFAULTS = {"hidden": [256], "dropout": 0.1, "pooling": "cls", "activation": "gelu"}


class LinearProbe(_SavesTensors):
    """A frozen encoder and a small trainable head (see heads.LinearProbe for its shape)."""
    family = "linear_probe"
    presets = {"linear_probe": {"lr": 1.0e-3, "head": HEAD_DEFAULTS}}
    lr_sources = {"linear_probe": "common probe setting (Adam 1e-3 on frozen features); measured on MiniLM emotion"}

    def allowed_keys(self, settings):
        return {"head"}

    def validate(self, where, settings):
        check_keys(where, settings, {"head"}, "linear_probe")
        head = settings.get("head", {})
        if not isinstance(head, dict) or set(head) - HEAD_KEYS:
            raise ConfigError(f"{where}.head: expected a mapping with keys {', '.join(sorted(HEAD_KEYS))}")
        if head.get("pooling", "cls") not in ("cls", "mean"):
            raise ConfigError(f"{where}.head.pooling: must be 'cls' or 'mean'")
        if head.get("activation", "gelu") not in ("gelu", "relu", "tanh"):
            raise ConfigError(f"{where}.head.activation: must be gelu, relu or tanh")
        hidden = head.get("hidden", [])
        if not isinstance(hidden, list) or not all(isinstance(h, int) and h > 0 for h in hidden):
            raise ConfigError(f"{where}.head.hidden: must be a list of positive layer widths, e.g. [256]")

    def refusal(self, settings, task_type):
        from ..tasks import task_type as task_type_of

        if task_type_of(task_type).generates:
            return "a classification head cannot generate text"
        return None

    def describe(self, settings):
        return "a small head on the frozen encoder"

    def load_base(self, model_dir, task_type, labels, hp, device, allow_pickle):
        from transformers import AutoModel

        from .heads import LinearProbe as Probe

        from ..staging.models import NO_REMOTE_CODE

        encoder = AutoModel.from_pretrained(model_dir, use_safetensors=None if allow_pickle else True, **NO_REMOTE_CODE)
        head = {**HEAD_DEFAULTS, **hp.get("head", {})}
        model = Probe(encoder, len(labels), tuple(head["hidden"]), head["dropout"], head["pooling"],
                      head["activation"], per_token=task_type.per_token)
        return model, [n for n, _ in model.head.named_parameters(prefix="head")]

    def extra_stats(self, model):
        """The frozen encoder runs once per example (features are cached), the head every step."""
        return {"encoder_time_s": round(model.encoder_seconds, 3), "cached_examples": len(model.cache)}

    def save(self, model, hp, out_dir, new_weights):
        _save_tensors(model, [n for n in model.state_dict() if n.startswith("head.")], out_dir, hp["kind"])

    def merged_state(self, model):
        return {n: t for n, t in model.state_dict().items()}


class BitFit(_SavesTensors):
    """BitFit (Ben Zaken et al. 2022): only the bias terms train, plus the weights the task adds."""
    family = "bitfit"
    presets = {"bitfit": {"lr": 1.0e-3}}
    lr_sources = {"bitfit": "BitFit paper (Ben Zaken et al. 2022): 1e-4 to 1e-3 on GLUE; 1e-3 here for small data"}

    def validate(self, where, settings):
        check_keys(where, settings, set(), "bitfit")

    def describe(self, settings):
        return "bias terms and the task head"

    @staticmethod
    def trainable_names(model, new_weights) -> list[str]:
        return sorted({n for n, _ in model.named_parameters() if n.endswith(".bias")} | set(new_weights))

    def prepare(self, model, hp, task_type, total_steps, new_weights):
        names = set(self.trainable_names(model, new_weights))
        if not any(n.endswith(".bias") for n in names):
            raise MethodError(f"bitfit: {type(model).__name__} has no bias terms to train")
        for n, p in model.named_parameters():
            p.requires_grad_(n in names)
        return model

    def save(self, model, hp, out_dir, new_weights):
        _save_tensors(model, self.trainable_names(model, new_weights), out_dir, hp["kind"])

"""Any peft method, from YAML: a preset (lora, dora, vera, ...) or `kind: peft, peft_type: X`.

A method entry's settings are its PeftConfig's fields, passed through as written and checked
against peft's own dataclass (peft_fields.py): `{kind: lora, use_dora: true}` is DoRA,
`{kind: peft, peft_type: LOHA, r: 8, alpha: 16}` is LoHa. Some names are ours, not peft's:
`alpha` / `dropout` for LoRA-style configs (peft's `lora_alpha` / `lora_dropout`), `target_modules:
auto` (peft's per-architecture default), for LoRA `loraplus_lr_ratio` (LoRA+: B learns that many
times faster than A) and for AdaLoRA `tinit_ratio` / `tfinal_ratio` (its warm-up and final phases
as shares of the cell's steps; a `tinit` / `tfinal` step count wins). QLoRA is the same over a
4-bit base (`quant_type`, `double_quant`).

Weights created for the task (a classification head, a freshly initialised pooler) are added to
`modules_to_save`, so they train and are saved with the adapter.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import CellFailure, ConfigError, MethodError, did_you_mean, first_line
from .base import Method, check_keys, make_adamw, save_pretrained
from .peft_fields import RESERVED, peft_config_fields

# our names -> peft's, used only where the config class lacks our name and has peft's
ALIASES = {"alpha": "lora_alpha", "dropout": "lora_dropout", "delta_t": "deltaT"}
LORA_EXTRAS = {"loraplus_lr_ratio", "loraplus_lr_embedding"}  # LoRA+ optimizer settings
# AdaLoRA's schedule as shares of the cell's total steps (peft's tinit / tfinal are step counts)
ADALORA_EXTRAS = {"tinit_ratio", "tfinal_ratio"}
QUANT_KEYS = {"quant_type", "double_quant"}                     # bitsandbytes 4-bit settings
PROMPT_LEARNING = {"PROMPT_TUNING", "P_TUNING", "PREFIX_TUNING", "MULTITASK_PROMPT_TUNING", "CPT"}
# prompt methods that prepend virtual tokens to the input: the labels of a token task are not
# shifted past them (measured: "Expected input batch_size (24) to match target (14)")
INPUT_PROMPTS = {"PROMPT_TUNING", "P_TUNING", "MULTITASK_PROMPT_TUNING", "CPT"}

# names from papers and other libraries that difflib cannot match to peft's field (rank -> r)
NAMES_USERS_WRITE = {"rank": "r", "lora_r": "r", "lora_rank": "r", "scaling": "alpha", "lora_scaling": "alpha",
                     "modules": "target_modules", "target_layers": "target_modules", "n_virtual_tokens": "num_virtual_tokens",
                     "virtual_tokens": "num_virtual_tokens"}

LORA = {"peft_type": "LORA", "r": 8, "alpha": 16, "dropout": 0.1, "target_modules": "auto"}


class PeftMethod(Method):
    family = "peft"
    libraries = (*Method.libraries, "peft")
    presets = {
        "peft": {},  # the generic entry: `kind: peft, peft_type: X, <fields>`
        "lora": {**LORA, "lr": 5.0e-4},
        "dora": {**LORA, "use_dora": True, "lr": 5.0e-4},
        "rslora": {**LORA, "use_rslora": True, "lr": 5.0e-4},
        "pissa": {**LORA, "init_lora_weights": "pissa", "dropout": 0.0, "lr": 5.0e-4},
        "lora_plus": {**LORA, "loraplus_lr_ratio": 16, "lr": 2.0e-4},
        # AdaLoRA's update is B diag(E) A with E (the singular values) starting at zero and A, B at
        # std 0.02: under Adam E grows by about lr per step, so a short run needs a large lr (MiniLM
        # emotion, 141 steps, lr 2e-3: max |E| 0.13, the update about 1/20 of LoRA's; the majority class).
        # Warm-up 10% and final phase 50% of the steps and orth_reg_weight 0.1: the paper's GLUE
        # scripts (peft's defaults prune from step 1: tinit = tfinal = 0, orth_reg_weight 0.5).
        "adalora": {"peft_type": "ADALORA", "init_r": 12, "target_r": 8, "alpha": 16, "dropout": 0.1,
                    "target_modules": "auto", "tinit_ratio": 0.1, "tfinal_ratio": 0.5, "deltaT": 1,
                    "orth_reg_weight": 0.1, "lr": 1.0e-2},
        "ia3": {"peft_type": "IA3", "target_modules": "auto", "feedforward_modules": "auto", "lr": 3.0e-3},
        "vera": {"peft_type": "VERA", "r": 256, "target_modules": "auto", "lr": 5.0e-3},
        "loha": {"peft_type": "LOHA", "r": 8, "alpha": 16, "target_modules": "auto", "lr": 5.0e-4},
        "lokr": {"peft_type": "LOKR", "r": 8, "alpha": 16, "target_modules": "auto", "lr": 5.0e-4},
        "oft": {"peft_type": "OFT", "r": 0, "oft_block_size": 16, "target_modules": "auto", "lr": 5.0e-4},
        "boft": {"peft_type": "BOFT", "boft_block_size": 4, "boft_n_butterfly_factor": 1,
                 "target_modules": "auto", "lr": 5.0e-4},
        "fourierft": {"peft_type": "FOURIERFT", "n_frequency": 1000, "scaling": 150.0, "target_modules": "auto",
                      "lr": 5.0e-3},
        "ln_tuning": {"peft_type": "LN_TUNING", "lr": 1.0e-3},
        "prompt_tuning": {"peft_type": "PROMPT_TUNING", "num_virtual_tokens": 20, "lr": 3.0e-2},
        "p_tuning": {"peft_type": "P_TUNING", "num_virtual_tokens": 20, "encoder_hidden_size": 128, "lr": 1.0e-2},
        "prefix_tuning": {"peft_type": "PREFIX_TUNING", "num_virtual_tokens": 20, "prefix_projection": False,
                          "lr": 1.0e-2},
    }
    # where each default lr comes from. "method_comparison" is peft's MetaMathQA benchmark
    # (Llama-3.2-3B, 5,000 steps of batch 4; AdamW, cosine; default lr 1e-4), experiments/<method>/*
    lr_sources = {
        "lora": "LoRA paper's RoBERTa-base GLUE scripts (microsoft/LoRA examples/NLU): r=8, alpha 16, 4e-4 to "
                "5e-4; peft method_comparison: 1e-4",
        "dora": "lora's (the same BA update plus a magnitude per row); not measured separately",
        "rslora": "lora's (the same BA update, scaled alpha/sqrt(r)); not measured separately",
        "pissa": "lora's (the same BA update, initialised from the SVD); not measured separately",
        "lora_plus": "A at 2e-4, B and the head at 16 x 2e-4; ratio 16 as in peft's LoRA+ docs example (lr "
                     "5e-5 there); 2e-4 not measured here",
        "adalora": "measured here (MiniLM emotion, 141 steps, 400 test examples): 0.35 accuracy at 2e-3, 0.655 at "
                   "5e-3, 0.79 at 1e-2 (LoRA r=16: 0.54 at 1e-3, 0.595 at 2e-3, 0.35 at 5e-3 and 1e-2); AdaLoRA "
                   "paper's DeBERTaV3 GLUE scripts: 5e-4 to 1.2e-3 over thousands of steps",
        "ia3": "T-Few (Liu et al. 2022; r-three/t-few configs/ia3.json): 3e-3 for 1,000 steps; peft "
               "method_comparison: 1e-3 and 5e-3 (at its default 1e-4 IA3 scored 0.31, at 1e-3 0.40); measured "
               "here: 6 steps on SmolLM2 move the vectors up to 1.1% from 1.0 (3e-2: 10.6%); MiniLM emotion, 141 "
               "steps: 0.51 accuracy at 3e-3, 0.73 at 1e-2",
        "vera": "peft method_comparison: 1e-3 with r=256; 5e-3 here, not measured",
        "loha": "lora's; peft method_comparison runs LoHa at its default 1e-4; not measured here",
        "lokr": "lora's; peft method_comparison: 3e-3 (r=32, factor 4); not measured here",
        "oft": "lora's; peft method_comparison runs OFT at its default 1e-4; not measured here",
        "boft": "lora's; peft method_comparison runs BOFT (block_size 4) at its default 1e-4; not measured here",
        "fourierft": "peft method_comparison: n_frequency 1000, scaling 300 at its default 1e-4; 5e-3 and "
                     "scaling 150 here, not measured",
        "ln_tuning": "peft method_comparison runs LN tuning at its default 1e-4; 1e-3 here, not measured",
        "prompt_tuning": "peft method_comparison: 1e-3; 3e-2 here, not measured",
        "p_tuning": "peft method_comparison runs P-tuning at its default 1e-4; 1e-2 here, not measured",
        "prefix_tuning": "peft method_comparison: 1e-3 and 5e-3; 1e-2 here, not measured",
    }

    # ------------------------------------------------------------------ planning (no torch)
    def peft_type(self, where: str, settings: dict) -> str:
        peft_type = settings.get("peft_type")
        types = peft_config_fields()
        if peft_type is None:
            raise ConfigError(f"{where}.peft_type: required with kind: peft (one of {', '.join(sorted(types))})")
        if peft_type not in types:
            raise ConfigError(f"{where}.peft_type: peft has no method {peft_type!r}{did_you_mean(peft_type, types)}")
        return peft_type

    def config_fields(self, peft_type: str) -> set[str]:
        return set(peft_config_fields()[peft_type][1]) - RESERVED

    def allowed_keys(self, settings):
        peft_type = settings.get("peft_type")
        if peft_type not in peft_config_fields():
            return {"peft_type"}
        fields = self.config_fields(peft_type)
        aliases = {ours for ours, theirs in ALIASES.items() if theirs in fields and ours not in fields}
        extras = LORA_EXTRAS if peft_type == "LORA" else ADALORA_EXTRAS if peft_type == "ADALORA" else set()
        return fields | aliases | extras | {"peft_type"}

    def validate(self, where, settings):
        peft_type = self.peft_type(where, settings)
        cls = peft_config_fields()[peft_type][0]
        allowed = self.allowed_keys(settings)
        for ours, theirs in ALIASES.items():
            if ours in settings and theirs in settings:
                raise ConfigError(f"{where}.{theirs}: peftgrid's {ours} is peft's {theirs}, one setting written twice "
                                  f"({ours}: {settings[ours]}, {theirs}: {settings[theirs]}); keep {ours}")
        for key in settings:
            if key in RESERVED - {"peft_type"}:
                raise ConfigError(f"{where}.{key}: set by peftgrid from the task and the method; leave it out")
            if key not in allowed:
                meant = NAMES_USERS_WRITE.get(key)
                hint = (f" — did you mean {meant!r}?" if meant in allowed
                        else did_you_mean(key, allowed - {"peft_type"}))
                raise ConfigError(f"{where}.{key}: {cls} has no field {key!r}{hint}")
        for key in ("r", "init_r", "target_r", "num_virtual_tokens"):
            value = settings.get(key)
            # OFT's r may be 0 (its block size then sets the rank); every other rank is at least 1
            least = 0 if (key == "r" and peft_type in ("OFT", "BOFT")) else 1
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise ConfigError(f"{where}.{key}: must be an integer of at least {least}, got {value!r}")
        ratios = [settings.get(k) for k in ("tinit_ratio", "tfinal_ratio")]
        for key, value in zip(("tinit_ratio", "tfinal_ratio"), ratios):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not 0 <= value < 1):
                raise ConfigError(f"{where}.{key}: must be a share of the training steps, 0 <= {key} < 1, got {value!r}")
        if all(isinstance(v, (int, float)) for v in ratios) and sum(ratios) >= 1:
            raise ConfigError(f"{where}: tinit_ratio + tfinal_ratio must be below 1 (AdaLoRA needs steps to "
                              f"reallocate ranks), got {ratios[0]:g} + {ratios[1]:g}")
        for key in ("target_modules", "feedforward_modules", "modules_to_save"):
            value = settings.get(key)
            if value is not None and value != "auto" and not (
                    isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise ConfigError(f"{where}.{key}: must be 'auto' or a list of module names")

    def refusal(self, settings, task_type):
        from ..tasks import task_type as task_type_of

        if settings.get("peft_type") in INPUT_PROMPTS and task_type_of(task_type).per_token:
            return ("peft's prompt tuning prepends virtual tokens but does not shift token labels past them; "
                    "use prefix_tuning (P-tuning v2)")
        return None

    def describe(self, settings):
        peft_type = settings.get("peft_type")
        if peft_type == "LORA":
            text = "low-rank updates BA of the target weights"
            if settings.get("use_dora"):
                text += ", split into magnitude and direction (DoRA)"
            if settings.get("use_rslora"):
                text += ", rank-stabilised scaling alpha/sqrt(r)"
            if str(settings.get("init_lora_weights", "")).startswith("pissa"):
                text += ", initialised from the weights' principal components (PiSSA)"
            if settings.get("loraplus_lr_ratio"):
                text += f"; B learns {settings['loraplus_lr_ratio']:g}x faster than A (LoRA+)"
            return text
        return {"PROMPT_TUNING": "virtual input tokens", "P_TUNING": "virtual tokens from a small prompt encoder",
                "PREFIX_TUNING": "key/value prefixes in every layer (P-tuning v2)", "LN_TUNING": "the LayerNorm weights",
                "IA3": "scaling vectors on keys, values and feed-forward activations",
                "ADALORA": "SVD-form low-rank updates whose ranks are reallocated while training",
                "VERA": "scaling vectors on shared frozen random low-rank matrices",
                "LOHA": "low-rank Hadamard-product updates", "LOKR": "low-rank Kronecker-product updates",
                "OFT": "block-diagonal orthogonal rotations of the target weights",
                "BOFT": "butterfly-factorised orthogonal rotations of the target weights",
                "FOURIERFT": "a few learned spectral coefficients per target weight",
                }.get(peft_type, f"{peft_type} adapter weights")

    # ------------------------------------------------------------------ building (torch)
    def peft_config(self, hp: dict, task_type, total_steps: int, new_modules: list[str]):
        """The PeftConfig of this cell; peft's own checks of the values become one-line errors."""
        import peft

        peft_type = hp["peft_type"]
        fields = self.config_fields(peft_type)
        kwargs = {}
        for key, value in hp.items():
            name = ALIASES.get(key, key) if key not in fields else key
            if name in fields:
                kwargs[name] = None if value == "auto" else value
        if peft_type == "IA3" and kwargs.get("target_modules") is not None and kwargs.get("feedforward_modules") is None:
            kwargs["feedforward_modules"] = []  # explicit targets: none of them is a feed-forward layer unless named
        if peft_type == "ADALORA":
            kwargs["total_step"] = total = max(total_steps, 1)
            for key in ("tinit", "tfinal"):  # a step count in the entry wins over the preset's share
                if kwargs.get(key) is None and hp.get(f"{key}_ratio") is not None:
                    kwargs[key] = int(hp[f"{key}_ratio"] * total)  # floors: tinit + tfinal < total
        if new_modules:
            kwargs["modules_to_save"] = sorted(set(kwargs.get("modules_to_save") or []) | set(new_modules))
        config_cls = peft.PEFT_TYPE_TO_CONFIG_MAPPING[peft_type]
        try:
            return config_cls(task_type=task_type.peft_task_type, **kwargs)
        except (ValueError, TypeError) as e:
            raise MethodError(f"methods.{hp['kind']}: {config_cls.__name__} refuses these settings: {first_line(e, typed=False)}") from None

    def prepare(self, model, hp, task_type, total_steps, new_weights):
        import peft

        new_modules = sorted({n.rsplit(".", 1)[0] for n in new_weights})
        if hp["peft_type"] == "LN_TUNING" and hp.get("target_modules", "auto") == "auto":
            hp = {**hp, "target_modules": norm_layers(model)}  # peft maps LN targets for few architectures
        config = self.peft_config(hp, task_type, total_steps, new_modules)
        try:
            return peft.get_peft_model(model, config)
        except (ValueError, TypeError, NotImplementedError, AttributeError, RuntimeError) as e:
            raise MethodError(f"peft cannot apply {hp['kind']} to {type(model).__name__}: {first_line(e, typed=False)}") from None

    def make_optimizer(self, model, hp):
        """LoRA+ (Hayou et al. 2024): the B matrices learn `loraplus_lr_ratio` times faster than A.
        Groups built here, not by peft.optimizers.create_loraplus_optimizer: that gives a new task
        head's weight A's rate and its bias B's, and on MiniLM emotion the preset then learned only
        the class prior (0.30 test accuracy at lr 2e-4 to 2e-3). Weights that are not LoRA matrices
        (the head, a new pooler) train at B's rate, the rate a plain LoRA run gives them (LoRA+
        lowers A's lr, not the head's); weight_decay applies as under plain AdamW."""
        ratio = hp.get("loraplus_lr_ratio")
        if ratio is None:
            return super().make_optimizer(model, hp)
        lr, wd = hp["lr"], hp["weight_decay"]
        groups = {"A": [], "B": [], "embedding_B": [], "decay": [], "no_decay": []}
        for name, p in model.named_parameters():
            if not p.requires_grad:
                continue
            if "lora_embedding_B" in name:
                groups["embedding_B"].append(p)
            elif "lora_B" in name:
                groups["B"].append(p)
            elif "lora_A" in name or "lora_embedding_A" in name:
                groups["A"].append(p)
            elif p.ndim < 2 or "norm" in name.lower():
                groups["no_decay"].append(p)  # biases, norms, DoRA's magnitudes
            else:
                groups["decay"].append(p)
        settings = {"A": (lr, wd), "B": (lr * ratio, wd), "embedding_B": (hp.get("loraplus_lr_embedding") or 1e-6, wd),
                    "decay": (lr * ratio, wd), "no_decay": (lr * ratio, 0.0)}
        return make_adamw([{"params": ps, "lr": settings[k][0], "weight_decay": settings[k][1]}
                           for k, ps in groups.items() if ps], lr, self.paged_optimizer(hp))

    def after_step(self, model, step):
        if hasattr(model.base_model, "update_and_allocate"):
            model.base_model.update_and_allocate(step)  # AdaLoRA's rank reallocation (needs total_step)

    def split_loss(self, model, loss):
        """AdaLoRA adds orth_reg_weight x its orthogonality regulariser to the model's loss, in eval
        mode too; the task loss is that sum minus the regulariser, recomputed as peft computes it."""
        if model.peft_config["default"].peft_type != "ADALORA":
            return loss, None
        reg = adalora_regulariser(model) * model.peft_config["default"].orth_reg_weight
        return loss - reg.detach(), reg.detach()

    def snapshot(self, model):
        """AdaLoRA: the rank pattern the weights were pruned to (None until its final phase)."""
        import copy

        config = model.peft_config["default"]
        return copy.deepcopy(getattr(config, "rank_pattern", None)) if config.peft_type == "ADALORA" else None

    def restore_snapshot(self, model, snap):
        config = model.peft_config["default"]
        if config.peft_type == "ADALORA":
            config.rank_pattern = snap

    def save(self, model, hp, out_dir, new_weights):
        save_pretrained(model, out_dir, hp["kind"])

    def load(self, model_dir, trained_dir, task_type, labels, hp, device, allow_pickle):
        import peft

        model, _ = self.load_base(model_dir, task_type, labels, hp, device, allow_pickle)
        return peft.PeftModel.from_pretrained(self._ready(model), trained_dir)

    def _ready(self, model):
        return model

    def merged_for_inference(self, model):
        if model.peft_config["default"].is_prompt_learning:
            return None
        try:
            return model.merge_and_unload()
        except (NotImplementedError, ValueError, AttributeError, TypeError):
            return None  # a peft method without a merge: measured as it is

    def merged_state(self, model):
        """Prompt learning has nothing to merge: the base is taken as it is, with the trained copy of
        each `modules_to_save` module (the head) in place of the original. Adapters are merged."""
        config = model.peft_config["default"]
        if config.is_prompt_learning:
            return {name.replace(".modules_to_save.default.", "."): t
                    for name, t in model.base_model.state_dict().items() if ".original_module." not in name}
        return dict(model.merge_and_unload().state_dict())

    def extra_distances(self, trained_dir):
        """Prompt and prefix tuning: the norm of the learned virtual tokens (no base counterpart)."""
        path = Path(trained_dir) / "adapter_model.safetensors"
        if not path.is_file():
            return []
        import torch
        from safetensors.torch import load_file

        tensors = [v for k, v in load_file(path).items() if "prompt" in k]
        if not tensors:
            return []
        norm = float(torch.sqrt(sum((t.float() ** 2).sum() for t in tensors)))
        return [{"name": "prompt_encoder (learned virtual tokens)", "component": "prompt", "layer": "", "numel": "",
                 "distance": norm, "base_norm": 0.0, "relative": ""}]


class QuantizedPeft(PeftMethod):
    """A peft adapter over a 4-bit (bitsandbytes NF4/FP4) base: QLoRA and its variants
    (`{kind: qlora, use_dora: true}` is QDoRA). Needs CUDA: bitsandbytes 4-bit layers have no
    working CPU forward pass."""
    family = "qlora"
    libraries = (*PeftMethod.libraries, "bitsandbytes")
    presets = {"qlora": {**LORA, "quant_type": "nf4", "double_quant": True, "lr": 2.0e-4}}
    lr_sources = {"qlora": "QLoRA (Dettmers et al. 2023), artidoro/qlora's Guanaco-7B script: 2e-4 (r=64, alpha 16)"}

    def allowed_keys(self, settings):
        return super().allowed_keys(settings) | QUANT_KEYS

    def validate(self, where, settings):
        super().validate(where, {k: v for k, v in settings.items() if k not in QUANT_KEYS})
        if settings.get("quant_type", "nf4") not in ("nf4", "fp4"):
            raise ConfigError(f"{where}.quant_type: must be 'nf4' or 'fp4'")
        if not isinstance(settings.get("double_quant", True), bool):
            raise ConfigError(f"{where}.double_quant: must be true or false")

    def needs_cuda(self, settings):
        return True

    def describe(self, settings):
        return super().describe(settings) + ", over a 4-bit NF4 base"

    def load_base(self, model_dir, task_type, labels, hp, device, allow_pickle):
        import torch
        from transformers import BitsAndBytesConfig

        compute = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=hp["quant_type"],
                                   bnb_4bit_use_double_quant=hp["double_quant"], bnb_4bit_compute_dtype=compute)
        placement = {"": device.index or 0} if device.type == "cuda" else {"": "cpu"}
        return task_type.load_pretrained(model_dir, labels, allow_pickle, quantization_config=quant,
                                         device_map=placement)

    def _ready(self, model):
        import peft

        return peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)

    def prepare(self, model, hp, task_type, total_steps, new_weights):
        return super().prepare(self._ready(model), hp, task_type, total_steps, new_weights)

    def place(self, model, device):
        return model  # placed by device_map when loaded

    def merged_for_inference(self, model):
        return None  # merging into a 4-bit base would dequantize it: deployed as it was trained

    def distance_models(self, model_dir, trained_dir, task_type, labels, hp, allow_pickle):
        """Against the full-precision pretrained weights: the adapter merged into the dequantized
        4-bit base it actually trained on, so the distances include what 4-bit quantization changed."""
        import peft
        import torch

        cpu = torch.device("cpu")
        reference, _ = Method.load_base(self, model_dir, task_type, labels, hp, cpu, allow_pickle)
        base = self.dequantized_base(model_dir, task_type, labels, hp, allow_pickle)
        return reference, peft.PeftModel.from_pretrained(base, trained_dir)

    def dequantized_base(self, model_dir, task_type, labels, hp, allow_pickle):
        """The pretrained model with every 4-bit weight replaced by its dequantized value (on the CPU:
        bitsandbytes loads and dequantizes 4-bit there, it only cannot run the 4-bit forward)."""
        import bitsandbytes as bnb
        import torch

        quantized, _ = self.load_base(model_dir, task_type, labels, hp, torch.device("cpu"), allow_pickle)
        model, _ = Method.load_base(self, model_dir, task_type, labels, hp, torch.device("cpu"), allow_pickle)
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, module in quantized.named_modules():
                if isinstance(module, bnb.nn.Linear4bit):
                    w = bnb.functional.dequantize_4bit(module.weight.data, module.weight.quant_state)
                    params[f"{name}.weight"].copy_(w.to(params[f"{name}.weight"].dtype))
        return model


def adalora_regulariser(model):
    """peft's AdaLoRA orthogonality regulariser: the mean of ||AA^T - I|| and ||B^TB - I|| (Frobenius)."""
    import torch

    total, count = None, 0
    for name, p in model.named_parameters():
        if ("lora_A" in name or "lora_B" in name) and "default" in name:
            cov = p @ p.T if "lora_A" in name else p.T @ p
            term = torch.norm(cov - torch.eye(*cov.shape, device=cov.device, dtype=cov.dtype), p="fro")
            total = term if total is None else total + term
            count += 1
    return total / count if count else torch.zeros(())


def norm_layers(model) -> list[str]:
    """The leaf names of a model's normalisation layers (BERT: LayerNorm; GPT-2: ln_1, ln_2, ln_f)."""
    return sorted({name.rsplit(".", 1)[-1] for name, module in model.named_modules()
                   if name and "norm" in type(module).__name__.lower()})

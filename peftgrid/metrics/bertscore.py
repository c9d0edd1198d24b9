"""BERTScore (Zhang et al., 2020; the `bert-score` package): each hypothesis token matched to its
most similar reference token by cosine similarity of contextual embeddings, F1 of the matches;
with several references, the best. Computed in the evaluation job from the hypotheses it has,
with a local encoder so it runs offline — by default all-MiniLM-L6-v2, an English model (use it
on English outputs, e.g. SciTLDR summaries). The config's top-level `bertscore:` (model, layer,
batch_size) says which; the metrics row records the model and layer beside the score, and each
example's F1 is kept in predictions.jsonl for the paired significance tests. No IDF weighting and
no baseline rescaling: the score is the raw F1, comparable only between runs of one model and layer.
Registered in metrics/__init__.py like a plugin's metric (metrics.register), torch imported only here."""
from __future__ import annotations

from pathlib import Path


def local_encoder(settings: dict, base_dir: Path) -> Path:
    """The encoder's folder, checked (at parse time too: plan.paths): local, and deep enough for
    the layer asked. A relative folder starts at the working directory, as models.<m>.source does."""
    import json

    from ..errors import ConfigError, ModelError
    from ..staging.models import resolve_local_source

    try:
        path = resolve_local_source(settings["model"], base_dir)
    except ModelError as e:
        raise ConfigError(f"bertscore.model: {e}") from None
    if path is None or not (path / "config.json").is_file():
        raise ConfigError(f"bertscore.model: {settings['model']}: expected a local model folder (config.json) or "
                          f"package:<module>/<folder>; BERTScore runs offline, never from the hub")
    layers = json.loads((path / "config.json").read_text()).get("num_hidden_layers")
    if layers is not None and settings["layer"] > layers:
        raise ConfigError(f"bertscore.layer: {settings['layer']}, but {settings['model']} has {layers} layers")
    return path


def bertscore(hypotheses: list[str], references: list[list[str]], metric_settings: dict, **_):
    """(F1 mean with the model and layer it used, per-example F1). `metric_settings["bertscore"]`:
    the config's `bertscore:` (model, layer, batch_size; defaults in the config schema)."""
    settings = metric_settings["bertscore"]
    if not hypotheses:
        return {"bertscore": float("nan"), "bertscore_model": settings["model"], "bertscore_layer": settings["layer"]}, []
    from bert_score import BERTScorer

    from ..engine.device import pick_device

    path = local_encoder(settings, Path("."))
    scorer = BERTScorer(model_type=str(path), num_layers=settings["layer"], batch_size=settings["batch_size"],
                        device=str(pick_device()))
    # empty hypotheses or references would make bert-score warn and score them 0 anyway; keep them explicit
    _, _, f1 = scorer.score([h if h.strip() else " " for h in hypotheses],
                            [[r if r.strip() else " " for r in refs] for refs in references])
    each = [float(x) for x in f1]
    return ({"bertscore": sum(each) / len(each), "bertscore_model": settings["model"],
             "bertscore_layer": settings["layer"]}, each)

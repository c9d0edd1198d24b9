"""From summary.tsv to what a reader decides with: seed aggregates, Pareto fronts and
recommendations computed from the numbers."""
from __future__ import annotations

import math

import pandas as pd

COSTS = {"trainable_params": "trainable parameters", "train_time_s": "training time (s)",
         "peak_train_mem_mb": "peak training memory (MB)"}
COST_COLUMNS = ["trainable_params", "trainable_pct", "train_time_s", "time_per_epoch_s", "peak_train_mem_mb",
                "peak_infer_mem_mb", "infer_throughput"]


def load_summary(path) -> pd.DataFrame:
    df = pd.read_csv(path, sep="\t", keep_default_na=True, dtype={"variant": str, "decoding": str, "error": str})
    df["decoding"] = df["decoding"].fillna("")
    df["error"] = df["error"].fillna("")
    return df


def t_quantile(n: int) -> float:
    """Two-sided 95% Student t quantile for n samples (n-1 degrees of freedom)."""
    if n < 2:
        return float("nan")
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1))


def aggregate_seeds(df: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """One row per (task, method, variant, eval, decoding): mean, std and 95% interval over seeds
    for each metric, mean costs. Failed seeds are counted apart and not averaged in."""
    keys = ["task", "method", "variant", "eval", "decoding"]
    rows = []
    for key, g in df.groupby(keys, sort=True, dropna=False):
        ok = g[g["status"] == "ok"]
        row = dict(zip(keys, key))
        row["seeds"] = len(g)
        row["failed"] = int((g["status"] != "ok").sum())
        row["status"] = "ok" if len(ok) else "failed"
        row["error"] = "; ".join(sorted(set(g.loc[g["status"] != "ok", "error"]))) if row["failed"] else ""
        row["n"] = len(ok)
        for metric in metrics:
            values = pd.to_numeric(ok[metric], errors="coerce").dropna() if metric in ok else pd.Series(dtype=float)
            n = len(values)
            row[metric] = values.mean() if n else float("nan")
            row[f"{metric}_std"] = values.std(ddof=1) if n > 1 else float("nan")
            row[f"{metric}_ci95"] = t_quantile(n) * row[f"{metric}_std"] / math.sqrt(n) if n > 1 else float("nan")
        for col in COST_COLUMNS:
            row[col] = pd.to_numeric(ok[col], errors="coerce").mean() if (col in ok and len(ok)) else float("nan")
        rows.append(row)
    return pd.DataFrame(rows)


def pareto_front(df: pd.DataFrame, quality: str, cost: str) -> pd.Series:
    """True for points no other point beats on both: higher quality and lower (or equal) cost."""
    valid = df[[quality, cost]].notna().all(axis=1)
    front = pd.Series(False, index=df.index)
    order = df[valid].sort_values([cost, quality], ascending=[True, False])
    best = -math.inf
    for idx, r in order.iterrows():
        if r[quality] > best:
            front[idx] = True
            best = r[quality]
    return front


def cell_label(r) -> str:
    return r["method"] if r["variant"] == "default" else f"{r['method']} {r['variant']}"


def recommendations(agg: pd.DataFrame, metric: str, within_points: float, budget_pct: float) -> list[dict]:
    """Best quality; cheapest within `within_points` of it; best under a trainable-parameter
    budget; fastest within `within_points`. Quality is in points (x100 for 0..1 metrics)."""
    ok = agg[(agg["status"] == "ok") & agg[metric].notna()].copy()
    if ok.empty:
        return []
    scale = 100.0 if ok[metric].abs().max() <= 1.0 else 1.0
    ok["points"] = ok[metric] * scale
    best = ok.loc[ok["points"].idxmax()]
    near = ok[ok["points"] >= best["points"] - within_points]
    trained = ok[ok["method"] != "none"]
    under = trained[trained["trainable_pct"] <= budget_pct]
    recs = [("best quality", best)]
    recs.append((f"fewest trainable parameters within {within_points:g} point(s) of the best",
                 near.loc[near["trainable_params"].idxmin()]))
    if not under.empty:
        recs.append((f"best quality with at most {budget_pct:g}% trainable parameters", under.loc[under["points"].idxmax()]))
    timed = near[near["train_time_s"].notna()]
    if not timed.empty:
        recs.append((f"fastest to train within {within_points:g} point(s) of the best", timed.loc[timed["train_time_s"].idxmin()]))
    out = []
    for what, r in recs:
        out.append({"recommendation": what, "cell": cell_label(r), "method": r["method"], "variant": r["variant"],
                    metric: r[metric], "trainable_params": r["trainable_params"], "trainable_pct": r["trainable_pct"],
                    "train_time_s": r["train_time_s"], "peak_train_mem_mb": r["peak_train_mem_mb"], "seeds": r["n"]})
    return out


def primary_eval(task_cfg: dict, report_cfg: dict, task: str) -> str:
    chosen = report_cfg.get("eval_set", {}).get(task)
    if chosen:
        return chosen
    return "test" if "test" in task_cfg["eval"] else next(iter(task_cfg["eval"]))


def primary_metric(task_cfg: dict, report_cfg: dict, task: str) -> str:
    return report_cfg.get("quality_metric", {}).get(task) or task_cfg["metrics"][0]


def seed_label(cell: dict) -> str:
    """One run's label: method, variant (unless default) and seed."""
    return f"{cell_label(cell)} {cell['seed']}"

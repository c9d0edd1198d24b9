"""Figures of the report (matplotlib, no display). Each function writes PNG and SVG."""
from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from ..columns import OK  # noqa: E402
from ..metrics import higher_is_better  # noqa: E402
from .analysis import (COSTS, FRONT, FRONT_CAPTION, LEARN_FORGET_CAPTION, cell_label, forgetting_label,  # noqa: E402
                       pareto_front, retention_column)
from .distances import COMPONENTS  # noqa: E402


def better(higher: bool) -> str:
    """An axis label's direction note."""
    return "higher is better" if higher else "lower is better"


def save(fig, png: str | Path) -> None:
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=120, bbox_inches="tight")
    fig.savefig(png.with_suffix(".svg"), bbox_inches="tight")
    plt.close(fig)


def empty(png, message: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=11)
    save(fig, png)


def learning_curves(logs: dict[str, pd.DataFrame], title: str, png) -> None:
    """Train (left) and validation (right) loss by step, one line per cell."""
    if not logs:
        return empty(png, f"{title}: no finished cell has a loss curve")
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), sharey=True)
    cmap = plt.get_cmap("tab20")
    for i, (label, log) in enumerate(sorted(logs.items())):
        color = cmap(i % 20)
        tr = log.dropna(subset=["train_loss"])
        va = log.dropna(subset=["val_loss"])
        axes[0].plot(tr["step"], tr["train_loss"], color=color, label=label, lw=1.4)
        axes[1].plot(va["step"], va["val_loss"], color=color, marker="o", ms=3, label=label, lw=1.4)
    for ax, name in zip(axes, ("training loss", "validation loss")):
        ax.set_xlabel("optimizer step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("loss")
    axes[1].legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    fig.suptitle(title)
    save(fig, png)


def pareto(agg: pd.DataFrame, metric: str, evals: list[str], title: str, png, chosen: dict | None = None,
           sig: pd.DataFrame | None = None, higher_is_better: bool = True, baseline: str | None = None) -> None:
    """Quality against each cost, one row of panels per eval set, each method at its chosen decoding
    (`chosen`: method -> (variant, decoding), analysis.chosen_cells; without it every cell).
    With `sig` (tables.significance) the chosen cells carry their bootstrap 95% intervals, the red
    line is the front of analysis.significant_front and the dashed grey line the plain front of
    the means, with the definition written under the figure; without it, the plain front only."""
    ok = agg[(agg["status"] == OK) & agg[metric].notna()]
    if chosen is not None:  # one decoding per method: the one it is compared at
        at = {m: d for m, (_, d) in chosen.items()}
        ok = ok[[at.get(m) == str(d) for m, d in zip(ok["method"], ok["decoding"].fillna(""))]]
    if ok.empty:
        return empty(png, f"{title}: no finished cell to plot")
    tested = sig is not None and not sig.empty and "ci_low" in sig
    fig, axes = plt.subplots(len(evals), len(COSTS), figsize=(5.2 * len(COSTS), 4.2 * len(evals)), squeeze=False)
    for row, ev in enumerate(evals):
        sub = ok[ok["eval"] == ev]
        base = (sig.loc[(sig["eval"] == ev) & (sig["method"] == baseline), "score"] if tested
                else sub.loc[sub["method"] == baseline, metric])  # the untrained reference, a line on every panel
        for col, (cost, cost_label) in enumerate(COSTS.items()):
            ax = axes[row][col]
            pts = sub[sub[cost].notna() & (sub["method"] != baseline)]  # the untrained baseline: the dotted line
            if pts.empty:
                ax.axis("off")
                continue
            s = sig[(sig["eval"] == ev) & sig["ci_low"].notna()] if tested else pd.DataFrame()
            if len(s):
                s = s.merge(pts.drop_duplicates(["method", "variant"]), on=["method", "variant"], suffixes=("", "_agg"))
            if len(base):
                ax.axhline(base.iloc[0], color="0.5", ls=":", lw=1, label=f"{baseline} (untrained)")
            if len(s) and f"front_{cost}" in s and s[f"front_{cost}"].notna().any():
                s = s[s[f"front_{cost}"].notna()]
                on = s[f"front_{cost}"].eq(FRONT)
                shown = set(zip(s["method"], s["variant"]))
                rest = pts[[k not in shown for k in zip(pts["method"], pts["variant"])]]
                ax.scatter(rest[cost], rest[metric], color="0.85", s=16, label="other variants")
                plain = s[pareto_front(s, "score", cost, higher_is_better)].sort_values(cost)
                ax.plot(plain[cost], plain["score"], "--", color="0.55", lw=1.2, label="plain front of the means")
                ax.errorbar(s[cost].to_numpy(), s["score"].to_numpy(),
                            yerr=[(s["score"] - s["ci_low"]).to_numpy(), (s["ci_high"] - s["score"]).to_numpy()],
                            fmt="none", ecolor="0.3", elinewidth=1, capsize=3, label="95% CI (bootstrap)")
                ax.scatter(s.loc[~on, cost], s.loc[~on, "score"], color="0.45", s=28, label="off the front")
                fr = s[on].sort_values(cost)
                ax.plot(fr[cost], fr["score"], "-o", color="tab:red", ms=6, label="front (each step a significant gain)")
                labelled, y = s, "score"
            else:
                front = pareto_front(pts, metric, cost, higher_is_better)
                ax.scatter(pts.loc[~front, cost], pts.loc[~front, metric], color="0.6", s=28, label="dominated")
                fr = pts[front].sort_values(cost)
                ax.plot(fr[cost], fr[metric], "-o", color="tab:red", ms=6, label="plain front of the means")
                labelled, y = fr, metric
            for _, r in labelled.iterrows():
                ax.annotate(cell_label(r), (r[cost], r[y]), textcoords="offset points", xytext=(4, 4), fontsize=8)
            if (pts[cost] > 0).all() and pts[cost].max() / pts[cost].min() > 50:
                ax.set_xscale("log")
            ax.set_xlabel(cost_label)
            ax.set_ylabel(f"{metric} ({ev}, {better(higher_is_better)})")
            ax.grid(alpha=0.3)
            if row == 0 and col == 0:
                ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    caption = FRONT_CAPTION if tested else "Red: the plain front of the means (no paired tests: no per-example predictions)."
    fig.text(0.5, 0.0, textwrap.fill(caption, 160), ha="center", va="top", fontsize=8)
    save(fig, png)


def learn_forget(comp: pd.DataFrame, retention: list, metric: str, title: str, png, higher_is_better: bool = True,
                 baseline: str | None = None) -> None:
    """Task score against forgetting, one panel per retention set (`retention`: analysis.Retention),
    one point per method at its chosen cell (`comp`: tables.significance's rows on the primary eval
    set, with the retention columns) with its 95% intervals on both axes (Retention.table's on x), the red front
    (analysis.significant_front, forgetting as the cost) and the plain front of the means in grey."""
    if not retention:
        return empty(png, f"{title}: the task has no retention set")
    if comp.empty or "score" not in comp:
        return empty(png, f"{title}: no paired comparison of the task's methods")
    fig, axes = plt.subplots(1, len(retention), figsize=(6.4 * len(retention), 4.8), squeeze=False)
    for ax, ret in zip(axes[0], retention):
        col = retention_column(ret.name)
        pts = comp[(comp["method"] != baseline) & comp[col].notna()].merge(
            ret.table[["method", "low", "high"]], on="method", how="left")
        if pts.empty:
            ax.axis("off")
            ax.set_title(f"{ret.name}: no measurement")
            continue
        base = comp.loc[comp["method"] == baseline, "score"]
        if len(base):
            ax.axhline(base.iloc[0], color="0.5", ls=":", lw=1, label=f"{baseline} (untrained)")
        ax.axvline(0.0, color="0.7", ls="-", lw=0.8, label="the pretrained model (no forgetting)")
        xerr = [(pts[col] - pts["low"]).clip(lower=0).fillna(0).to_numpy(),
                (pts["high"] - pts[col]).clip(lower=0).fillna(0).to_numpy()]
        yerr = [(pts["score"] - pts["ci_low"]).to_numpy(), (pts["ci_high"] - pts["score"]).to_numpy()]
        ax.errorbar(pts[col].to_numpy(), pts["score"].to_numpy(), xerr=xerr, yerr=yerr, fmt="none", ecolor="0.3",
                    elinewidth=1, capsize=3, label="95% intervals")
        plain = pts[pareto_front(pts, "score", col, higher_is_better)].sort_values(col)
        ax.plot(plain[col], plain["score"], "--", color="0.55", lw=1.2, label="plain front of the means")
        on = pts[f"front_{col}"].eq(FRONT)
        ax.scatter(pts.loc[~on, col], pts.loc[~on, "score"], color="0.45", s=28, label="off the front")
        fr = pts[on].sort_values(col)
        ax.plot(fr[col], fr["score"], "-o", color="tab:red", ms=6, label="front (each step a significant gain)")
        for _, r in pts.iterrows():
            ax.annotate(cell_label(r), (r[col], r["score"]), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(textwrap.fill(forgetting_label(ret.measure), 60))
        ax.set_ylabel(f"{metric} ({comp['eval'].iloc[0]}, {better(higher_is_better)})")
        ax.set_title(f"retention set `{ret.name}`")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(title)
    fig.tight_layout()
    fig.text(0.5, 0.0, textwrap.fill(LEARN_FORGET_CAPTION, 120), ha="center", va="top", fontsize=8)
    save(fig, png)


def distance_bars(dist: pd.DataFrame, title: str, png) -> None:
    """Mean distance per component, one bar per cell, components on the x axis."""
    if dist.empty:
        return empty(png, f"{title}: no weight distances (no finished cell)")
    comps = [c for c in COMPONENTS if c in set(dist["component"])]
    cells = sorted(dist["cell"].unique())
    table = dist.pivot_table(index="component", columns="cell", values="distance", aggfunc="mean").reindex(comps)
    fig, ax = plt.subplots(figsize=(min(16, max(8, 0.3 * len(comps) * len(cells))), 4.6))
    width = 0.8 / max(len(cells), 1)
    cmap = plt.get_cmap("tab20")
    for i, cell in enumerate(cells):
        xs = [j + (i - (len(cells) - 1) / 2) * width for j in range(len(comps))]
        ax.bar(xs, table[cell].fillna(0).values, width=width, label=cell, color=cmap(i % 20))
    ax.set_xticks(range(len(comps)))
    ax.set_xticklabels([c.replace("_", " ") for c in comps])
    ax.set_ylabel("Euclidean distance to the pretrained weights")
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.02, 0.5), fontsize=8, frameon=False)
    ax.set_title(title)
    save(fig, png)


def sweep(agg: pd.DataFrame, metric: str, eval_name: str, title: str, png) -> None:
    """Quality against each swept hyperparameter (e.g. LoRA r), one line per other setting."""
    ok = agg[(agg["status"] == OK) & (agg["eval"] == eval_name) & (agg["variant"] != "default")]
    if ok.empty:
        return empty(png, f"{title}: this study sweeps no hyperparameter")
    groups = list(ok.groupby("method"))
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 4.2), squeeze=False)
    for ax, (method, g) in zip(axes[0], groups):
        parsed = pd.DataFrame([dict(kv.split("=", 1) for kv in v.split("_") if "=" in kv) for v in g["variant"]],
                              index=g.index)
        keys = list(parsed.columns)
        x = keys[-1] if "r" not in keys else "r"
        others = [k for k in keys if k != x]
        xs = pd.to_numeric(parsed[x], errors="coerce")
        series = g.assign(_x=xs if xs.notna().all() else parsed[x],
                          _line=parsed[others].astype(str).agg(" ".join, axis=1) if others else method)
        for line, s in series.groupby("_line"):
            s = s.sort_values("_x")
            yerr = s.get(f"{metric}_ci95")
            ax.errorbar(s["_x"], s[metric], yerr=yerr if yerr is not None and yerr.notna().any() else None,
                        marker="o", capsize=3, label=f"{line}" if others else method)
        if xs.notna().all() and xs.max() / max(xs.min(), 1e-12) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xlabel(x)
        ax.set_ylabel(f"{metric} ({eval_name})")
        ax.set_title(method)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, png)


def sentence_scores(scores: dict[str, list[float]], metric: str, title: str, png) -> None:
    """Distribution of a sentence-level score per cell (box plot with the mean marked)."""
    scores = {k: v for k, v in scores.items() if v}
    if not scores:
        return empty(png, f"{title}: no predictions")
    labels = sorted(scores)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(labels) + 2), 4.5))
    ax.boxplot([scores[k] for k in labels], showmeans=True)
    ax.set_xticks(range(1, len(labels) + 1))
    ax.set_xticklabels(labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(f"sentence {metric}")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title)
    save(fig, png)


def tuning(df: pd.DataFrame, title: str, png) -> None:
    """One panel per tuned method: selection score of each grid point against its learning rate
    (log x axis), one line per other tuned setting / sweep variant; the selected point circled."""
    import json

    if df.empty or df["score"].notna().sum() == 0:
        return empty(png, f"{title}: no grid point finished")
    methods = sorted(df["method"].unique())
    fig, axes = plt.subplots(1, len(methods), figsize=(5 * len(methods), 4), squeeze=False)
    for ax, method in zip(axes[0], methods):
        g = df[df["method"] == method].copy()
        tuned = pd.DataFrame([json.loads(t) for t in g["tuned"]], index=g.index)
        x = "lr" if "lr" in tuned else tuned.columns[0]
        others = [k for k in tuned.columns if k != x]
        g["_x"] = pd.to_numeric(tuned[x], errors="coerce")
        g["_line"] = [" ".join(p for p in ([] if grp == "default" else [grp]) +
                               [f"{k}={tuned.loc[i, k]}" for k in others]) or method
                      for i, grp in zip(g.index, g["group"])]
        for line, s in g.sort_values("_x").groupby("_line"):
            ax.plot(s["_x"], s["score"], marker="o", label=line)
        win = g[g["selected"] & g["score"].notna()]
        ax.scatter(win["_x"], win["score"], s=160, facecolors="none", edgecolors="tab:red", linewidths=2,
                   label="selected", zorder=3)
        if g["_x"].notna().all() and (g["_x"] > 0).all():
            ax.set_xscale("log")
            # ticks at the grid's values: a log axis inside one decade labels its minor ticks over each other
            values = sorted(g["_x"].unique())
            ax.set_xticks(values, [f"{v:.3g}" for v in values], rotation=45, ha="right")
            ax.xaxis.set_minor_formatter(NullFormatter())
        metric = g["metric"].iloc[0]
        ax.set_xlabel(x)
        ax.set_ylabel(f"{metric} on {g['on'].iloc[0]} ({better(higher_is_better(metric))})")
        ax.set_title(method)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    save(fig, png)

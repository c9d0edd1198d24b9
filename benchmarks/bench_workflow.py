"""The CPU-sized study end to end: where the wall time of a whole Snakemake run goes.

Runs, from the repository,

    snakemake --snakefile Snakefile --configfile configs/cpu_small_local.yaml --cores 2 --resources gpu=1 \
        --keep-going -d <tmp>/work

(`--gpu-jobs 2`: `--resources gpu=2`, two model jobs of one thread each side by side; `--cold`: with
PEFTGRID_WARM_START=0, every model job imports its libraries itself instead of forking from a
preloader, peftgrid/jobs/warm.py.)

with <tmp>/shared a link to ../shared, so the config's `../shared/data/...` paths resolve from the
temporary working directory exactly as they do from the repository. Then it reports the wall
time, the summed train_time_s / val_time_s / checkpoint_time_s / load_time_s of every cell's
train_stats.tsv, the summed infer_time_s and infer_time_unmerged_s of every evaluation's
metrics.tsv (reported eval sets and selection sets), the summed retention_time_s, and
the share of the wall time spent outside training and evaluation (staging, data checks, process
and model start-up, distances, reports, Snakemake itself).

About 17 minutes on 2 idle cores (benchmarks/README.md). It measures nothing useful on a busy machine, so it refuses
to start when other processes use the CPU (--force runs anyway; the output then says BUSY).

    python benchmarks/bench_workflow.py                  # the study, in a temporary folder
    python benchmarks/bench_workflow.py --dry-run        # only check that the workflow plans from there
    python benchmarks/bench_workflow.py --keep /tmp/wf   # keep the working folder (results/, logs/)
    python benchmarks/bench_workflow.py --configfile benchmarks/minilm_study.yaml --gpu-jobs 2
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

from bench_train_loop import machine_load  # noqa: E402

from peftgrid.jobs import warm  # noqa: E402


def fnum(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return 0.0


def collect(work: Path) -> dict:
    from peftgrid.records import read_tsv

    runs, results = work / "results" / "runs", work / "results"
    stats = [read_tsv(p)[0] for p in sorted(runs.glob("**/train_stats.tsv"))]
    # one metrics.tsv per evaluation: a reported eval set (eval/<name>[/<decoding>]) or a selection
    # run's selection set (select[/<decoding>]); retention's under retention/ are counted apart
    evals = [row for p in sorted(runs.glob("**/metrics.tsv")) if "retention" not in p.parts
             for row in read_tsv(p)]
    retention = [row for p in sorted(results.glob("**/retention/**/metrics.tsv")) for row in read_tsv(p)]
    out = {f"{k}_s": sum(fnum(s.get(f"{k}_s")) for s in stats)
           for k in ("train_time", "val_time", "checkpoint_time", "load_time")}
    out["infer_time_s"] = sum(fnum(r.get("infer_time_s")) for r in evals)
    # an adapter cell is also timed unmerged (its *_unmerged columns): inference passes too
    out["infer_time_unmerged_s"] = sum(fnum(r.get("infer_time_unmerged_s")) for r in evals)
    out["retention_time_s"] = sum(fnum(r.get("retention_time_s")) for r in retention)
    # the threads the training jobs ran with, as each recorded it (device column 'cpu:<n>threads')
    threads = {int(m.group(1)) for st in stats if (m := re.fullmatch(r"cpu:(\d+)threads", st.get("device") or ""))}
    out["cpu_threads"] = threads.pop() if len(threads) == 1 else None
    out["cells"] = len(stats)
    out["failed_cells"] = sum(s.get("status") != "ok" for s in stats)
    out["eval_rows"] = len(evals)
    out["summary"] = (results / "summary.tsv").is_file()
    return out


def job_times(work: Path) -> dict[str, list[dict]]:
    """Each job's time line (peftgrid.jobs.common.run_job writes it last in the job's log), by rule."""
    from peftgrid.jobs.common import read_job_times

    by_rule: dict[str, list[dict]] = {}
    for log in sorted((work / "logs").glob("**/*.log")):
        for fields in read_job_times(log):
            by_rule.setdefault(fields.pop("rule"), []).append({k: v if k == "start" else fnum(v)
                                                               for k, v in fields.items()})
    return by_rule


def job_time_table(by_rule: dict[str, list[dict]]) -> str:
    """Per rule: the job's process wall time, the work it timed, and the rest (start-up, imports,
    data loading and writing that no timer covers); medians, and the largest overhead."""
    lines = ["| rule | jobs | wall s (median) | timed work s | overhead s (median) | overhead s (max) | "
             "before main s (median) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for rule, jobs in sorted(by_rule.items()):
        col = {k: [j[k] for j in jobs] for k in ("wall_s", "work_s", "overhead_s", "before_main_s")}
        med = {k: statistics.median(v) for k, v in col.items()}
        lines.append(f"| {rule} | {len(jobs)} | {med['wall_s']:.2f} | {med['work_s']:.2f} | "
                     f"{med['overhead_s']:.2f} | {max(col['overhead_s']):.2f} | {med['before_main_s']:.2f} |")
    return "\n".join(lines)


def time_split(by_rule: dict[str, list[dict]]) -> str:
    """Per rule, summed over its jobs: processes, wall, timed work, the rest (start-up: interpreter,
    imports, reading and writing outside the timers) and CPU seconds. CPU seconds stay meaningful on
    a shared machine, where wall times stretch with other people's load."""
    lines = ["| rule | processes | wall s | timed work s | start-up + untimed s | per job s (median) | CPU s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    total = {"n": 0, "wall_s": 0.0, "work_s": 0.0, "overhead_s": 0.0, "cpu_s": 0.0}
    for rule, jobs in sorted(by_rule.items()):
        sums = {k: sum(j.get(k, 0.0) for j in jobs) for k in ("wall_s", "work_s", "overhead_s", "cpu_s")}
        per_job = statistics.median(j["overhead_s"] for j in jobs)
        lines.append(f"| {rule} | {len(jobs)} | {sums['wall_s']:.1f} | {sums['work_s']:.1f} | "
                     f"{sums['overhead_s']:.1f} | {per_job:.2f} | {sums['cpu_s']:.1f} |")
        total["n"] += len(jobs)
        for k in sums:
            total[k] += sums[k]
    lines.append(f"| all jobs | {total['n']} | {total['wall_s']:.1f} | {total['work_s']:.1f} | "
                 f"{total['overhead_s']:.1f} | | {total['cpu_s']:.1f} |")
    return "\n".join(lines)


def children_cpu() -> float:
    """CPU seconds of this process's finished children (Snakemake and every job it waited for)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--configfile", type=Path, default=REPO / "configs" / "cpu_small_local.yaml")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--gpu-jobs", type=int, default=1,
                        help="--resources gpu=N: model jobs at once, each with cores/N threads (rules/common.smk)")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared",
                        help="the folder the config's ../shared paths mean")
    parser.add_argument("--keep", type=Path, help="run in this (new or empty) folder and keep it")
    parser.add_argument("--dry-run", action="store_true", help="snakemake -n: plan only, report nothing")
    parser.add_argument("--force", action="store_true", help="run even when the machine is busy")
    parser.add_argument("--cold", action="store_true",
                        help="PEFTGRID_WARM_START=0: no preloader, every model job imports torch itself")
    args = parser.parse_args()

    if not (args.shared / "data").is_dir():
        raise SystemExit(f"{args.shared / 'data'} not found (pass --shared)")
    load = machine_load(2.0)
    busy = (load["others_cores"] or 0) >= 0.25
    print(f"{datetime.now().isoformat(timespec='seconds')}  load1 {load['load1']}, other processes "
          f"{load['others_cores']} cores of {os.cpu_count()}")
    if busy and not (args.force or args.dry_run):
        raise SystemExit("machine busy: the figures would be noise; run again when it is idle (or --force)")

    root = Path(tempfile.mkdtemp(prefix="peftgrid-wf-")) if args.keep is None else args.keep.resolve()
    work = root / "work"
    work.mkdir(parents=True, exist_ok=True)
    link = root / "shared"  # <work>/../shared/data is what the config names
    if not link.exists():
        link.symlink_to(args.shared.resolve(), target_is_directory=True)
    exe = shutil.which("snakemake")
    cmd = ([exe] if exe else [sys.executable, "-m", "snakemake"]) + [
        "--snakefile", str(REPO / "Snakefile"), "--configfile", str(args.configfile.resolve()),
        "--cores", str(args.cores), "--resources", f"gpu={args.gpu_jobs}", "--keep-going", "-d", str(work)]
    if args.dry_run:
        cmd.append("-n")
    print("$ " + " ".join(cmd))
    log = root / "snakemake.log"
    # the run's own preloaders (their CPU is counted below); none left from an earlier run is reused
    preloaders = root / "preloaders"
    env = {**os.environ, warm.DIR_ENV: str(preloaders), warm.ENABLE_ENV: "0" if args.cold else "1"}
    t0, cpu0 = time.perf_counter(), children_cpu()
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, env=env)
    wall, study_cpu = time.perf_counter() - t0, children_cpu() - cpu0
    # a preloader outlives the jobs that started it, and the children it forked ran the jobs: their
    # CPU is not in this process's children's, so each reports it as it exits
    warm.stop_preloaders(preloaders)  # the ones still serving; every one logs its CPU as it ends
    study_cpu += warm.preloaders_cpu_seconds(preloaders)
    if proc.returncode != 0:
        print(log.read_text()[-3000:])
        print(f"snakemake exited {proc.returncode} after {wall:.0f} s (log: {log})")
    if args.dry_run:
        tail = [line for line in log.read_text().splitlines() if line.strip()][-3:]
        print("\n".join(tail))
        print(f"dry run ok in {wall:.1f} s; working folder {root}" if proc.returncode == 0 else "dry run failed")
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
        return proc.returncode

    c = collect(work)
    inside = c["train_time_s"] + c["val_time_s"] + c["infer_time_s"] + c["infer_time_unmerged_s"] + c["retention_time_s"]
    rows = [("wall time", wall), ("training steps (train_time_s)", c["train_time_s"]),
            ("validation during training (val_time_s)", c["val_time_s"]),
            ("evaluation / inference (infer_time_s)", c["infer_time_s"]),
            ("inference of the unmerged adapters (infer_time_unmerged_s)", c["infer_time_unmerged_s"]),
            ("retention scoring (retention_time_s)", c["retention_time_s"]),
            ("checkpoint writes (checkpoint_time_s)", c["checkpoint_time_s"]),
            ("model load + tokenisation in train jobs (load_time_s)", c["load_time_s"]),
            ("outside training and evaluation", wall - inside)]
    print()
    print(f"{c['cells']} cells ({c['failed_cells']} recorded as failed), {c['eval_rows']} evaluations, "
          f"--cores {args.cores} --resources gpu={args.gpu_jobs}" + ("" if c["summary"] else "; NO results/summary.tsv"))
    print("| part | seconds | share of wall |")
    print("|---|---:|---:|")
    for name, sec in rows:
        print(f"| {name} | {sec:.0f} | {100 * sec / wall:.1f}% |")
    print("(checkpoint and load time are outside training and evaluation; summed job times can exceed "
          "the wall time where jobs overlapped)")
    threads = c["cpu_threads"]
    if args.gpu_jobs > 1 and threads:
        # jobs overlap: compare core-seconds. A model job's timed work holds its share of the cores.
        share = 1 - threads * inside / (args.cores * wall)
        print(f"model jobs side by side ({args.gpu_jobs} x {threads} threads): the machine's core-seconds "
              f"outside training and evaluation: {100 * share:.1f}% (1 - threads x timed work / (cores x wall))")
    print()
    by_rule = job_times(work)
    print("Per job (each job's log ends with its time; overhead = wall - timed work; target <= 3 s):")
    print(job_time_table(by_rule))
    print()
    print("Summed per rule (train: timed work = loading, training, validation, checkpoints; evaluate: "
          "loading and inference):")
    print(time_split(by_rule))
    jobs_cpu = sum(j.get("cpu_s", 0.0) for jobs in by_rule.values() for j in jobs)
    forked = sum(j.get("start") == warm.START_PRELOADED for jobs in by_rule.values() for j in jobs)
    print(f"{forked} jobs forked from a preloader (peftgrid/jobs/warm.py), the others started cold")
    print(f"CPU seconds: the whole run {study_cpu:.1f} (Snakemake and every job), the jobs {jobs_cpu:.1f}, "
          f"Snakemake itself and the jobs' script wrappers {study_cpu - jobs_cpu:.1f}")
    print("machine BUSY at the start: figures are noisy" if busy else "machine idle at the start")
    print(f"working folder: {root}" if args.keep else f"log: {log}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())

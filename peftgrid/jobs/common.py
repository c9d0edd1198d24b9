"""What every rule's script shares: log to the rule's log file, stay offline where the job must,
turn a user-facing error into one line (in the log and on the console) and exit status 1, and end
the log with the job's time: its process's wall time, the work it timed and the rest (overhead)."""
from __future__ import annotations

import logging
import os
import resource
import sys
import time
import traceback
from pathlib import Path

from ..errors import Preempted, UserError
from ..plugins import load_plugins
from . import warm


JOB_TIME_PREFIX = "[peftgrid] job time"  # benchmarks/bench_workflow.py reads these lines from logs/

# Libraries that others import by themselves whenever they are installed, for features no job of
# ours uses: transformers imports scikit-learn (assisted generation), peft imports bitsandbytes
# (4-bit layers; only quantised methods use it), accelerate imports boto3 (its SageMaker config).
# About 1.8 s of every model job's start-up.
OPTIONAL_IMPORTS = ("sklearn", "bitsandbytes", "boto3")
# transformers also imports scipy whenever installed (object-detection losses), but a metric may use
# it (a plugin's Pearson correlation): only jobs that compute no metric skip it (~0.3 s CPU).
METRIC_IMPORTS = ("scipy",)


def skip_unused_imports(used: tuple[str, ...], computes_metrics: bool = True) -> None:
    """Make the OPTIONAL_IMPORTS not in `used` (a method's `libraries`) look uninstalled to the
    libraries that probe for them: a None entry in sys.modules makes importlib.util.find_spec answer
    None and `import` raise ImportError. Only in a job's own process (one job per process), before
    transformers or peft are imported."""
    warm.restart_cold_if_kept_out(used)
    for name in OPTIONAL_IMPORTS + (() if computes_metrics else METRIC_IMPORTS):
        if name not in used and name not in sys.modules:
            sys.modules[name] = None


def process_age() -> float | None:
    """Seconds since this process started (Python start-up and the script's imports included), from
    psutil's process start time; None where the platform does not tell it."""
    import psutil

    try:
        return max(time.time() - psutil.Process().create_time(), 0.0)
    except (psutil.Error, OSError):
        return None


def _job_start() -> tuple[float | None, float, str]:
    """(seconds since the job's process started, CPU seconds it used before this process, how it
    started): in a child forked by a preloader (warm.py), the job process that handed the script
    over started it."""
    if os.environ.get(warm.CHILD_ENV):
        started = os.environ.get(warm.STARTED_ENV)
        return (None if started is None else max(time.time() - float(started), 0.0),
                float(os.environ.get(warm.JOB_CPU_ENV) or 0.0), warm.START_PRELOADED)
    return process_age(), 0.0, warm.START_COLD


def cpu_seconds() -> float:
    """CPU time (user + system, all threads) this process has used since it started."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def job_time_line(rule: str, before_main: float | None, main_seconds: float, work: float | None,
                  cpu: float | None = None, start: str = warm.START_COLD) -> str:
    """`work`: the seconds the job timed itself (None: all of main counts as work); `cpu`: the
    process's CPU seconds (on a shared machine the wall time says little; this stays honest);
    `start`: warm.START_PRELOADED when the job ran forked from a preloader, else warm.START_COLD."""
    wall = (before_main or 0.0) + main_seconds
    work = main_seconds if work is None else min(work, main_seconds)
    before = "unknown" if before_main is None else f"{before_main:.2f}"
    return (f"{JOB_TIME_PREFIX} rule={rule} wall_s={wall:.2f} work_s={work:.2f} overhead_s={wall - work:.2f} "
            f"before_main_s={before}" + ("" if cpu is None else f" cpu_s={cpu:.2f}") + f" start={start}")


def read_job_times(log_path) -> list[dict[str, str]]:
    """The fields (rule, wall_s, work_s, ...) of each job time line job_time_line wrote in a log."""
    lines = Path(log_path).read_text(errors="replace").splitlines()
    return [dict(f.split("=", 1) for f in line[len(JOB_TIME_PREFIX):].split())
            for line in lines if line.startswith(JOB_TIME_PREFIX)]


def _move_console_handlers(log_file) -> list:
    """Point the logging handlers that libraries created on import, bound to the console, at the
    job's log (torch and transformers make theirs on import: in a job forked from a preloader,
    before the log was open). Returns (handler, old stream) pairs to put back."""
    loggers = [logging.getLogger()] + [logger for logger in logging.Logger.manager.loggerDict.values()
                                       if isinstance(logger, logging.Logger)]
    moved = []
    for handler in {h for logger in loggers for h in logger.handlers}:
        if type(handler) is logging.StreamHandler and handler.stream in (sys.__stderr__, sys.__stdout__):
            moved.append((handler, handler.setStream(log_file)))
    return moved


def run_job(main, snakemake, offline: bool = True) -> None:
    """Run `main(snakemake)`; offline jobs never touch the hub (HF_HUB_OFFLINE=1). `main` may return
    the seconds of work it timed (model loading, training, inference); the log's last line then
    splits the job's wall time into that work and the overhead around it."""
    before_main, job_cpu, start = _job_start()
    started = time.perf_counter()
    work = None
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # our records say which weights are new; transformers' notices would only bury the progress lines
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if warm.forks_from_preloader(getattr(snakemake, "resources", None)):  # a model job: fork, skip the imports
        job_started = None if before_main is None else time.time() - before_main
        code = warm.run_forked(sys.argv[0], job_started, cpu_seconds(), OPTIONAL_IMPORTS)
        if code is not None:
            sys.exit(code)
    console = sys.stderr
    log_path = snakemake.log[0] if snakemake.log else None
    log_file = open(log_path, "w", buffering=1) if log_path else None
    moved_handlers = []
    if log_file:
        sys.stdout = sys.stderr = log_file
        moved_handlers = _move_console_handlers(log_file)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s", force=True)
    try:
        load_plugins(dict(getattr(snakemake.params, "spec", None) or {}).get("plugins"))  # see Spec.to_params
        work = main(snakemake)
    except Preempted as e:
        print(f"Preempted: {e}", file=sys.stderr)
        if log_file:
            print(f"[{snakemake.rule}] Preempted: {e}", file=console)
        sys.exit(143)  # 128 + SIGTERM: the scheduler sees a terminated job and may requeue it
    except UserError as e:
        line = f"{type(e).__name__}: {e}"
        print(line, file=sys.stderr)
        if log_file:
            print(f"[{snakemake.rule}] {line}", file=console)
        sys.exit(1)
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        print(job_time_line(snakemake.rule, before_main, time.perf_counter() - started,
                            work if isinstance(work, (int, float)) else None, job_cpu + cpu_seconds(), start),
              file=sys.stderr)
        if log_file:
            sys.stdout, sys.stderr = sys.__stdout__, console
            for handler, stream in moved_handlers:
                handler.setStream(stream)
            log_file.close()

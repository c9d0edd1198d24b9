"""What every rule's script shares: log to the rule's log file, stay offline where the job must,
and turn a user-facing error into one line (in the log and on the console) and exit status 1."""
from __future__ import annotations

import logging
import os
import sys
import traceback

from ..errors import Preempted, UserError


def run_job(main, snakemake, offline: bool = True) -> None:
    """Run `main(snakemake)`; offline jobs never touch the hub (HF_HUB_OFFLINE=1)."""
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["HF_DATASETS_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # our records say which weights are new; transformers' notices would only bury the progress lines
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    console = sys.stderr
    log_path = snakemake.log[0] if snakemake.log else None
    log_file = open(log_path, "w", buffering=1) if log_path else None
    if log_file:
        sys.stdout = sys.stderr = log_file
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s", force=True)
    try:
        main(snakemake)
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
        if log_file:
            sys.stdout, sys.stderr = sys.__stdout__, console
            log_file.close()

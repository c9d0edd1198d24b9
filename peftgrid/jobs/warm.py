"""Warm start: a model job's script runs in a process forked from one that has already imported
torch, transformers and peft, instead of paying those ~3 s of imports in every job.

Every model job (a rule that asks for the `gpu` resource: training, evaluation, retention, COMET)
is still a process of its own, started by Snakemake exactly as before, with its own log, exit status
and signals. When it finds a *preloader* for its Python and libraries, it hands its script to it:
the preloader forks a child, the child takes the job's working folder, environment, sys.path,
stdin/stdout/stderr and runs the script; the job process forwards signals to the child, waits,
and exits as the child did (the same code, or killed by the same signal). The child dies with the
job process, even on SIGKILL (a pipe it watches closes). A child is a fresh fork: one cell's crash,
out-of-memory kill or stray state never reaches another, as with separate processes.

The first model job that finds no preloader starts one in the background and runs cold; later
jobs fork from it. A preloader serves one Python and one installation of the libraries
(`preloader_key`: the interpreter, the libraries' files, the environment they read on import and
this file), never imports peftgrid (a child imports our code fresh, so an edit takes effect at
once), and exits after IDLE_S seconds without a job. It only runs where no GPU is visible: CUDA
cannot be used in a child forked after the parent touched it, and on a GPU the import floor is a
smaller share of a job. It never runs under SLURM (each job is alone on its allocation), nor with
PEFTGRID_WARM_START=0.

This file imports only the standard library (it is also the preloader's program).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import runpy
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ENABLE_ENV = "PEFTGRID_WARM_START"  # 0: every job imports its libraries itself
DIR_ENV = "PEFTGRID_WARM_DIR"  # where preloaders listen (default: <tmp>/peftgrid-warm-<uid>)
IDLE_ENV = "PEFTGRID_WARM_IDLE_S"
IDLE_S = 60.0
CHILD_ENV = "PEFTGRID_WARM_CHILD"  # set in a forked child: run_job runs the job itself
STARTED_ENV = "PEFTGRID_JOB_STARTED"  # the job process's start (epoch s), for the job's time line
JOB_CPU_ENV = "PEFTGRID_JOB_CPU_S"  # CPU seconds the job process used before handing over
KEPT_OUT_ENV = "PEFTGRID_WARM_KEPT_OUT"  # in a child: the libraries its preloader kept out
COLD_START_EXIT = 75  # a child that needs a library the preloader kept out (restart_cold): run cold

# What every model job imports (plus the Auto classes, loaded on first use).
PRELOAD = ("torch", "transformers", "peft", "safetensors.torch")
PRELOAD_ATTRIBUTES = ("AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification",
                      "AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForMaskedLM")
# Environment the libraries read once, on import: a job whose values differ needs its own preloader.
IMPORT_TIME_ENV_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TOKENIZERS", "TORCH", "PYTORCH",
                            "PEFT", "XDG_CACHE_HOME", "PYTHON")
# Set per job, applied in the child (threads); the preloader runs on one thread, with no GPU.
PER_JOB_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "CUDA_VISIBLE_DEVICES")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


# --- the job's side ------------------------------------------------------------------------------

def wanted(resources) -> bool:
    """Whether this job should fork from a preloader: a model job (asks for `gpu`), not already a
    forked child, not under SLURM, not switched off, and no GPU visible."""
    if os.environ.get(CHILD_ENV) or os.environ.get(ENABLE_ENV, "1") == "0" or os.environ.get("SLURM_JOB_ID"):
        return False
    if not getattr(resources, "get", lambda *_: None)("gpu"):
        return False
    forced = os.environ.get("PEFTGRID_DEVICE", "")
    if forced:
        return forced == "cpu"
    from ..engine.gpus import visible_pool

    return not visible_pool()[0]


def warm_dir() -> Path | None:
    """A folder only this user can use (a preloader runs whatever a connection asks)."""
    folder = Path(os.environ.get(DIR_ENV) or Path(tempfile.gettempdir()) / f"peftgrid-warm-{os.getuid()}")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return folder


def preloader_key(env=None) -> str:
    """Which preloader serves this process: its interpreter, the preloaded libraries' files (an
    upgrade changes them), the environment they read on import, and this file's code."""
    env = os.environ if env is None else env
    libraries = {}
    for name in ("torch", "transformers", "peft", "safetensors", "tokenizers", "accelerate", "huggingface_hub"):
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec and spec.origin else None
        libraries[name] = [origin, os.stat(origin).st_mtime_ns] if origin and os.path.exists(origin) else None
    facts = {"python": [sys.executable, sys.version, sys.prefix], "libraries": libraries,
             "env": {k: v for k, v in sorted(env.items())
                     if k.startswith(IMPORT_TIME_ENV_PREFIXES) and k not in (CHILD_ENV,)},
             "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def _send(sock: socket.socket, message: dict, fds=()) -> None:
    data = json.dumps(message).encode()
    socket.send_fds(sock, [struct.pack("!I", len(data)) + data], list(fds))


def _receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """One message (and the descriptors sent with it); None at end of stream."""
    buf, fds = b"", []
    while len(buf) < 4 or len(buf) < 4 + struct.unpack("!I", buf[:4])[0]:
        chunk, new_fds, _, _ = socket.recv_fds(sock, 1 << 16, 8)
        fds += new_fds
        if not chunk:
            return None, fds
        buf += chunk
    n = struct.unpack("!I", buf[:4])[0]
    return json.loads(buf[4:4 + n]), fds


def run_forked(script: str, job_started: float | None, job_cpu: float, kept_out: tuple[str, ...]) -> int | None:
    """Hand this job's script to a preloader and mirror the child's end: returns its exit code, or
    re-raises the signal that killed it. None when the job should run here after all: no preloader
    answered (one is then started in the background, importing the libraries without `kept_out`,
    for the next jobs), or the child needs a library the preloader kept out (restart_cold)."""
    folder = warm_dir()
    if folder is None:
        return None
    key = preloader_key()
    path = folder / f"{key}.sock"
    if len(str(path)) > 100:  # AF_UNIX path limit
        return None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:
        sock.close()
        start_preloader(folder, key, kept_out)
        return None
    watch_read, watch_write = os.pipe()  # the child dies when this process does: its end closes
    env = dict(os.environ, **{CHILD_ENV: "1", JOB_CPU_ENV: f"{job_cpu:.3f}", KEPT_OUT_ENV: ",".join(kept_out)})
    if job_started is not None:
        env[STARTED_ENV] = f"{job_started:.3f}"
    request = {"script": script, "argv": sys.argv, "cwd": os.getcwd(), "env": env, "path": sys.path}
    try:
        sys.stdout.flush(), sys.stderr.flush()
        _send(sock, request, (0, 1, 2, watch_read))
        os.close(watch_read)
        started, _ = _receive(sock)
    except OSError:
        started = None
    if not started:  # the preloader went away before forking: nothing ran
        sock.close()
        os.close(watch_write)
        return None
    child = started["pid"]
    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, lambda signum, _frame: _forward(child, signum))
    ended, _ = _receive(sock)  # the preloader reaps the child and sends its exit
    code = ended["exit"] if ended else 1
    if code == COLD_START_EXIT:
        return None
    if ended is None:
        print("[peftgrid] the preloader went away while this job ran; the job's end is unknown", file=sys.stderr)
    if code < 0:  # killed by a signal: end this process the same way, as Snakemake would have seen
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    return code


def _forward(child: int, signum: int) -> None:
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass


def needs_cold_start(used: tuple[str, ...]) -> bool:
    """In a forked child: whether the job uses a library its preloader kept out (transformers and
    peft, imported there, decided on import that it is not installed)."""
    kept_out = os.environ.get(KEPT_OUT_ENV, "").split(",") if os.environ.get(CHILD_ENV) else []
    return any(name in kept_out for name in used)


def restart_cold() -> None:
    """In a forked child: end now and have the job process run the job itself."""
    sys.stdout.flush(), sys.stderr.flush()
    os._exit(COLD_START_EXIT)


def start_preloader(folder: Path, key: str, kept_out: tuple[str, ...]) -> None:
    """Start a preloader for `key` in its own session (it outlives this job); a second one started
    at the same moment finds the lock taken and exits. One that refused to serve leaves
    <key>.refused, and no job starts another."""
    if (folder / f"{key}.refused").exists():
        return
    env = {k: v for k, v in os.environ.items() if k not in PER_JOB_ENV}
    env["CUDA_VISIBLE_DEVICES"] = ""  # never touch a GPU: a forked child could not use it
    # One OpenMP thread: torch's import runs a parallel region, and a child forked after OpenMP
    # started worker threads would hang in its next one. Each child sets its own count.
    env["OMP_NUM_THREADS"] = "1"
    with open(folder / f"{key}.log", "ab") as log:
        # -P: not this file's folder first on sys.path (its select.py would shadow the stdlib's)
        subprocess.Popen([sys.executable, "-P", __file__, "serve", str(folder), key, ",".join(kept_out)], env=env, cwd="/",
                         stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


# --- the preloader -------------------------------------------------------------------------------

def serve(folder: Path, key: str, kept_out: list[str]) -> None:
    import fcntl

    lock = open(folder / f"{key}.lock", "a+")
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another preloader for this key is starting or serving
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    started = time.perf_counter()
    import importlib

    for name in kept_out:  # as jobs do (common.skip_unused_imports): these start threads, and cost seconds
        sys.modules[name] = None
    for name in PRELOAD:
        importlib.import_module(name)
    transformers = sys.modules["transformers"]
    for name in PRELOAD_ATTRIBUTES:
        getattr(transformers, name)
    torch = sys.modules["torch"]
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["main"]
    if len(tasks) != 1 or threading.active_count() != 1:  # a fork would copy one thread of several
        print(f"not serving: {len(tasks)} threads after the imports", flush=True)
        (folder / f"{key}.refused").touch()
        return
    path = folder / f"{key}.sock"
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(16)
    print(f"serving {path} (pid {os.getpid()}) after {time.perf_counter() - started:.1f} s of imports", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    idle_s = float(os.environ.get(IDLE_ENV) or IDLE_S)
    children: dict[int, socket.socket] = {}
    last_busy = time.monotonic()
    try:
        while not stop:
            _reap(children)
            if children:
                last_busy = time.monotonic()
            elif time.monotonic() - last_busy > idle_s:
                break
            try:
                ready, _, _ = select.select([listener], [], [], 0.2)
            except InterruptedError:
                continue
            if not ready:
                continue
            conn, _ = listener.accept()
            try:
                request, fds = _receive(conn)
            except (OSError, ValueError):
                conn.close()
                continue
            if request is None or len(fds) != 4:
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            sys.stdout.flush(), sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                lock.close()
                conn.close()
                for other in children.values():
                    other.close()
                _run_child(request, fds)  # never returns
            for fd in fds:
                os.close(fd)
            try:
                _send(conn, {"pid": pid})
            except OSError:
                pass
            children[pid] = conn
            last_busy = time.monotonic()
    finally:
        path.unlink(missing_ok=True)
        while children:
            _reap(children)
            time.sleep(0.1)
        own, kids = __import__("resource").getrusage(0), __import__("resource").getrusage(-1)
        print(f"exiting: cpu_s={own.ru_utime + own.ru_stime:.2f} "
              f"children_cpu_s={kids.ru_utime + kids.ru_stime:.2f}", flush=True)


def stop_preloaders(folder: Path, wait_s: float = 10.0) -> list[str]:
    """Ask every preloader serving from `folder` to exit (SIGTERM: it finishes its children first);
    returns their logs' last lines (each ends with the CPU seconds it and its children used)."""
    import fcntl

    stopped = []
    for lock_path in sorted(Path(folder).glob("*.lock")):
        with open(lock_path, "a+") as lock:
            try:
                fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                continue  # nobody holds it: not serving
            except OSError:
                lock.seek(0)
                pid = int(lock.read().strip() or 0)
        if pid:
            log = lock_path.with_suffix(".log")
            stopped.append((log, len(_exit_lines(log))))
            _forward(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    lines = []
    for log, before in stopped:
        while time.monotonic() < deadline and len(_exit_lines(log)) <= before:
            time.sleep(0.1)
        lines += _exit_lines(log)[before:]
    return lines


def _exit_lines(log: Path) -> list[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if line.startswith("exiting:")]


def _reap(children: dict) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            try:
                _send(conn, {"exit": os.waitstatus_to_exitcode(status)})
            except OSError:
                pass
            conn.close()


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the job (its stdio, folder, environment, path, threads), then
    run its script as Snakemake would have. Ends the process."""
    code = 1
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in zip((0, 1, 2), fds[:3]):
            os.dup2(fd, target)
            os.close(fd)
        watch = fds[3]
        threading.Thread(target=_die_with_job, args=(watch,), daemon=True).start()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        sys.path[:] = request["path"]
        sys.argv[:] = request["argv"]
        for name in os.environ.get(KEPT_OUT_ENV, "").split(","):  # a script may import them itself
            if name and sys.modules.get(name, 0) is None:
                del sys.modules[name]
        # what torch would have started with in the job's own process (OpenMP's default: every CPU)
        threads = os.environ.get("OMP_NUM_THREADS") or len(os.sched_getaffinity(0))
        sys.modules["torch"].set_num_threads(int(threads))
        runpy.run_path(request["script"], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _die_with_job(watch: int) -> None:
    while os.read(watch, 1):
        pass
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(Path(sys.argv[2]), sys.argv[3], [name for name in sys.argv[4].split(",") if name])

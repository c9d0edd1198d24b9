"""Warm start: a model job's script runs in a process forked from a *preloader* that has already
imported torch, transformers and peft, instead of paying those ~3 s of imports in every job.

Every model job (a rule that asks for the `gpu` resource: training, evaluation, retention, COMET)
is still a process of its own, started by Snakemake exactly as before. When it finds a preloader
for its Python, libraries and environment, it hands its script over: the preloader forks a child,
the child takes the job's stdin/stdout/stderr, working folder, environment, sys.path, argv, signal
dispositions and threads, and runs the script; the job process passes signals on, waits, and ends
as the child did (the same exit code, or killed by the same signal). The child dies with the job
process, even on SIGKILL (a pipe it watches closes). A child is a fresh fork: a crash, an
out-of-memory kill or stray state in one job never reaches another.

The first model job that finds no preloader starts one in the background and runs cold; later jobs
fork from it. A preloader serves one Python and one installation of the libraries (`preloader_key`:
the interpreter, the libraries' files, the environment they read on import, the process context
and this file), re-checks before each fork that no module it loaded has changed on disk, never
imports peftgrid (a child imports our code fresh, so an edit takes effect at once), and exits after
IDLE_S seconds without a job. Only jobs that cannot use a GPU fork (none visible, or
PEFTGRID_DEVICE=cpu: CUDA cannot be used in a child forked after its parent touched it), never
under a batch scheduler (each job has its own allocation there), and not with PEFTGRID_WARM_START=0.

The preloader's side of this file imports only the standard library: it is the preloader's program.
"""
from __future__ import annotations

import atexit
import hashlib
import importlib
import importlib.util
import json
import os
import resource
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
STARTED_ENV = "PEFTGRID_WARM_JOB_STARTED"  # the job process's start (epoch s), for the job's time line
JOB_CPU_ENV = "PEFTGRID_WARM_JOB_CPU_S"  # CPU seconds the job process used before handing over
KEPT_OUT_ENV = "PEFTGRID_WARM_KEPT_OUT"  # in a child: the libraries its preloader kept out
STATUS_FD_ENV = "PEFTGRID_WARM_STATUS_FD"  # in a child: where it writes how it ends (COLD or its code)
COLD = b"cold"  # a child's answer on its status pipe: run the job in the job process instead
START_PRELOADED, START_COLD = "preloaded", "cold"  # the job time line's start= (common.job_time_line)
SERVING, EXITING = "serving", "exiting:"  # the preloader's log lines: listening; ended, with its CPU
BATCH_SCHEDULER_ENV = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")

LIBRARIES = ("torch", "transformers", "peft", "safetensors.torch")  # what every model job imports
TRANSFORMERS_CLASSES = ("AutoConfig", "AutoTokenizer", "AutoModelForSequenceClassification",
                        "AutoModelForCausalLM", "AutoModelForSeq2SeqLM", "AutoModelForMaskedLM")
# Environment the libraries read once, on import (cache folders, offline mode, verbosity, locale):
# a job whose values differ needs its own preloader.
IMPORT_TIME_ENV_PREFIXES = ("HF_", "HUGGINGFACE", "TRANSFORMERS", "TOKENIZERS", "TORCH", "PYTORCH", "PEFT_",
                            "PYTHON", "XDG_", "HOME", "LANG", "LC_", "TZ", "OMP_", "KMP_", "GOMP_", "MKL_")
# Snakemake sets these to the job's threads: a preloader starts with each at 1 (a library that
# started threads on import could not be forked safely); a child sets torch's from OMP_NUM_THREADS.
# (numpy's BLAS stays on one thread in a child; our jobs compute in torch.)
THREAD_ENV = ("OMP_NUM_THREADS", "GOTO_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
PER_JOB_ENV = THREAD_ENV + ("CUDA_VISIBLE_DEVICES",)  # applied in each child; a preloader has no GPU
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2)


# --- the job's side ------------------------------------------------------------------------------

def forks_from_preloader(resources) -> bool:
    """Whether this job hands its script to a preloader: a model job (asks for `gpu`) with its
    thread count set (Snakemake sets OMP_NUM_THREADS), not a forked child itself, not under a batch
    scheduler, not switched off, and using no GPU (gpus.uses_no_gpu: forking after CUDA is unsafe)."""
    env = os.environ
    if env.get(CHILD_ENV) or env.get(ENABLE_ENV, "1") == "0" or any(env.get(k) for k in BATCH_SCHEDULER_ENV):
        return False
    if not sys.platform.startswith("linux"):  # Linux's abstract sockets and SO_PEERCRED (see _address)
        return False
    if not getattr(resources, "get", lambda *_: None)("gpu") or not env.get("OMP_NUM_THREADS"):
        return False
    from ..engine.gpus import uses_no_gpu

    return uses_no_gpu()


def warm_dir() -> Path | None:
    """A folder only this user can use, for the preloaders' locks and logs."""
    folder = Path(os.environ.get(DIR_ENV) or Path(tempfile.gettempdir()) / f"peftgrid-warm-{os.getuid()}")
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = folder.stat()
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        return None
    return folder


def preloader_key(kept_out: tuple[str, ...], env=None) -> str:
    """Which preloader serves this job: its interpreter, the libraries' files (an upgrade changes
    them; the preloader also re-checks every file it loaded before each fork), the libraries kept
    out, the environment read on import, the process context (cgroup, CPUs, limits) and this code."""
    env = os.environ if env is None else env
    files = {}
    for name in [lib.split(".")[0] for lib in LIBRARIES] + ["tokenizers", "accelerate", "huggingface_hub", "numpy"]:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            spec = None
        origin = spec.origin if spec and spec.origin and os.path.exists(spec.origin) else None
        files[name] = [origin, os.stat(origin).st_mtime_ns] if origin else None
    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        cgroup = ""
    context = [cgroup, sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
               [resource.getrlimit(r) for r in (resource.RLIMIT_AS, resource.RLIMIT_NOFILE)], os.getuid()]
    facts = {"python": [sys.executable, sys.version, sys.prefix], "files": files, "kept_out": sorted(kept_out),
             "env": {k: v for k, v in sorted(env.items())
                     if k.startswith(IMPORT_TIME_ENV_PREFIXES) and k not in PER_JOB_ENV},
             "context": context, "code": hashlib.sha256(Path(__file__).read_bytes()).hexdigest()}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def _address(folder: Path, key: str) -> str:
    """The preloader's socket, in Linux's abstract namespace: no file to go stale, and no limit
    from the folder's path length (a socket file's path may not pass 107 bytes). Anyone on the
    machine could connect to it, so the preloader serves only its own user (SO_PEERCRED)."""
    return "\0peftgrid-warm-" + hashlib.sha256(f"{folder.resolve()}\0{key}".encode()).hexdigest()[:32]


def _send(sock: socket.socket, message: dict, fds=()) -> None:
    data = json.dumps(message).encode()
    socket.send_fds(sock, [struct.pack("!I", len(data)) + data], list(fds))


def _receive(sock: socket.socket) -> tuple[dict | None, list[int]]:
    """Exactly one message (and the descriptors sent with it); None at end of stream. Reads the
    4-byte length first and then that many bytes, never into the next message."""
    head, fds = b"", []
    while len(head) < 4:
        chunk, new_fds, _, _ = socket.recv_fds(sock, 4 - len(head), 8)
        fds += new_fds
        if not chunk:
            return None, fds
        head += chunk
    size = struct.unpack("!I", head)[0]
    body = b""
    while len(body) < size:
        chunk = sock.recv(size - len(body))
        if not chunk:
            return None, fds
        body += chunk
    return json.loads(body), fds


def run_forked(script: str, job_started: float | None, job_cpu: float, kept_out: tuple[str, ...]) -> int | None:
    """Hand this job's script to a preloader and end as its child did: returns the child's exit
    code, or kills this process with the signal that killed the child. None when the job is to run
    here after all: no preloader answered (one is then started in the background, importing the
    libraries with `kept_out` kept out, for the next jobs), it refused (a loaded file changed), or
    the child needs a library the preloader kept out (restart_cold_if_kept_out)."""
    folder = warm_dir()
    if folder is None:
        return None
    key = preloader_key(kept_out)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(_address(folder, key))
    except OSError:
        sock.close()
        start_preloader(folder, key, kept_out)
        return None
    if _peer_uid(sock) != os.getuid():  # another user took the name: hand it nothing
        sock.close()
        return None
    watch_read, watch_write = os.pipe()  # the child dies when this process does: its end closes
    status_read, status_write = os.pipe()  # the child writes how it ends (also if the preloader dies)
    ignored = [int(s) for s in FORWARDED_SIGNALS if signal.getsignal(s) == signal.SIG_IGN]  # nohup
    env = dict(os.environ, **{CHILD_ENV: "1", JOB_CPU_ENV: f"{job_cpu:.3f}", KEPT_OUT_ENV: ",".join(kept_out)})
    if job_started is not None:
        env[STARTED_ENV] = f"{job_started:.3f}"
    request = {"script": script, "argv": sys.argv, "cwd": os.getcwd(), "env": env, "path": sys.path,
               "ignored_signals": ignored}
    try:
        sys.stdout.flush(), sys.stderr.flush()
        _send(sock, request, (0, 1, 2, watch_read, status_write))
        started, _ = _receive(sock)
    except OSError:
        started = None
    finally:
        os.close(watch_read), os.close(status_write)
    if not started or "pid" not in started:  # gone before forking, or refused: nothing ran
        sock.close(), os.close(watch_write), os.close(status_read)
        return None
    child = started["pid"]
    previous = {s: signal.signal(s, lambda signum, _frame: _forward(child, signum))
                for s in FORWARDED_SIGNALS if int(s) not in ignored}
    try:
        ended, _ = _receive(sock)  # the preloader reaps the child and sends how it ended
        if ended is None:  # the preloader died: the child runs on; wait for it ourselves
            _wait_for_exit(child)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        sock.close()
    with os.fdopen(status_read, "rb") as status_pipe:  # the child's end closed it: this never blocks
        status = status_pipe.read()
    os.close(watch_write)
    if status == COLD:
        return None
    if ended is not None:
        code = ended["exit"]
    elif status:
        code = int(status)
    else:
        print("[peftgrid] the job's child was killed after its preloader died; how is unknown", file=sys.stderr)
        return 1
    if code < 0:  # killed by a signal: end this process the same way, as Snakemake would see it
        if -code != signal.SIGKILL:
            signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
        time.sleep(1)
    return code


def _peer_uid(sock: socket.socket) -> int:
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def _wait_for_exit(pid: int) -> None:
    try:
        fd = os.pidfd_open(pid)
    except (OSError, AttributeError):  # gone already, or no pidfd (Linux < 5.3): poll
        while os.path.exists(f"/proc/{pid}"):
            time.sleep(0.5)
        return
    try:
        select.select([fd], [], [])
    finally:
        os.close(fd)


def _forward(child: int, signum: int) -> None:
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass


def restart_cold_if_kept_out(used: tuple[str, ...]) -> None:
    """In a forked child whose job uses a library its preloader kept out (transformers and peft,
    imported there, decided on import that it is not installed): end now, and have the job process
    run the job itself. Elsewhere: nothing."""
    kept_out = os.environ.get(KEPT_OUT_ENV, "").split(",") if os.environ.get(CHILD_ENV) else []
    if any(name in kept_out for name in used):
        sys.stdout.flush(), sys.stderr.flush()
        os.write(int(os.environ[STATUS_FD_ENV]), COLD)
        os._exit(1)


def start_preloader(folder: Path, key: str, kept_out: tuple[str, ...]) -> None:
    """Start a preloader for `key` in its own session (it outlives this job); a second one started
    at the same moment finds the lock taken and exits. One that refused to serve (threads after its
    imports) leaves <key>.refused and its reason in <key>.log, and no job starts another."""
    if (folder / f"{key}.refused").exists():
        return
    # One thread each (THREAD_ENV): torch's import runs an OpenMP parallel region, and a child
    # forked after OpenMP started worker threads would hang in its next one.
    env = {**os.environ, **{name: "1" for name in THREAD_ENV}}
    env["CUDA_VISIBLE_DEVICES"] = ""  # never touch a GPU: a forked child could not use it
    # run as a file but without its folder on sys.path (its select.py would shadow the stdlib's)
    program = "import runpy, sys; sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
    with open(folder / f"{key}.log", "ab") as log:
        subprocess.Popen([sys.executable, "-c", program, __file__, "serve", str(folder), key, ",".join(kept_out)],
                         env=env, cwd="/", stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)


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
    for name in kept_out:  # as jobs do (common.skip_unused_imports): they cost seconds and start threads
        sys.modules[name] = None
    for name in LIBRARIES:
        importlib.import_module(name)
    for name in TRANSFORMERS_CLASSES:  # the Auto classes load their modules on first use
        getattr(sys.modules["transformers"], name)
    tasks = os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else ["main"]
    if len(tasks) != 1 or threading.active_count() != 1:  # a fork copies only the forking thread
        print(f"not serving: {len(tasks)} threads after the imports", flush=True)
        (folder / f"{key}.refused").touch()
        return
    loaded = _loaded_files()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(_address(folder, key))
    listener.listen(16)
    print(f"{SERVING} (pid {os.getpid()}) after {time.perf_counter() - started:.1f} s of imports", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append("SIGTERM"))
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
            if not select.select([listener], [], [], 0.2)[0]:
                continue
            conn, _ = listener.accept()
            conn.settimeout(5)  # a client stopped half-way must not hold up the others
            try:
                request, fds = _receive(conn) if _peer_uid(conn) == os.getuid() else (None, [])
            except (OSError, ValueError):
                request, fds = None, []
            if request is None or len(fds) != 5:
                conn.close()
                for fd in fds:
                    os.close(fd)
                continue
            changed = _changed_files(loaded)
            if changed:  # an upgrade or an edit under a library: this preloader's code is stale
                print(f"not serving any more: {changed[0]} changed", flush=True)
                _send_quietly(conn, {"refused": f"{changed[0]} changed"})
                conn.close()
                for fd in fds:
                    os.close(fd)
                break
            sys.stdout.flush(), sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close(), lock.close(), conn.close()
                for other in children.values():
                    other.close()
                _run_child(request, fds)  # never returns
            for fd in fds:
                os.close(fd)
            _send_quietly(conn, {"pid": pid})
            children[pid] = conn
            last_busy = time.monotonic()
    finally:
        listener.close()
        while children:
            _reap(children)
            time.sleep(0.1)
        own, forked = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
        print(f"{EXITING} cpu_s={own.ru_utime + own.ru_stime:.2f} "
              f"children_cpu_s={forked.ru_utime + forked.ru_stime:.2f}", flush=True)


def _loaded_files() -> dict[str, int]:
    files = {}
    for module in list(sys.modules.values()):
        origin = getattr(module, "__file__", None)
        if origin and origin not in files:
            try:
                files[origin] = os.stat(origin).st_mtime_ns
            except OSError:
                pass
    return files


def _changed_files(loaded: dict[str, int]) -> list[str]:
    changed = []
    for origin, mtime in loaded.items():
        try:
            if os.stat(origin).st_mtime_ns != mtime:
                changed.append(origin)
        except OSError:
            changed.append(origin)
    return changed


def _send_quietly(conn: socket.socket, message: dict) -> None:
    try:
        _send(conn, message)
    except OSError:
        pass  # the job process is gone; its child dies with it


def stop_preloaders(folder: Path, wait_s: float = 10.0) -> list[str]:
    """Ask every preloader serving from `folder` to exit (SIGTERM: it waits for its children);
    returns the line each logs as it exits (preloaders_cpu_seconds reads them)."""
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


def preloaders_cpu_seconds(folder: Path) -> float:
    """The CPU seconds every preloader that served from `folder` and ended used, with the children
    it forked (the jobs it ran): none of it is counted in the CPU of the processes that started them."""
    return sum(float(value) for log in Path(folder).glob("*.log") for line in _exit_lines(log)
               for value in (field.split("=")[1] for field in line.split()[1:]))


def _exit_lines(log: Path) -> list[str]:
    text = log.read_text(errors="replace") if log.exists() else ""
    return [line for line in text.splitlines() if line.startswith(EXITING)]


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
            _send_quietly(conn, {"exit": os.waitstatus_to_exitcode(status)})
            conn.close()


def _run_child(request: dict, fds: list[int]) -> None:
    """In the forked child: become the job (its stdio, folder, environment, path, signals,
    threads), then run its script as Python would have in the job's process. Ends the process."""
    code, killed_by = 1, None
    stdio, watch, status = fds[:3], fds[3], fds[4]
    try:
        for target, fd in zip((0, 1, 2), stdio):
            os.dup2(fd, target)
            os.close(fd)
        for sig in FORWARDED_SIGNALS + (signal.SIGCHLD,):
            ignored = int(sig) in request["ignored_signals"]
            default = signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL
            signal.signal(sig, signal.SIG_IGN if ignored else default)
        threading.Thread(target=_die_with_job, args=(watch,), daemon=True).start()
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"], **{STATUS_FD_ENV: str(status)})
        sys.path[:] = request["path"]
        sys.argv[:] = request["argv"]
        tempfile.tempdir = None  # follow the job's TMPDIR
        if "numpy" in sys.modules:  # its global generator was seeded once, in the preloader
            sys.modules["numpy"].random.seed()
        for name in os.environ.get(KEPT_OUT_ENV, "").split(","):  # a script may import them itself
            if name and sys.modules.get(name, 0) is None:
                del sys.modules[name]
        sys.modules["torch"].set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # forks_from_preloader: set
        runpy.run_path(request["script"], run_name="__main__")
        code = 0
    except SystemExit as e:
        code = e.code & 0xFF if isinstance(e.code, int) else (0 if e.code is None else 1)
        if e.code is not None and not isinstance(e.code, int):
            print(e.code, file=sys.stderr)
    except KeyboardInterrupt:
        traceback.print_exc()
        killed_by = signal.SIGINT  # Python ends by SIGINT after an uncaught KeyboardInterrupt
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            _shut_down_like_the_interpreter()
            os.write(status, str(-killed_by if killed_by else code).encode())
            if killed_by:
                signal.signal(killed_by, signal.SIG_DFL)
                os.kill(os.getpid(), killed_by)
        finally:
            os._exit(code)


def _shut_down_like_the_interpreter() -> None:
    """What Python does at exit, which os._exit skips: wait for non-daemon threads (and the
    executors' atexit hooks), run exit handlers, collect garbage (open files' finalisers), and
    flush Python's and C's output buffers."""
    if hasattr(threading, "_shutdown"):
        threading._shutdown()
    atexit._run_exitfuncs()
    import gc

    gc.collect()
    for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass
    try:
        import ctypes

        ctypes.CDLL(None).fflush(None)
    except (OSError, AttributeError):
        pass


def _die_with_job(watch: int) -> None:
    while os.read(watch, 1):
        pass
    os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__" and sys.argv[1:2] == ["serve"]:
    serve(Path(sys.argv[2]), sys.argv[3], [name for name in sys.argv[4].split(",") if name])

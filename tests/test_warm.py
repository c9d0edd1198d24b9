"""Warm start (peftgrid/jobs/warm.py): a model job forks from a preloader that has imported torch,
transformers and peft, and behaves as the job's own process would: its stdio, folder, environment,
threads and exit, killed with it, and the same trained weights as a cold job."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO

from peftgrid.jobs import warm
from peftgrid.jobs.common import OPTIONAL_IMPORTS, read_job_times

# A job process, as run_job hands over: forks the script from the preloader, or says COLD.
JOB = ("import signal, sys\nfrom peftgrid.jobs import warm\n"
       f"code = warm.run_forked(sys.argv[1], None, 0.0, {OPTIONAL_IMPORTS!r})\n"
       "if code is None:  # runs here: with its own signal handlers back\n"
       "    print('COLD', signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)\n"
       "    sys.exit(99)\nsys.exit(code)\n")
COLD = "COLD True"


def job(script: Path, folder: Path, cwd=None, env=None, wait=True, **kw):
    env = {**os.environ, warm.DIR_ENV: str(folder), "OMP_NUM_THREADS": "1", **(env or {})}
    args = [sys.executable, "-c", JOB, str(script)]
    if not wait:
        return subprocess.Popen(args, cwd=cwd or script.parent, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, **kw)
    return subprocess.run(args, cwd=cwd or script.parent, env=env, capture_output=True, text=True, timeout=120, **kw)


def wait_for_preloader(folder: Path, timeout: float = 120.0) -> None:
    """Until a preloader in `folder` says it serves (it logs that once it listens)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = [line for log in folder.glob("*.log") for line in log.read_text(errors="replace").splitlines()]
        if any(line.startswith(warm.SERVING) for line in lines):
            return
        time.sleep(0.2)
    raise AssertionError(f"no preloader serves in {folder}: " + " ".join(
        p.read_text() for p in folder.glob("*.log")))


@pytest.fixture(scope="module")
def preloader(tmp_path_factory):
    """A preloader started the way a job starts one: the first job finds none, runs cold, and
    leaves one starting for the next."""
    folder = tmp_path_factory.mktemp("warm")
    script = folder / "noop.py"
    script.write_text("")
    first = job(script, folder)
    assert first.stdout.strip() == COLD and first.returncode == 99
    wait_for_preloader(folder)
    yield folder
    warm.stop_preloaders(folder)  # or it has gone idle already (IDLE_S)
    assert warm.EXITING in next(folder.glob("*.log")).read_text(), "the preloader did not end"


def test_a_forked_job_is_the_job_its_folder_environment_threads_output_and_exit(preloader, tmp_path):
    here = tmp_path / "job folder"
    here.mkdir()
    script = tmp_path / "child.py"
    script.write_text(
        "import json, os, signal, sys\n"
        "preloaded = sorted(m for m in ('torch', 'transformers', 'peft', 'peftgrid') if m in sys.modules)\n"
        "import torch\n"
        "print('to stderr', file=sys.stderr)\n"
        "print(json.dumps({'pid': os.getpid(), 'ppid': os.getppid(), 'cwd': os.getcwd(), 'mark': os.environ.get('MARK'),\n"
        "                  'threads': torch.get_num_threads(), 'preloaded': preloaded, 'argv': sys.argv[1:],\n"
        "                  'hup_ignored': signal.getsignal(signal.SIGHUP) == signal.SIG_IGN,\n"
        "                  'int_raises': signal.getsignal(signal.SIGINT) is signal.default_int_handler}))\n"
        "sys.exit(3)\n")
    done = job(script, preloader, cwd=here, env={"MARK": "from the job", "OMP_NUM_THREADS": "2"},
               preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))  # as under nohup
    assert done.returncode == 3, done.stdout + done.stderr
    assert done.stderr.strip() == "to stderr"
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["preloaded"] == ["peft", "torch", "transformers"]  # never our code: an edit takes effect at once
    assert seen["cwd"] == str(here) and seen["mark"] == "from the job" and seen["threads"] == 2
    assert seen["argv"] == [str(script)] and seen["hup_ignored"] and seen["int_raises"]
    lock = next(preloader.glob("*.lock")).read_text().strip()
    assert seen["ppid"] == int(lock)  # forked by the preloader, not started by the job process


def test_a_child_killed_by_a_signal_ends_its_job_by_the_same_signal(preloader, tmp_path):
    script = tmp_path / "die.py"
    script.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert job(script, preloader).returncode == -signal.SIGKILL


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_the_child_dies_with_its_job_process(preloader, tmp_path, sig):
    """SIGTERM (Snakemake, a scheduler) and SIGINT (Ctrl-C: KeyboardInterrupt, as in the job's own
    process) are passed on; SIGKILL cannot be, and the child notices the job process's end on a
    pipe. Either way no training outlives its job, and the job ends by the same signal."""
    pid_file, got = tmp_path / "pid", tmp_path / "got SIGTERM"
    script = tmp_path / "sleep.py"
    script.write_text("import os, signal, time\n"
                      "def note(signum, frame):  # proof that the signal reached the child itself\n"
                      f"    open({str(got)!r}, 'w').close()\n"
                      "    signal.signal(signum, signal.SIG_DFL)\n    os.kill(os.getpid(), signum)\n"
                      "signal.signal(signal.SIGTERM, note)\n"
                      f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(120)\n")
    proc = job(script, preloader, wait=False)
    deadline = time.monotonic() + 60
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and proc.poll() is None, "the child never started"
        time.sleep(0.1)
    child = int(pid_file.read_text())
    proc.send_signal(sig)
    assert proc.wait(timeout=30) == -sig
    if sig == signal.SIGTERM:
        assert got.exists(), "SIGTERM was not passed on to the child"
    if sig == signal.SIGINT:  # the child's KeyboardInterrupt, raised in the script, not the job process's
        assert "KeyboardInterrupt" in (err := proc.stderr.read()) and "sleep.py" in err, err
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists():  # the preloader reaps it once it has died
        assert time.monotonic() < deadline, f"child {child} outlived its job ({sig!r})"
        time.sleep(0.1)


def test_a_job_that_uses_a_library_the_preloader_kept_out_runs_cold(preloader, tmp_path):
    """QLoRA uses bitsandbytes, which transformers and peft decided on import was not installed."""
    script = tmp_path / "qlora.py"
    script.write_text("from peftgrid.jobs.common import skip_unused_imports\n"
                      "skip_unused_imports(('torch', 'bitsandbytes'))\nprint('ran forked')\n")
    done = job(script, preloader)
    assert done.stdout.strip() == COLD and done.returncode == 99, done.stdout + done.stderr
    script.write_text("import sklearn\nprint('ran forked')\n")
    done = job(script, preloader)  # a script that declares no libraries (COMET's) may still import one
    assert done.stdout.strip() == "ran forked" and done.returncode == 0, done.stdout + done.stderr


def test_the_preloader_key_follows_what_libraries_read_on_import_and_nothing_per_job():
    env = {"HF_HOME": "/a", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "SNAKEMAKE_X": "1"}
    key = warm.preloader_key(OPTIONAL_IMPORTS, env)
    assert warm.preloader_key(OPTIONAL_IMPORTS, {**env, "HF_HOME": "/b"}) != key
    assert warm.preloader_key(OPTIONAL_IMPORTS, {**env, "TRANSFORMERS_VERBOSITY": "info"}) != key
    assert warm.preloader_key(OPTIONAL_IMPORTS, {**env, "HOME": "/elsewhere"}) != key
    assert warm.preloader_key(("sklearn",), env) != key
    per_job = {"OMP_NUM_THREADS": "2", "SNAKEMAKE_X": "2", "MARK": "x", "PEFTGRID_FAULT": "kill:3"}
    assert warm.preloader_key(OPTIONAL_IMPORTS, {**env, **per_job}) == key


def test_a_preloader_notices_a_changed_file_among_those_it_loaded(tmp_path, monkeypatch):
    module = tmp_path / "edited_library.py"
    module.write_text("VALUE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import edited_library  # noqa: F401

    loaded = warm._loaded_files()
    assert str(module) in loaded and warm._changed_files(loaded) == []
    os.utime(module, ns=(time.time_ns(), loaded[str(module)] + 1_000_000))
    assert warm._changed_files(loaded) == [str(module)]


def test_two_messages_sent_together_are_read_as_two():
    """A child that ends at once: its exit message can arrive with the one saying it started."""
    a, b = socket.socketpair()
    warm._send(a, {"pid": 7})
    warm._send(a, {"exit": 4})
    assert warm._receive(b)[0] == {"pid": 7} and warm._receive(b)[0] == {"exit": 4}
    a.close()
    assert warm._receive(b)[0] is None


@pytest.mark.parametrize("env, resources, forks", [
    ({}, {"gpu": 1}, True),
    ({}, {}, False),  # not a model job
    ({"SLURM_JOB_ID": "1"}, {"gpu": 1}, False),
    ({warm.ENABLE_ENV: "0"}, {"gpu": 1}, False),
    ({"OMP_NUM_THREADS": None}, {"gpu": 1}, False),  # not started by Snakemake: threads unknown
    ({"PEFTGRID_DEVICE": "cuda:0"}, {"gpu": 1}, False),
    ({"PEFTGRID_DEVICE": "xpu"}, {"gpu": 1}, False),  # any device but the CPU may be initialised
    ({"PEFTGRID_DEVICE": None, "CUDA_VISIBLE_DEVICES": "0"}, {"gpu": 1}, False),  # a GPU is visible
    ({"PEFTGRID_DEVICE": None, "CUDA_VISIBLE_DEVICES": "-1"}, {"gpu": 1}, True),  # every GPU hidden
    ({warm.CHILD_ENV: "1"}, {"gpu": 1}, False),
])
def test_which_jobs_fork_from_a_preloader(monkeypatch, env, resources, forks):
    monkeypatch.setenv("PEFTGRID_DEVICE", "cpu")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    for name in ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID", warm.ENABLE_ENV, warm.CHILD_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value) if value is not None else monkeypatch.delenv(name)
    assert warm.forks_from_preloader(resources) is forks


def test_library_messages_in_a_forked_job_go_to_its_log(preloader, tmp_path):
    """transformers makes its log handler on import, in the preloader, bound to the console; the
    job's log must still get what transformers says during the job."""
    log = tmp_path / "job.log"
    script = tmp_path / "job.py"
    script.write_text(
        "from types import SimpleNamespace\nfrom peftgrid.jobs.common import run_job\n"
        "def main(smk):\n"
        "    from transformers.utils import logging\n"
        "    logging.get_logger('transformers.modeling_utils').error('a note from transformers')\n"
        f"run_job(main, SimpleNamespace(log=[{str(log)!r}], rule='train', params=SimpleNamespace(), resources={{}}))\n")
    done = job(script, preloader)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "a note from transformers" in log.read_text() and "a note" not in done.stderr
    assert read_job_times(log)[-1]["start"] == warm.START_PRELOADED


@pytest.mark.slow
def test_training_forked_from_the_preloader_writes_the_weights_a_cold_job_writes(tiny_bert, tmp_path, monkeypatch):
    """The same two cells trained cold (PEFTGRID_WARM_START=0) and forked: the weights are equal to
    the last bit, and every job of the second run says it was forked."""
    from conftest import newcomer_study, run_snakemake, write_config

    runs = {}
    for name in ("cold", "warm", "again"):
        work = tmp_path / name
        work.mkdir()
        config = newcomer_study(tiny_bert, work)
        config["experiments"][0]["methods"] = ["full", "lora"]
        write_config(work / "config.yaml", config)
        monkeypatch.setenv(warm.ENABLE_ENV, "0" if name == "cold" else "1")
        monkeypatch.setenv(warm.DIR_ENV, str(tmp_path / "preloaders"))
        run_snakemake(work, "--until", "train")
        if name == "warm":  # its first job started the preloader
            wait_for_preloader(tmp_path / "preloaders")
        runs[name] = work
    try:
        logs = sorted((runs["again"] / "logs").glob("results/runs/**/train.log"))
        assert len(logs) == 2 and all(read_job_times(log)[-1]["start"] == warm.START_PRELOADED for log in logs)
        cold_logs = (runs["cold"] / "logs").glob("results/runs/**/train.log")
        assert all(read_job_times(log)[-1]["start"] == warm.START_COLD for log in cold_logs)
        weights = sorted(runs["cold"].glob("results/runs/**/model/*.safetensors"))
        assert len(weights) == 2
        for path in weights:
            forked = runs["again"] / path.relative_to(runs["cold"])
            assert forked.read_bytes() == path.read_bytes(), f"{path.relative_to(runs['cold'])} differs"
    finally:
        warm.stop_preloaders(tmp_path / "preloaders")


def test_a_preloader_serves_only_its_own_user(preloader):
    """Its socket is in the abstract namespace, which any local user can reach: a connection from
    another user is closed before anything is read or forked."""
    if os.getuid() != 0:
        pytest.skip("connecting as another user needs root")
    address = warm._address(preloader, next(preloader.glob("*.log")).stem)  # <key>.log

    def answer(uid: int | None) -> bytes:
        """What the preloader sends back to a request made by `uid` (a forked process of ours)."""
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                if uid is not None:
                    os.setuid(uid)
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(address)
                    s.settimeout(30)
                    # a request that makes a child fail at once (no folder): answered with its pid, then its end
                    try:
                        warm._send(s, {"script": "/dev/null"}, [0, 1, 2, 0, 1])
                        os.write(write, s.recv(100) or b"closed")
                    except (BrokenPipeError, ConnectionResetError):  # closed before or after our request
                        os.write(write, b"closed")
            except BaseException as e:  # what went wrong, for the assertion's message
                os.write(write, repr(e).encode())
            finally:
                os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read, "rb") as f:
            return f.read()

    assert answer(65534) == b"closed"  # nobody
    assert b"pid" in answer(None)


def test_a_job_ends_as_its_child_did_even_when_the_preloader_dies_meanwhile(tmp_path):
    """The preloader reaps children and reports their ends; killed (out of memory, by hand) while a
    job runs, the job still waits for its child and exits with the child's code."""
    folder = tmp_path / "own preloader"
    folder.mkdir(mode=0o700)
    (folder / "noop.py").write_text("")
    assert job(folder / "noop.py", folder).stdout.strip() == COLD
    wait_for_preloader(folder)
    started, script = tmp_path / "started", tmp_path / "slow.py"
    script.write_text(f"import sys, time\nopen({str(started)!r}, 'w').close()\ntime.sleep(3)\nsys.exit(5)\n")
    proc = job(script, folder, wait=False)
    deadline = time.monotonic() + 60
    while not started.exists():
        assert time.monotonic() < deadline and proc.poll() is None, "the child never started"
        time.sleep(0.1)
    os.kill(int(next(folder.glob("*.lock")).read_text()), signal.SIGKILL)
    assert proc.wait(timeout=60) == 5, proc.stderr.read()

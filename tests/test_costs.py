"""Peak memory has one basis on every device (peftgrid.engine.device): what the process holds beyond
what it held before the model was loaded — the weights count. The CPU basis is tested here; the
CUDA one (and bitsandbytes' paged optimizer states, which torch's allocator never sees) where CUDA
exists."""
import pytest
import torch

from peftgrid.engine import device as dev

WEIGHTS_MB = 64


def _weights(on: torch.device) -> torch.Tensor:
    """A stand-in for a model's weights, loaded before the phase: WEIGHTS_MB of float32, touched."""
    return torch.ones(WEIGHTS_MB * 2**20 // 4, device=on)


def _in_a_fresh_process(body: str) -> float:
    """Run `body` (which leaves the phase's peak in `meter`) in a new interpreter, as a job runs: in a
    long-lived test worker, memory earlier tests freed stays resident and a new allocation may reuse
    it without the RSS growing, so the figure would depend on which tests ran before."""
    import subprocess
    import sys

    code = ("import torch\nfrom peftgrid.engine import device as dev\n"
            f"WEIGHTS_MB = {WEIGHTS_MB}\ncpu = torch.device('cpu')\n" + body
            + "\nassert meter.measure == dev.MEM_MEASURE['cpu']\nprint(meter.peak_mem_mb)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def test_cpu_peak_counts_the_weights_loaded_before_the_phase():
    """The weights were loaded before the phase started, and the phase adds almost nothing: its
    peak is still at least the weights (a peak counted above the phase's start would be ~0)."""
    peak = _in_a_fresh_process(
        "dev.mark_memory_baseline()\n"
        "weights = torch.ones(WEIGHTS_MB * 2**20 // 4, device=cpu)\n"
        "with dev.PhaseMeter(cpu) as meter:\n"
        "    float((weights[:1000] * 2).sum())  # a phase that allocates next to nothing\n")
    assert peak >= 0.95 * WEIGHTS_MB, peak


def test_cpu_peak_counts_what_the_phase_allocates():
    peak = _in_a_fresh_process(
        "dev.mark_memory_baseline()\n"
        "with dev.PhaseMeter(cpu) as meter:\n"
        "    extra = torch.ones(WEIGHTS_MB * 2**20 // 4, device=cpu)\n"
        "    del extra\n")
    assert peak >= 0.95 * WEIGHTS_MB, peak


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_peak_counts_the_weights_and_paged_optimizer_states():
    cuda = torch.device("cuda")
    dev.mark_memory_baseline()
    weights = _weights(cuda)
    with dev.PhaseMeter(cuda) as meter:
        float((weights[:1000] * 2).sum())
    assert meter.measure == dev.MEM_MEASURE["cuda"]
    assert meter.peak_mem_mb >= WEIGHTS_MB, meter.peak_mem_mb
    del weights

    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    param = torch.nn.Parameter(torch.zeros(1024, 1024, device=cuda))  # 4 MB: over the 1e5 elements that page
    optimizer = bnb.optim.PagedAdamW32bit([param], lr=1e-3)
    param.grad = torch.ones_like(param)
    optimizer.step()
    # AdamW keeps two fp32 states per parameter: 2 x 4 MB in unified memory
    assert dev.paged_state_mb(optimizer) == pytest.approx(8.0)
    assert dev.paged_state_mb(torch.optim.AdamW([param], lr=1e-3)) == 0.0


def test_cpu_peak_counts_a_phase_after_earlier_work_in_the_same_process():
    """A process that already allocated and freed memory (a test worker, a notebook, a halving rung
    after its validation) keeps it in the C heap; the weights then reuse it without the RSS growing,
    and the peak measured ~0 (seen in CI: test_training's LoRA cell, peak_train_mem_mb 0.0). The
    baseline now gives free heap pages back first."""
    peak = _in_a_fresh_process(
        "junk = [torch.randn(64, 1024) for _ in range(2000)]  # ~500 MB in 256 KB pieces, below mmap's threshold\n"
        "del junk\n"
        "dev.mark_memory_baseline()\n"
        "with dev.PhaseMeter(cpu) as meter:\n"
        "    weights = [torch.ones(64, 1024) for _ in range(WEIGHTS_MB * 4)]  # WEIGHTS_MB in 256 KB pieces\n")
    assert peak >= 0.95 * WEIGHTS_MB, peak

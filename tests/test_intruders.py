"""Intruder dimensions (peftgrid.report.distances): new high-ranking singular directions of a
fine-tuned weight matrix, as Shuttleworth et al. define and count them."""
import numpy as np
import pytest
import torch

from peftgrid.report.distances import INTRUDER_K, INTRUDER_THRESHOLD, intruder_dimensions, tensor_distances


def authors_count(base: torch.Tensor, tuned: torch.Tensor, k=INTRUDER_K, threshold=INTRUDER_THRESHOLD) -> int:
    """The authors' published computation (find_number_of_intruder_dimensions), for one matrix."""
    u_base = torch.linalg.svd(base.float(), full_matrices=False)[0]
    u_tuned = torch.linalg.svd(tuned.float(), full_matrices=False)[0]
    best = torch.abs(torch.einsum("ji,jk->ik", u_tuned, u_base)).max(dim=1)[0]
    return len(best[:k][best[:k] < threshold])


def base_matrix(shape=(96, 64), seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g) / 10


def rank_one(shape, scale, seed):
    g = torch.Generator().manual_seed(seed)
    u, v = torch.randn(shape[0], generator=g), torch.randn(shape[1], generator=g)
    return scale * torch.outer(u / u.norm(), v / v.norm())


def test_an_unchanged_weight_has_no_intruder():
    w = base_matrix()
    assert intruder_dimensions(w, w.clone()) == 0
    assert intruder_dimensions(w, w + 1e-4 * base_matrix(seed=1)) == 0  # a tiny nudge keeps every direction


def test_a_large_injected_direction_is_an_intruder():
    w = base_matrix()
    top = float(torch.linalg.svdvals(w)[0])
    # a random direction in 96 dimensions has |cosine| ~0.1-0.3 with each base singular vector
    assert intruder_dimensions(w, w + rank_one(w.shape, 3 * top, seed=2)) >= 1
    # the same direction with a tiny norm does not rank among the top k: no intruder
    assert intruder_dimensions(w, w + rank_one(w.shape, 1e-3 * top, seed=2)) == 0


@pytest.mark.parametrize("scale", [0.3, 1.0, 2.0, 5.0])
def test_counts_equal_the_authors_computation(scale):
    w = base_matrix()
    top = float(torch.linalg.svdvals(w)[0])
    tuned = w + sum(rank_one(w.shape, scale * top / (i + 1), seed=10 + i) for i in range(6))
    assert intruder_dimensions(w, tuned) == authors_count(w, tuned)


def test_tensor_distances_count_layer_matrices_only():
    w = base_matrix((32, 32))
    top = float(torch.linalg.svdvals(w)[0])
    base = {"encoder.layer.0.attention.self.query.weight": w, "encoder.layer.0.attention.self.query.bias": w[0],
            "embeddings.word_embeddings.weight": w, "classifier.weight": w}
    tuned = {name: t + (rank_one(t.shape, 3 * top, 3) if t.dim() == 2 else 0.5) for name, t in base.items()}
    rows = {r["name"]: r["intruders"] for r in tensor_distances(base, tuned)}
    assert rows["encoder.layer.0.attention.self.query.weight"] >= 1
    assert rows["encoder.layer.0.attention.self.query.bias"] == ""
    assert rows["embeddings.word_embeddings.weight"] == "" and rows["classifier.weight"] == ""
    assert np.isclose(sum(1 for v in rows.values() if v != ""), 1)

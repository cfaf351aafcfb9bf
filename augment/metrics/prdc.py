"""Precision/recall (Kynkäänniemi et al. 2019) and density/coverage (Naeem et al. 2020), k = 5.

The real manifold is the union of balls around each real feature with radius its distance to the
k-th nearest other real feature (the fake manifold likewise). Then

* precision: share of fake samples inside the real manifold (fidelity);
* recall: share of real samples inside the fake manifold (diversity);
* density: mean number of real balls containing a fake sample, divided by k (fidelity, robust
  to real outliers; 1 for identical distributions in expectation);
* coverage: share of real samples whose ball contains at least one fake sample (diversity).

Comparisons are strict (``<``), as in the reference implementation (the ``prdc`` package), which
the tests check this vectorised torch version against. Distances are computed in chunks, so
10,000 reference images never need a 10,000 x 10,000 matrix at once.

Example:
    >>> import torch
    >>> x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    >>> prdc(x, x.clone(), nearest_k=5)["precision"]
    1.0
"""

from __future__ import annotations

import torch

NEAREST_K = 5
_CHUNK = 2048


def kth_neighbour_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance from each row of ``x`` to its k-th nearest *other* row."""
    if len(x) <= k:
        raise ValueError(f"need more than k={k} samples to measure k-NN radii, got {len(x)}")
    x = x.double()
    out = []
    for start in range(0, len(x), _CHUNK):
        d = torch.cdist(x[start : start + _CHUNK], x)
        # k + 1: the row's distance to itself (0) is the smallest.
        out.append(d.kthvalue(k + 1, dim=1).values)
    return torch.cat(out)


def prdc(real: torch.Tensor, fake: torch.Tensor, nearest_k: int = NEAREST_K) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` features against ``real`` features."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"prdc: need (N, D) and (M, D) feature matrices, got {tuple(real.shape)}, {tuple(fake.shape)}")
    real, fake = real.double(), fake.double()
    r_real = kth_neighbour_radii(real, nearest_k)
    r_fake = kth_neighbour_radii(fake, nearest_k)
    in_real_balls = torch.zeros(len(fake), dtype=torch.float64)  # per fake: how many real balls contain it
    recall_hit = torch.zeros(len(real), dtype=torch.bool)
    covered = torch.zeros(len(real), dtype=torch.bool)
    for start in range(0, len(real), _CHUNK):
        d = torch.cdist(real[start : start + _CHUNK], fake)  # (chunk, M)
        rr = r_real[start : start + _CHUNK, None]
        in_real_balls += (d < rr).sum(dim=0).double()
        recall_hit[start : start + _CHUNK] = (d < r_fake[None, :]).any(dim=1)
        covered[start : start + _CHUNK] = d.min(dim=1).values < rr[:, 0]
    return {
        "precision": float((in_real_balls > 0).double().mean()),
        "recall": float(recall_hit.double().mean()),
        "density": float(in_real_balls.mean() / nearest_k),
        "coverage": float(covered.double().mean()),
    }


def prdc_report(
    ref: torch.Tensor,
    ref_labels: torch.Tensor,
    fake: torch.Tensor,
    fake_labels: torch.Tensor,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    class_names: list[str],
    nearest_k: int = NEAREST_K,
) -> dict:
    """PRDC of ``fake`` against the reference ``ref``, and the floor: ``real`` against ``ref``.

    ``fake`` and ``real`` carry equal per-class counts, so the floor is what real images score at
    the same sample sizes. Classes with too few samples for k-NN radii get ``None`` values.
    """

    def both(r: torch.Tensor, f: torch.Tensor, a: torch.Tensor) -> dict:
        n = {"n_reference": len(r), "n_synthetic": len(f), "n_real": len(a)}
        if min(len(r), len(f), len(a)) <= nearest_k:
            return {**n, "synthetic": None, "floor": None}
        return {**n, "synthetic": prdc(r, f, nearest_k), "floor": prdc(r, a, nearest_k)}

    out = {"nearest_k": nearest_k, **both(ref, fake, real), "per_class": {}}
    for c, name in enumerate(class_names):
        out["per_class"][name] = both(ref[ref_labels == c], fake[fake_labels == c], real[real_labels == c])
    return out

"""Memorisation check: are synthetic images closer to the GAN's training images than fresh real ones?

For each synthetic image, the distance to its nearest GAN-training image (pixel space, over every
class: a copy of any training image counts; each image standardised to zero mean and unit
variance first, so a dim, blurry sample is not "near" every dark training image: raw intensities
flag such blobs on Fashion-MNIST's sparse classes, standardised ones only flag shared structure);
the same for held-out real images (never seen by the GAN). A held-out real image is by
definition no copy, so the ``quantile`` of its distances is the near-copy threshold: a synthetic
image closer than that is a *near-copy*. With labels the threshold is per class (the held-out
images of the synthetic image's class): sparse classes (sandals: mostly background) sit closer
to everything in pixel space, and one global threshold would flag them for that alone. A
generator that does not memorise shows a near-copy fraction near ``quantile``; one that replays
its training set shows far more.

Example:
    >>> import torch
    >>> train = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    >>> heldout = torch.randint(0, 256, (50, 1, 8, 8), dtype=torch.uint8)
    >>> out = memorisation(train[:10].clone(), train, heldout)   # exact copies
    >>> out["near_copy_fraction"]
    1.0
"""

from __future__ import annotations

from pathlib import Path

import torch

_CHUNK = 1024


def _flat(images: torch.Tensor, standardise: bool = True) -> torch.Tensor:
    x = images.reshape(len(images), -1).double() / 255.0
    if standardise:
        x = (x - x.mean(dim=1, keepdim=True)) / (x.std(dim=1, keepdim=True) + 1e-3)
    return x


def nearest_neighbours(
    query: torch.Tensor, bank: torch.Tensor, standardise: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMS pixel distance from each uint8 ``query`` image to its nearest ``bank`` image, and its index.

    ``standardise``: compare per-image standardised pixels (zero mean, unit variance; the default)
    instead of raw [0, 1] intensities.
    """
    q, b = _flat(query, standardise), _flat(bank, standardise)
    dims = q.shape[1]
    dist, idx = [], []
    for start in range(0, len(q), _CHUNK):
        d = torch.cdist(q[start : start + _CHUNK], b)
        m = d.min(dim=1)
        dist.append(m.values / dims**0.5)
        idx.append(m.indices)
    return torch.cat(dist), torch.cat(idx)


def memorisation(
    synthetic: torch.Tensor,
    train: torch.Tensor,
    heldout: torch.Tensor,
    synthetic_labels: torch.Tensor | None = None,
    class_names: list[str] | None = None,
    quantile: float = 0.05,
    top: int = 16,
    heldout_labels: torch.Tensor | None = None,
    standardise: bool = True,
) -> dict:
    """Near-copy statistics of uint8 ``synthetic`` images against the GAN's ``train`` images.

    Args:
        synthetic, train, heldout: uint8 ``(N, C, H, W)``; ``heldout`` is real and unseen by the GAN.
        synthetic_labels, class_names: give per-class near-copy fractions when set.
        quantile: the held-out distance quantile that defines a near-copy.
        top: how many closest synthetic/train pairs to return (for the pairs image).
        heldout_labels: with ``synthetic_labels``, the threshold is taken per class.
        standardise: per-image standardised pixels (default) or raw intensities.
    """
    d_syn, nn_syn = nearest_neighbours(synthetic, train, standardise)
    d_real, _ = nearest_neighbours(heldout, train, standardise)
    threshold = float(torch.quantile(d_real, quantile))
    per_class_thr: dict[int, float] = {}
    syn_thr = torch.full_like(d_syn, threshold)
    real_thr = torch.full_like(d_real, threshold)
    if synthetic_labels is not None and heldout_labels is not None:
        for c in synthetic_labels.unique().tolist():
            mask = heldout_labels == c
            if mask.any():
                per_class_thr[c] = float(torch.quantile(d_real[mask], quantile))
                syn_thr[synthetic_labels == c] = per_class_thr[c]
                real_thr[mask] = per_class_thr[c]
    near = d_syn < syn_thr
    order = torch.argsort(d_syn)[:top]
    out = {
        "space": "pixels, standardised per image (RMS)" if standardise else "pixels (RMS of [0,1] intensities)",
        "n_synthetic": len(synthetic),
        "n_train": len(train),
        "n_heldout": len(heldout),
        "quantile": quantile,
        "threshold": threshold,
        "threshold_per_class": bool(per_class_thr),
        "near_copy_fraction": float(near.double().mean()),
        "heldout_below_threshold": float((d_real < real_thr).double().mean()),
        "synthetic_nn_median": float(d_syn.median()),
        "heldout_nn_median": float(d_real.median()),
        "synthetic_nn_min": float(d_syn.min()),
        "heldout_nn_min": float(d_real.min()),
        "median_ratio": float(d_syn.median() / d_real.median()) if float(d_real.median()) > 0 else None,
        "closest_pairs": [
            {"synthetic": int(i), "train": int(nn_syn[i]), "distance": float(d_syn[i])} for i in order.tolist()
        ],
    }
    if synthetic_labels is not None and class_names is not None:
        out["per_class"] = {}
        for c, name in enumerate(class_names):
            mask = synthetic_labels == c
            if mask.any():
                out["per_class"][name] = {
                    "n_synthetic": int(mask.sum()),
                    "threshold": per_class_thr.get(c, threshold),
                    "near_copy_fraction": float(near[mask].double().mean()),
                    "synthetic_nn_median": float(d_syn[mask].median()),
                }
    return out


def save_pairs_image(
    path: Path, synthetic: torch.Tensor, train: torch.Tensor, pairs: list[dict], title: str = ""
) -> Path:
    """Closest synthetic (top row) / GAN-training (bottom row) pairs with their distances, as PNG
    (:func:`augment.metrics.plots.pairs_figure`)."""
    from augment.metrics.plots import pairs_figure, save_figure

    return save_figure(pairs_figure(synthetic, train, pairs, title=title), Path(path))

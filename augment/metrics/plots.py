"""The evaluation's pictures: each is built as a matplotlib figure (so tests can read its labels,
intervals and colorbars) and saved as PNG by its ``plot_*`` twin.

Every accuracy picture shows the mean over seeds with its 95% t-interval, on the real test split.

Example:
    >>> fig = deltas_figure(result["downstream"])  # doctest: +SKIP
    >>> fig.axes[0].get_xlabel()  # doctest: +SKIP
    'Δ balanced accuracy vs real+classic (pts), real test split (n=600)'
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import torch

from augment.io import atomic_save


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG (atomically) and close it."""
    plt = _plt()
    atomic_save(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight"))
    plt.close(fig)
    return Path(path)


def _n_seeds(down: dict[str, Any]) -> int:
    return len(down.get("seeds") or [])


def _image(ax: Any, img: torch.Tensor) -> None:
    """A uint8 (C, H, W) image, gray for one channel, drawn pixel for pixel (no smoothing)."""
    arr = img.permute(1, 2, 0).numpy()
    ax.imshow(arr[:, :, 0] if arr.shape[2] == 1 else arr, cmap="gray", vmin=0, vmax=255, interpolation="nearest")


# ------------------------------------------------------------------------------------------------
# Accuracy pictures.


def deltas_figure(down: dict[str, Any]) -> Any:
    """The headline picture: each regime's paired change in balanced accuracy against the baseline
    (points, dots with 95% intervals) and a zero line; above zero means "helped". A regime without
    an interval (too few seeds) is drawn as a hollow dot."""
    plt = _plt()
    base = down.get("baseline") or "baseline"
    regimes = [r for r in down.get("regimes", {}) if r in down.get("deltas", {})]
    fig, ax = plt.subplots(figsize=(6.4, 0.9 + 0.45 * max(len(regimes), 1)))
    ax.axvline(0.0, color="0.3", linewidth=1, linestyle="--", label=f"no change vs {base}")
    for i, r in enumerate(regimes):
        ci = down["deltas"][r]["balanced_accuracy"]
        mean = 100 * ci["mean"]
        color = "tab:orange" if "gan" in r else "tab:blue"
        if ci.get("ci_low") is None:
            ax.plot([mean], [i], "o", mfc="none", color=color)
            continue
        lo, hi = 100 * ci["ci_low"], 100 * ci["ci_high"]
        ax.errorbar([mean], [i], xerr=[[mean - lo], [hi - mean]], fmt="o", color=color, capsize=4)
    ax.set_yticks(range(len(regimes)), regimes)
    ax.invert_yaxis()
    ax.set_xlabel(f"Δ balanced accuracy vs {base} (pts), real test split (n={down.get('n_test')})")
    status = (down.get("verdict") or {}).get("status", "")
    ax.set_title(f"Does it help? {status} ({_n_seeds(down)} seeds, 95% CI, paired by seed)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_deltas(path: Path, down: dict[str, Any]) -> Path:
    """:func:`deltas_figure` saved as PNG."""
    return save_figure(deltas_figure(down), path)


def regimes_figure(down: dict[str, Any]) -> Any:
    """Bars of accuracy / balanced accuracy / macro-F1 per regime with 95% intervals."""
    plt = _plt()
    regimes = list(down["regimes"])
    metrics = ["accuracy", "balanced_accuracy", "macro_f1"]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(regimes), 3.4))
    width = 0.8 / len(metrics)
    for j, m in enumerate(metrics):
        means = [down["regimes"][r][m]["mean"] for r in regimes]
        lows = [down["regimes"][r][m]["ci_low"] for r in regimes]
        highs = [down["regimes"][r][m]["ci_high"] for r in regimes]
        err = [
            [mu - lo if lo is not None else 0 for mu, lo in zip(means, lows, strict=True)],
            [hi - mu if hi is not None else 0 for mu, hi in zip(means, highs, strict=True)],
        ]
        ax.bar(np.arange(len(regimes)) + (j - 1) * width, means, width, yerr=err, capsize=3, label=m.replace("_", " "))
    ax.set_xticks(np.arange(len(regimes)), regimes, fontsize=8)
    lo = min(min(v["values"]) for r in regimes for k, v in down["regimes"][r].items() if k in metrics)
    ax.set_ylim(max(0.0, lo - 0.1), 1.0)
    ax.set_ylabel(f"real test split (n={down['n_test']})")
    ax.set_title(
        f"{down['classifier']}, {down['steps']} steps x {down['batch_size']}, {_n_seeds(down)} seeds, mean and 95% CI",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="lower right")
    return fig


def plot_regimes(path: Path, down: dict[str, Any]) -> Path:
    """:func:`regimes_figure` saved as PNG."""
    return save_figure(regimes_figure(down), path)


def per_class_recall_ci(down: dict[str, Any], regime: str, n_classes: int) -> list[dict[str, Any]]:
    """Each class's recall under ``regime``: mean over the seeds' test cells and its 95% interval
    (``ci_low`` None with one seed, or where the summary kept no per-seed cells)."""
    from augment.metrics.verdict import mean_ci

    cells = sorted((c for c in down.get("cells") or [] if c["regime"] == regime), key=lambda c: c["seed"])
    if cells:
        return [mean_ci([c["per_class_recall"][k] for c in cells]) for k in range(n_classes)]
    means = list(down["regimes"][regime]["per_class_recall"].values())
    return [{"mean": m, "ci_low": None, "ci_high": None, "n": 1} for m in means]


def per_class_recall_figure(down: dict[str, Any], class_names: list[str]) -> Any:
    """Recall of every class under every regime: dots at the mean over seeds with 95% intervals.

    A class without test images has no recall (not 0): it gets no dot and says so on its tick.
    """
    plt = _plt()
    regimes = list(down["regimes"])
    k = len(class_names)
    any_cm = np.asarray(next(iter(down["regimes"].values()))["confusion"])
    has_test = any_cm.sum(axis=1) > 0
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * k + 2.5), 3.8), layout="constrained")
    x = np.arange(k)
    width = 0.8 / max(len(regimes), 1)
    for j, r in enumerate(regimes):
        cis = per_class_recall_ci(down, r, k)
        pos = x + (j - (len(regimes) - 1) / 2) * width
        keep = [c for c in range(k) if has_test[c]]
        means = np.array([cis[c]["mean"] for c in keep])
        if all(cis[c]["ci_low"] is not None for c in keep):
            lo = means - np.array([cis[c]["ci_low"] for c in keep])
            hi = np.array([cis[c]["ci_high"] for c in keep]) - means
            ax.errorbar(pos[keep], means, yerr=[lo, hi], fmt="o", ms=3.5, capsize=2, elinewidth=1, label=r)
        else:  # one seed: no interval to draw, a hollow dot says so
            ax.plot(pos[keep], means, "o", mfc="none", ms=4, label=f"{r} (no interval)")
    for c in range(1, k):
        ax.axvline(c - 0.5, color="0.9", linewidth=0.8, zorder=0)
    ticks = [n if has_test[c] else f"{n}\n(no test images)" for c, n in enumerate(class_names)]
    ax.set_xticks(x, ticks, fontsize=7, rotation=30 if k > 6 else 0, ha="right" if k > 6 else "center")
    ax.set_xlim(-0.5, k - 0.5)
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlabel("class")
    ax.set_ylabel(f"recall on the real test split (n={down.get('n_test')})")
    ax.set_title(f"Per-class recall by regime: mean over {_n_seeds(down)} seeds and 95% CI", fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="regime", title_fontsize=7)
    return fig


def plot_per_class_recall(path: Path, down: dict[str, Any], class_names: list[str]) -> Path:
    """:func:`per_class_recall_figure` saved as PNG."""
    return save_figure(per_class_recall_figure(down, class_names), path)


def confusion_figure(down: dict[str, Any], class_names: list[str]) -> Any:
    """Confusion matrices of the baseline and the verdict's regime: counts summed over seeds in the
    cells, colour by the share of the true class's test images (one shared colorbar)."""
    plt = _plt()
    shown = [r for r in (down.get("baseline"), (down.get("verdict") or {}).get("regime")) if r in down["regimes"]]
    shown = list(dict.fromkeys(shown)) or list(down["regimes"])[:1]
    k = len(class_names)
    side = max(3.2, 0.42 * k + 1.4)
    size = (side * len(shown) + 1.0, side)
    fig, axes = plt.subplots(1, len(shown), figsize=size, squeeze=False, layout="constrained")
    image = None
    for ax, r in zip(axes[0], shown, strict=True):
        counts = np.asarray(down["regimes"][r]["confusion"], dtype=np.int64)
        share = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), n in np.ndenumerate(counts):
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7 if k <= 10 else 5,
                    color="white" if share[i, j] > 0.6 else "black")  # fmt: skip
        ax.set_title(f"{r} ({_n_seeds(down)} seeds summed)", fontsize=8)
        ax.set_xticks(range(k), class_names, fontsize=7, rotation=90 if k > 4 else 0)
        ax.set_yticks(range(k), class_names, fontsize=7)
        ax.set_xlabel("predicted class", fontsize=8)
        ax.set_ylabel("true class", fontsize=8)
    bar = fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8)
    bar.set_label("share of the true class's test images", fontsize=8)
    fig.suptitle("Confusion on the real test split (cells: image counts)", fontsize=9)
    return fig


def plot_confusion(path: Path, down: dict[str, Any], class_names: list[str]) -> Path:
    """:func:`confusion_figure` saved as PNG."""
    return save_figure(confusion_figure(down, class_names), path)


# ------------------------------------------------------------------------------------------------
# Image pictures.


def samples_figure(
    real: torch.Tensor,
    real_labels: torch.Tensor,
    fake: torch.Tensor,
    fake_labels: torch.Tensor,
    class_names: list[str],
    per_class: int = 8,
) -> Any:
    """One row per class: real train images in the left panel, synthetic in the right (uint8
    inputs); the two panels are separate subfigures with their own titles and a gap between."""
    plt = _plt()
    k = len(class_names)
    fig = plt.figure(figsize=(2 * 0.6 * per_class + 1.6, 0.62 * k + 0.6))
    panels = fig.subfigures(1, 2, wspace=0.08, width_ratios=[per_class + 2.0, per_class])
    titles = ("real (train split)", "synthetic (generator)")
    for side, (panel, imgs, labels) in enumerate(zip(panels, (real, fake), (real_labels, fake_labels), strict=True)):
        axes = panel.subplots(k, per_class, squeeze=False, gridspec_kw={"wspace": 0.05, "hspace": 0.05})
        panel.suptitle(titles[side], fontsize=9, fontweight="bold")
        # Room on the left of the real panel for the class names; the same image size in both panels.
        left = 2.0 / (per_class + 2.0) if side == 0 else 0.0
        panel.subplots_adjust(left=left, right=1.0, top=1.0 - 0.45 / (0.62 * k + 0.6), bottom=0.01)
        for c in range(k):
            chosen = imgs[labels == c][:per_class]
            for j in range(per_class):
                ax = axes[c][j]
                ax.set_xticks([])
                ax.set_yticks([])
                for spine in ax.spines.values():
                    spine.set_visible(False)
                if j < len(chosen):
                    _image(ax, chosen[j])
            if side == 0:
                axes[c][0].set_ylabel(class_names[c], rotation=0, ha="right", va="center", fontsize=7)
    return fig


def plot_samples(
    path: Path,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    fake: torch.Tensor,
    fake_labels: torch.Tensor,
    class_names: list[str],
    per_class: int = 8,
) -> Path:
    """:func:`samples_figure` saved as PNG."""
    return save_figure(samples_figure(real, real_labels, fake, fake_labels, class_names, per_class), path)


def pairs_figure(synthetic: torch.Tensor, train: torch.Tensor, pairs: list[dict], title: str = "") -> Any:
    """Closest synthetic (top row) / GAN-training (bottom row) pairs with their distances.

    The layout engine keeps the row names, distances and the (wrapped) title inside the figure.
    """
    plt = _plt()
    n = max(len(pairs), 1)
    width = max(3.0, 1.0 * n + 0.8)
    fig, axes = plt.subplots(2, n, figsize=(width, 2.9), squeeze=False, layout="constrained")
    for j in range(n):
        for row in range(2):
            ax = axes[row][j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j >= len(pairs):
                continue
            _image(ax, (synthetic if row == 0 else train)[pairs[j]["synthetic" if row == 0 else "train"]])
            if row == 0:
                ax.set_title(f"{pairs[j]['distance']:.3f}", fontsize=7)
    axes[0][0].set_ylabel("synthetic", fontsize=7)
    axes[1][0].set_ylabel("nearest train", fontsize=7)
    if title:
        fig.suptitle(textwrap.fill(title, width=max(30, int(width * 13))), fontsize=8)
    return fig

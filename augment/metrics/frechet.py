"""Fréchet distances and KID, each named by the feature extractor that produced its features.

* ``fd_domain``: Fréchet distance in the features of the run's *domain extractor* (a small CNN
  trained on the run's real train+val split, see :mod:`augment.metrics.extractor`). It is not FID
  and is never called FID: its scale depends on that network.
* ``kid_domain``: kernel inception distance (Binkowski et al. 2018; cubic polynomial kernel,
  unbiased MMD^2 averaged over random subsets) in the same features. Unbiased, so it stays
  meaningful at the small sample sizes of a few hundred images per class.
* ``fid_inception``: FID proper, InceptionV3 pool3 features with the standard FID weights. Only
  from a local file (``evaluate.inception_weights`` or ``$AUGMENT_INCEPTION_WEIGHTS``); nothing
  is downloaded. torchmetrics builds that network through torch-fidelity, which must be installed.

The arithmetic is torchmetrics' (``FrechetInceptionDistance`` / ``KernelInceptionDistance``) fed
with features computed once (a pass-through "extractor"), so per-class values, overall values and
the real-vs-real floor share one feature pass.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> a, b = torch.randn(20000, 4, generator=g), torch.randn(20000, 4, generator=g) + 1.0
    >>> round(frechet_distance(a, b), 1)  # closed form for N(0, I) vs N(1, I) in 4-D: 4
    4.0
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import warnings
from pathlib import Path

import torch
from torch import nn

from augment.errors import ConfigError

log = logging.getLogger(__name__)

INCEPTION_ENV = "AUGMENT_INCEPTION_WEIGHTS"
#: The standard FID weights as torch-fidelity ships them (a port of the 2015-12-05 TF graph
#: that pytorch-fid and the original TTUR code use). torchmetrics loads this file.
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
_INCEPTION_KEYS = ("Conv2d_1a_3x3.conv.weight", "Mixed_7c.branch_pool.conv.weight", "fc.weight")

# KID draws its subsets from torch's global RNG: seed it inside a lock so parallel threads
# (Dask workers) cannot interleave draws and the value is a function of the inputs and seed.
_RNG_LOCK = threading.Lock()


class _Passthrough(nn.Module):
    """A torchmetrics "feature extractor" whose input already is the feature matrix."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


def _check(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"{what}: need two (N, D) feature matrices of equal D, got {tuple(a.shape)}, {tuple(b.shape)}")
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"{what}: need at least 2 samples on each side, got {len(a)} and {len(b)}")


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` and ``(M, D)``.

    ``||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2))``, computed in float64 by torchmetrics.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check(a, b, "frechet_distance")
    metric = FrechetInceptionDistance(feature=_Passthrough(a.shape[1]), normalize=True)
    metric.update(a.detach().double().cpu(), real=True)
    metric.update(b.detach().double().cpu(), real=False)
    # Sampling noise can leave a tiny negative value for identical distributions; that is the
    # estimator's value and is reported as such (no clamping).
    return float(metric.compute())


def kernel_distance(
    a: torch.Tensor, b: torch.Tensor, subset_size: int = 1000, subsets: int = 100, seed: int = 0
) -> tuple[float, float, int]:
    """KID between two feature sets: ``(mean, std over subsets, subset size used)``.

    The subset size is ``min(subset_size, len(a), len(b))`` (torchmetrics needs it <= both sizes).
    """
    from torchmetrics.image.kid import KernelInceptionDistance

    _check(a, b, "kernel_distance")
    size = min(subset_size, len(a), len(b))
    with warnings.catch_warnings():  # "will save all extracted features": that is the point here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(
            feature=_Passthrough(a.shape[1]), subsets=subsets, subset_size=size, normalize=True
        )
    metric.update(a.detach().double().cpu(), real=True)
    metric.update(b.detach().double().cpu(), real=False)
    with _RNG_LOCK, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std), size


def _pair(
    name: str,
    fake: torch.Tensor,
    real: torch.Tensor,
    ref: torch.Tensor,
    kid_subsets: int,
    warnings: list[str],
    where: str,
) -> dict:
    """One figure and its floor: fake-vs-ref and real-vs-ref, ``fake`` and ``real`` of equal size."""
    dims = ref.shape[1]
    out: dict = {"n_synthetic": len(fake), "n_real": len(real), "n_reference": len(ref), "feature_dims": dims}
    if min(len(fake), len(real), len(ref)) < 2:
        warnings.append(f"{where}: fewer than 2 images on a side, no distance computed")
        return out
    if min(len(fake), len(ref)) < dims:
        warnings.append(
            f"{where}: {min(len(fake), len(ref))} images for {dims} feature dimensions: the covariance is "
            f"rank-deficient and {name} is dominated by sampling noise; read it against its floor"
        )
    out[name] = frechet_distance(ref, fake)
    out[f"{name}_floor"] = frechet_distance(ref, real)
    kid, kid_std, size = kernel_distance(ref, fake, subsets=kid_subsets)
    floor, floor_std, _ = kernel_distance(ref, real, subsets=kid_subsets)
    kid_name = name.replace("fd_", "kid_").replace("fid_", "kid_")
    out.update(
        {
            kid_name: kid,
            f"{kid_name}_std": kid_std,
            f"{kid_name}_floor": floor,
            f"{kid_name}_floor_std": floor_std,
            "kid_subset_size": size,
        }
    )
    return out


def distance_report(
    name: str,
    fake: torch.Tensor,
    fake_labels: torch.Tensor,
    real: torch.Tensor,
    real_labels: torch.Tensor,
    ref: torch.Tensor,
    ref_labels: torch.Tensor,
    class_names: list[str],
    kid_subsets: int = 100,
) -> dict:
    """Overall and per-class Fréchet distance and KID of ``fake`` against ``ref``, beside the floor.

    The floor is the same distance from ``real`` (real images, as many per class as ``fake`` has)
    to ``ref``: what a perfect generator would score at these sample sizes.

    Args:
        name: ``fd_domain`` or ``fid_inception`` (KID is named after it: ``kid_domain``...).
        fake, real, ref: feature matrices; ``fake`` and ``real`` have equal per-class counts.

    Returns:
        ``{name, name_floor, kid_*, n_*, per_class: {class: {...}}, warnings: [...]}``.
    """
    if (
        torch.bincount(fake_labels, minlength=len(class_names)).tolist()
        != torch.bincount(real_labels, minlength=len(class_names)).tolist()
    ):
        raise ValueError("distance_report: fake and real must have the same per-class counts (equal sample sizes)")
    warnings: list[str] = []
    out = _pair(name, fake, real, ref, kid_subsets, warnings, where=f"{name} overall")
    out["per_class"] = {}
    for c, cname in enumerate(class_names):
        f, r, e = fake[fake_labels == c], real[real_labels == c], ref[ref_labels == c]
        out["per_class"][cname] = _pair(name, f, r, e, kid_subsets, warnings, where=f"{name} class {cname!r}")
    out["warnings"] = warnings
    for w in warnings[:3]:
        log.warning(w)
    if len(warnings) > 3:
        log.warning("... and %d more sample-size warnings (see metrics.json)", len(warnings) - 3)
    return out


# ------------------------------------------------------------------------------------------------
# fid_inception: the standard FID network, from a local file only.


def inception_weights_path(configured: str | Path | None) -> Path:
    """The local InceptionV3 FID weights: the config field, else ``$AUGMENT_INCEPTION_WEIGHTS``.

    Raises:
        ConfigError: naming the file to provide when neither is set or the file is missing.
    """
    raw = configured if configured is not None else os.environ.get(INCEPTION_ENV)
    if not raw:
        raise ConfigError(
            f"fid_inception needs the standard InceptionV3 FID weights as a local file ({INCEPTION_FILE}, "
            f"torch-fidelity's release asset): set evaluate.inception_weights or ${INCEPTION_ENV} to its path "
            "(nothing is downloaded), or use evaluate.extractor=domain"
        )
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"evaluate.inception_weights: {path} not found (expected the InceptionV3 FID weights {INCEPTION_FILE})"
        )
    return path


def inception_requested(extractor: str, configured: str | Path | None) -> bool:
    """Whether a run asks for ``fid_inception``: ``evaluate.extractor=inception``, a configured
    ``evaluate.inception_weights`` or ``$AUGMENT_INCEPTION_WEIGHTS`` in the environment (each alone is enough)."""
    return extractor == "inception" or configured is not None or bool(os.environ.get(INCEPTION_ENV))


def check_inception_weights(path: Path) -> dict[str, torch.Tensor]:
    """Load the FID Inception state dict with ``weights_only=True`` and refuse any other file.

    Checks the keys and the 1008-way head of the TF graph.

    Returns:
        The state dict (plain tensors).
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the user's bad input
        msg = (str(err).strip().splitlines() or [type(err).__name__])[0][:120]
        raise ConfigError(f"{path}: not a loadable weights file ({msg})") from None
    missing = [k for k in _INCEPTION_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise ConfigError(f"{path}: not the InceptionV3 FID weights ({INCEPTION_FILE}): no tensor {missing[0]!r}")
    if tuple(state["fc.weight"].shape) != (1008, 2048):
        raise ConfigError(
            f"{path}: fc.weight has shape {tuple(state['fc.weight'].shape)}, the FID network's is (1008, 2048) "
            "(torchvision's ImageNet Inception is not the FID network)"
        )
    return state


class InceptionFeatures:
    """2048-d pool3 features of the FID InceptionV3 (torchmetrics + torch-fidelity, local weights).

    torch-fidelity unpickles its weights file (``torch.load`` with weights-only loading off). The user's file is
    therefore never handed to it: it is read here with ``weights_only=True``, checked, and written
    again (plain tensors only) to a private temporary file that torch-fidelity loads.
    """

    def __init__(self, weights: str | Path | None) -> None:
        path = inception_weights_path(weights)
        state = check_inception_weights(path)
        try:
            import torch_fidelity  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"fid_inception with {path} needs the torch-fidelity package (torchmetrics builds the FID "
                "InceptionV3 with it): pip install 'gan-augment[fid]', or use evaluate.extractor=domain"
            ) from None
        from torchmetrics.image.fid import NoTrainInceptionV3

        self.path = path
        with tempfile.TemporaryDirectory(prefix="augment-inception-") as tmp:
            clean = Path(tmp) / INCEPTION_FILE
            torch.save({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, clean)
            try:
                self.net = NoTrainInceptionV3(
                    name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=str(clean)
                )
            except RuntimeError as err:  # load_state_dict: missing/unexpected keys or shapes
                # The first line is a header ("Error(s) in loading state_dict for ..."); the next names the keys.
                lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
                msg = (lines[1:2] or lines[:1] or ["bad state dict"])[0][:160]
                raise ConfigError(f"{path}: not the InceptionV3 FID weights ({msg})") from None
        self.num_features = 2048

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
        """uint8 ``(N, C, H, W)`` -> ``(N, 2048)``; grey images are repeated to 3 channels."""
        out = []
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            if x.shape[1] == 1:
                x = x.repeat(1, 3, 1, 1)
            out.append(self.net(x).double())
        return torch.cat(out) if out else torch.empty(0, 2048, dtype=torch.float64)

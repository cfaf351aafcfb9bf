"""The core: :class:`GanAugmenter`, a trained generator with a pool of deterministic synthetic images.

Loading (a snapshot, a run directory, a registered MLflow model), the pool, label -> class mapping,
and the joint ``(img, target)`` transform. Image formats live in :mod:`augment.augmenter.formats`,
the torchvision v2 / albumentations adapters in :mod:`augment.augmenter.adapters`.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import get_worker_info

from augment.augmenter.adapters import GanAlbumentations, GanTransform
from augment.augmenter.formats import PIL_MODES, ImageFormat, OutputKind, Target, image_format, output_format, render
from augment.checkpoint import Snapshot, find_snapshot, load_snapshot
from augment.generate import latents, sample_seed, to_uint8

log = logging.getLogger(__name__)


class GanAugmenter:
    """A trained class-conditional generator that replaces images by synthetic ones of the same class.

    An instance is a dataset-level transform ``(img, target) -> (img, target)``: with probability
    ``p`` the image becomes a synthetic image of class ``target``, in the input's type, dtype, value
    range, size and channels (PIL ``L``/``RGB``; uint8 or float-in-[0, 1] ``(C, H, W)`` tensors;
    uint8 or float ``(H, W[, C])`` numpy arrays). The target passes through unchanged. It fits the
    ``transforms=`` argument of a ``VisionDataset`` (torchvision's classification datasets take only
    ``transform=``: wrap those in :class:`AugmentedDataset`); :meth:`v2` and :meth:`albumentations`
    give the same replacement as a torchvision v2 and an albumentations transform.

    Args:
        snapshot: the inference snapshot (EMA generator weights, architecture, class names).
        p: probability of replacing an image.
        seed: seed of the synthetic images (image ``i`` of class ``c`` depends on seed, epoch, c, i).
        pool_size: synthetic images per class the random transform draws from (generated on demand,
            reused afterwards; :meth:`prefill` generates them up front).
        batch_size: images per generator forward pass; also the chunk that fixes each image's batch.
        classes: the dataset's class names in label order, when its labels are not the generator's
            class indices (e.g. ``dataset.classes``); every name must be one of the generator's.
        device: where the generator runs (CPU by default).
        dtype: the generator's floating dtype (float32 by default; bfloat16 is faster on most CPUs).
        epoch: which set of synthetic images to use (see :meth:`set_epoch`).
        cache_mb: the pool's memory limit; least recently used chunks are dropped beyond it.

    Example:
        >>> aug = GanAugmenter.from_checkpoint("runs/fashion/", p=0.5)  # doctest: +SKIP
        >>> ds = AugmentedDataset(torchvision.datasets.FashionMNIST("data"), aug)  # doctest: +SKIP
    """

    def __init__(
        self,
        snapshot: Snapshot,
        *,
        p: float = 0.5,
        seed: int = 0,
        pool_size: int = 256,
        batch_size: int = 64,
        classes: Sequence[str] | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        epoch: int = 0,
        cache_mb: float = 1024.0,
    ) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        for name, value in (("pool_size", pool_size), ("batch_size", batch_size)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        if cache_mb <= 0:
            raise ValueError(f"cache_mb must be positive, got {cache_mb!r}")
        kw = snapshot.generator_kwargs
        self.snapshot = snapshot
        self.class_names: list[str] = list(snapshot.class_names)
        self.num_classes = int(kw["num_classes"])
        self.image_size = int(kw["image_size"])
        self.channels = int(kw["channels"])
        if self.channels not in PIL_MODES:
            raise ValueError(f"{snapshot.path}: generator makes {self.channels}-channel images (1 or 3 supported)")
        if len(self.class_names) != self.num_classes:
            raise ValueError(
                f"{snapshot.path}: {len(self.class_names)} class names for a {self.num_classes}-class generator"
            )
        self.p = float(p)
        self.seed = int(seed)
        self.pool_size = pool_size
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.dtype = dtype
        self.epoch = int(epoch)
        self.cache_bytes = int(cache_mb * 2**20)
        self.classes: list[str] | None = None
        self._to_class: list[int] | None = None
        if classes is not None:
            self.classes = list(classes)
            missing = [n for n in self.classes if n not in self.class_names]
            if missing:
                raise ValueError(
                    f"dataset class {missing[0]!r} is not a class of the generator "
                    f"(dataset classes {self.classes}, generator classes {self.class_names})"
                )
            self._to_class = [self.class_names.index(n) for n in self.classes]
        self._G: torch.nn.Module | None = None
        self._pool: OrderedDict[tuple[int, int, int], np.ndarray] = OrderedDict()
        self._pool_bytes = 0
        self._warned_worker = False

    # --- loading ----------------------------------------------------------------------------------

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot, **kwargs: Any) -> GanAugmenter:
        """An augmenter over an already loaded :class:`~augment.checkpoint.Snapshot`."""
        return cls(snapshot, **kwargs)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        **kwargs: Any,
    ) -> GanAugmenter:
        """Load a snapshot file (``network-*.pt``) or the snapshot a run directory hands on.

        Loading uses ``torch.load(weights_only=True)``; the EMA generator is built lazily, on the
        first image needed (in a DataLoader worker: in that worker).
        """
        path = Path(path)
        file = find_snapshot(path) if path.is_dir() else path
        snapshot = load_snapshot(file)
        log.info(
            "augmenter: %s (%d classes, %dx%d)",
            file,
            len(snapshot.class_names),
            snapshot.generator_kwargs["image_size"],
            snapshot.generator_kwargs["image_size"],
        )
        return cls(snapshot, device=device, dtype=dtype, **kwargs)

    @classmethod
    def from_mlflow(
        cls,
        model_uri: str,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        tracking_uri: str | None = None,
        **kwargs: Any,
    ) -> GanAugmenter:
        """Load the snapshot of a registered model, e.g. ``"models:/fashion_mnist-cgan@champion"``.

        ``tracking_uri`` defaults to ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlruns.db``.
        """
        from augment.tracking import download_snapshot  # only augment.tracking imports mlflow

        # The snapshot is read into memory: the downloaded copy is not kept on disk.
        with tempfile.TemporaryDirectory(prefix="augment-generator-") as tmp:
            path = download_snapshot(model_uri, tracking_uri=tracking_uri, dst=Path(tmp))
            return cls.from_checkpoint(path, device=device, dtype=dtype, **kwargs)

    # --- the generator and its pool ----------------------------------------------------------------

    @property
    def num_labels(self) -> int:
        """How many labels the augmenter accepts (``len(classes)`` when given, else the class count)."""
        return len(self._to_class) if self._to_class is not None else self.num_classes

    def generator(self) -> torch.nn.Module:
        """The EMA generator in eval mode, built on first use (each worker process builds its own)."""
        if self._G is None:
            # Building the module runs its random weight init; keep that off the global RNG, or the
            # transform's draws would depend on when (and in which worker) the pool was first filled.
            with torch.random.fork_rng(devices=[]):
                self._G = self.snapshot.generator(self.device).to(self.dtype)
        return self._G

    def set_epoch(self, epoch: int) -> None:
        """Switch to another set of synthetic images (epoch 0 is the default set).

        Each epoch's images are as deterministic as epoch 0's; the pool keeps recently used epochs
        up to ``cache_mb``.
        """
        self.epoch = int(epoch)

    def _seed_for(self, epoch: int) -> int:
        # Epoch 0 is the plain seed (the images `augment generate --seed` writes); other epochs get a
        # hashed seed from a stream no class uses (label -1).
        return self.seed if epoch == 0 else sample_seed(self.seed, -1, epoch)

    def _chunk(self, seed: int, cls: int, chunk: int) -> np.ndarray:
        """Images ``chunk*B ... chunk*B+B-1`` of class ``cls`` as uint8 ``(B, H, W, C)``."""
        key = (seed, cls, chunk)
        arr = self._pool.get(key)
        if arr is not None:
            self._pool.move_to_end(key)
            return arr
        worker = get_worker_info()
        if worker is not None and not self._warned_worker:
            self._warned_worker = True
            log.warning(
                "augmenter: generating synthetic images inside DataLoader worker %d; each worker repeats "
                "this every epoch unless the pool is filled first (call .prefill() before iterating)",
                worker.id,
            )
        G = self.generator()
        B = self.batch_size
        labels = torch.full((B,), cls, dtype=torch.int64)
        z = latents(seed, labels, torch.arange(chunk * B, chunk * B + B), G.z_dim)
        with torch.inference_mode():
            x = G(z.to(self.device, self.dtype), labels.to(self.device)).float().cpu()
        arr = to_uint8(x)
        arr.flags.writeable = False  # images leave the pool only as copies (see render)
        self._pool[key] = arr
        self._pool_bytes += arr.nbytes
        while self._pool_bytes > self.cache_bytes and len(self._pool) > 1:
            _, old = self._pool.popitem(last=False)
            self._pool_bytes -= old.nbytes
        return arr

    def _hwc(self, cls: int, index: int, epoch: int) -> np.ndarray:
        """Synthetic image ``index`` of generator class ``cls`` as a read-only uint8 ``(H, W, C)`` view."""
        chunk, offset = divmod(index, self.batch_size)
        return self._chunk(self._seed_for(epoch), cls, chunk)[offset]

    def prefill(self, counts: int | Sequence[int] | None = None, epoch: int | None = None) -> None:
        """Generate images ``0 .. counts[label]-1`` of every label (default: the transform's pool).

        ``counts`` is one count for every label or one per label. Call it in the main process
        before iterating a DataLoader: the workers then inherit the pool instead of each
        generating it again every epoch.
        """
        epoch = self.epoch if epoch is None else epoch
        counts = self.pool_size if counts is None else counts
        counts = [counts] * self.num_labels if isinstance(counts, int) else list(counts)
        if len(counts) != self.num_labels:
            raise ValueError(f"{len(counts)} counts for {self.num_labels} labels")
        seed = self._seed_for(epoch)
        todo = [(self.class_of(t), k) for t, n in enumerate(counts) for k in range(math.ceil(n / self.batch_size))]
        todo = [(c, k) for c, k in dict.fromkeys(todo) if (seed, c, k) not in self._pool]
        need = len(todo) * self.batch_size * self.image_size**2 * self.channels
        if need + self._pool_bytes > self.cache_bytes:
            log.warning(
                "augmenter: prefill needs %.0f MB, more than cache_mb allows; older chunks will be dropped",
                need / 2**20,
            )
        start = time.perf_counter()
        for c, k in todo:
            self._chunk(seed, c, k)
        if todo:
            n = len(todo) * self.batch_size
            dt = time.perf_counter() - start
            log.info("augmenter: generated %d synthetic images in %.1f s (%.0f images/s)", n, dt, n / dt)

    # --- labels and image formats ------------------------------------------------------------------

    def class_of(self, target: Target) -> int:
        """The generator class of a dataset label (an int or a 0-dim integer tensor)."""
        if isinstance(target, torch.Tensor):
            if target.ndim != 0 or target.dtype.is_floating_point or target.dtype == torch.bool:
                raise ValueError(
                    f"target must be an integer class index, got a tensor of shape {tuple(target.shape)} "
                    f"and dtype {target.dtype}"
                )
            label = int(target.item())
        elif isinstance(target, int | np.integer) and not isinstance(target, bool | np.bool_):
            label = int(target)
        else:
            raise ValueError(f"target must be an integer class index, got {type(target).__name__} {target!r}")
        if not 0 <= label < self.num_labels:
            if self.classes is not None:
                raise ValueError(f"label {label} is not one of the dataset's {self.num_labels} classes {self.classes}")
            raise ValueError(
                f"label {label} is not a class of the generator ({self.num_classes} classes: {self.class_names})"
            )
        return self._to_class[label] if self._to_class is not None else label

    def format_of(self, img: Any) -> ImageFormat:
        """Check that ``img`` matches the generator and return its format; ValueError names both sides."""
        return image_format(img, self.image_size, self.channels)

    render = staticmethod(render)

    # --- params, then apply (torchvision v2 / kornia style) ----------------------------------------

    def make_params(self, target: Target, p: float | None = None) -> dict[str, Any]:
        """Draw whether to replace, and which pool image of the target's class, from torch's RNG."""
        cls = self.class_of(target)
        p = self.p if p is None else p
        u, v = torch.rand(2).tolist()  # one RNG call for both draws: this runs once per image
        replace = p >= 1.0 or u < p
        index = min(int(v * self.pool_size), self.pool_size - 1) if replace else -1
        return {"replace": replace, "class": cls, "index": index, "epoch": self.epoch}

    def apply(self, img: Any, params: dict[str, Any], fmt: ImageFormat | None = None) -> Any:
        """Apply drawn params: the pool image ``params['index']`` of ``params['class']``, or ``img``."""
        if not params["replace"]:
            return img
        fmt = self.format_of(img) if fmt is None else fmt
        return self.render(self._hwc(params["class"], params["index"], params["epoch"]), fmt)

    def __call__(self, img: Any, target: Target) -> tuple[Any, Target]:
        fmt = self.format_of(img)  # checked on every call, so a mismatch fails at once, not at random
        return self.apply(img, self.make_params(target), fmt), target

    # --- direct access -----------------------------------------------------------------------------

    def image(
        self, target: Target, index: int, output: OutputKind | ImageFormat = "uint8", epoch: int | None = None
    ) -> Any:
        """Synthetic image ``index`` of the target's class (deterministic), in the given format."""
        fmt = output if isinstance(output, ImageFormat) else output_format(output)
        return self.render(self._hwc(self.class_of(target), int(index), self.epoch if epoch is None else epoch), fmt)

    def images(
        self, targets: Sequence[int] | torch.Tensor, indices: Sequence[int] | torch.Tensor, epoch: int | None = None
    ) -> torch.Tensor:
        """Synthetic images as uint8 ``(N, C, H, W)``; row n is image ``indices[n]`` of ``targets[n]``."""
        targets, indices = torch.as_tensor(targets).tolist(), torch.as_tensor(indices).tolist()
        if len(targets) != len(indices):
            raise ValueError(f"{len(targets)} targets but {len(indices)} indices")
        epoch = self.epoch if epoch is None else epoch
        out = np.empty((len(targets), self.image_size, self.image_size, self.channels), dtype=np.uint8)
        for n, (t, i) in enumerate(zip(targets, indices, strict=True)):
            out[n] = self._hwc(self.class_of(t), i, epoch)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

    # --- the other frameworks ----------------------------------------------------------------------

    def v2(self, p: float | None = None) -> GanTransform:
        """This augmenter as a torchvision v2 transform (see :class:`GanTransform`)."""
        return GanTransform(self, p=p)

    def albumentations(self, p: float | None = None) -> GanAlbumentations:
        """This augmenter as an albumentations transform (see :class:`GanAlbumentations`)."""
        return GanAlbumentations(self, p=self.p if p is None else p)

    # --- pickling: the weights travel as tensors, the module is rebuilt lazily ---------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_G"] = None
        state["_warned_worker"] = False
        return state

    def __repr__(self) -> str:
        src = self.snapshot.path or "<snapshot>"
        return (
            f"GanAugmenter({src}, classes={self.num_classes}, size={self.image_size}, channels={self.channels}, "
            f"p={self.p}, seed={self.seed}, pool_size={self.pool_size}, epoch={self.epoch})"
        )

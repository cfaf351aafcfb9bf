"""The trained generator as a drop-in augmentation: a dataset transform, a torchvision v2 transform,
an albumentations transform, and two datasets (class-balanced top-up, purely synthetic).

Every synthetic image is ``G(z(seed', c, i), c)`` for a class ``c`` and an index ``i``, where the
latent comes from :func:`augment.generate.latents` and ``seed' = seed`` at epoch 0 (so epoch 0 shows
the same images ``augment generate --seed`` writes). Images are produced in fixed batches of
``batch_size`` indices (chunk ``k`` holds indices ``k*batch_size ... (k+1)*batch_size-1``) and kept
in a pool, so an image is determined by ``(seed, epoch, class, index)`` alone: never by which
worker asked first, by the order of requests or by when the pool was filled.

The random transform draws (replace?, index) from torch's RNG (albumentations: from its own RNG) and
takes index ``i`` uniformly from ``[0, pool_size)``: a fixed pool of ``pool_size`` images per class,
filled on demand and reused from then on. Reuse is what makes the transform cheap: one generator
forward pass costs more per image than a small classifier's whole training step, serving a pool
image 30-50x less (see ``benchmarks/RESULTS.md``).

Example:
    >>> import torch
    >>> from augment.checkpoint import Snapshot
    >>> from augment.models import ConditionalGenerator
    >>> G = ConditionalGenerator(num_classes=2, image_size=8, channels=1, z_dim=4, width=4)
    >>> snap = Snapshot(G.state_dict(), dict(num_classes=2, image_size=8, channels=1, z_dim=4, width=4),
    ...                 ["cat", "dog"], [10, 3], {}, 0.0, "doc")
    >>> aug = GanAugmenter.from_snapshot(snap, p=1.0, pool_size=8, batch_size=8)
    >>> img, target = aug(torch.zeros(1, 8, 8, dtype=torch.uint8), 1)
    >>> img.dtype, tuple(img.shape), target
    (torch.uint8, (1, 8, 8), 1)
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import albumentations as A
import numpy as np
import PIL.Image
import torch
from torch.utils.data import Dataset, get_worker_info
from torchvision import tv_tensors
from torchvision.transforms import v2

from augment.checkpoint import Snapshot, find_snapshot, load_snapshot
from augment.generate import latents, sample_seed, to_uint8

log = logging.getLogger(__name__)

Target = int | np.integer | torch.Tensor
OutputKind = Literal["uint8", "float", "pil", "numpy"]
_PIL_MODES = {1: "L", 3: "RGB"}
_NUMPY_FLOATS = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64}


@dataclass(frozen=True)
class ImageFormat:
    """How an image is represented, so a synthetic image can be handed back in the same form.

    ``kind`` is ``pil``, ``tensor`` (``(C, H, W)``) or ``numpy`` (``(H, W, C)``, or ``(H, W)`` when
    ``squeeze``); ``dtype`` is uint8 (0..255) or a float dtype (values in [0, 1]).
    """

    kind: Literal["pil", "tensor", "numpy"]
    dtype: Any = None
    squeeze: bool = False
    device: torch.device | None = None
    wrap: type | None = None  # a tv_tensors class (e.g. tv_tensors.Image) to re-wrap tensors in


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
        if self.channels not in _PIL_MODES:
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

        path = download_snapshot(model_uri, tracking_uri=tracking_uri)
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

    def _shape_error(self, what: str) -> ValueError:
        return ValueError(
            f"{what}, but the generator makes {self.image_size}x{self.image_size} images with {self.channels} "
            f"channel(s) (PIL mode {_PIL_MODES[self.channels]}); resize or convert before the augmenter"
        )

    def format_of(self, img: Any) -> ImageFormat:
        """Check that ``img`` matches the generator and return its format; ValueError names both sides."""
        S, C = self.image_size, self.channels
        if isinstance(img, PIL.Image.Image):
            if img.mode != _PIL_MODES[C]:
                raise self._shape_error(f"PIL image has mode {img.mode}")
            if img.size != (S, S):
                raise self._shape_error(f"PIL image is {img.size[0]}x{img.size[1]}")
            return ImageFormat("pil")
        if isinstance(img, torch.Tensor):
            if img.ndim != 3:
                raise self._shape_error(f"tensor image has shape {tuple(img.shape)} (expected (C, H, W))")
            if tuple(img.shape) != (C, S, S):
                raise self._shape_error(f"tensor image has shape {tuple(img.shape)} (C, H, W)")
            self._check_dtype(img.dtype, img, "tensor")
            wrap = type(img) if isinstance(img, tv_tensors.TVTensor) else None
            return ImageFormat("tensor", img.dtype, device=img.device, wrap=wrap)
        if isinstance(img, np.ndarray):
            squeeze = img.ndim == 2
            if not (squeeze and C == 1) and img.ndim != 3:
                raise self._shape_error(f"numpy image has shape {img.shape} (expected (H, W, C))")
            shape = img.shape + (1,) if squeeze else img.shape
            if shape != (S, S, C):
                raise self._shape_error(f"numpy image has shape {img.shape} (H, W, C)")
            self._check_dtype(img.dtype, img, "numpy")
            return ImageFormat("numpy", img.dtype, squeeze=squeeze)
        raise TypeError(
            f"GanAugmenter takes PIL images, (C, H, W) tensors or (H, W, C) numpy arrays, got {type(img).__name__}"
        )

    @staticmethod
    def _check_dtype(dtype: Any, img: Any, kind: str) -> None:
        if isinstance(dtype, torch.dtype):
            if dtype == torch.uint8:
                return
            floating = dtype.is_floating_point
        else:
            if dtype == np.uint8:
                return
            floating = np.issubdtype(dtype, np.floating)
        if not floating:
            raise ValueError(f"{kind} image has dtype {dtype}; the augmenter takes uint8 or float in [0, 1]")
        lo, hi = (float(v) for v in (torch.aminmax(img) if isinstance(img, torch.Tensor) else (img.min(), img.max())))
        if lo < 0.0 or hi > 1.0:
            raise ValueError(
                f"float {kind} image has values in [{lo:.3g}, {hi:.3g}] but the augmenter returns float images "
                "in [0, 1]: put the augmenter before Normalize"
            )

    @staticmethod
    def render(hwc: np.ndarray, fmt: ImageFormat) -> Any:
        """A uint8 ``(H, W, C)`` image in the given format (always a fresh copy, never a pool view)."""
        if fmt.kind == "pil":
            return PIL.Image.fromarray((hwc[:, :, 0] if hwc.shape[2] == 1 else hwc).copy())
        if fmt.kind == "numpy":
            out = hwc[:, :, 0] if fmt.squeeze else hwc
            return out.copy() if fmt.dtype == np.uint8 else out.astype(fmt.dtype) / fmt.dtype.type(255)
        chw = hwc.transpose(2, 0, 1)
        if fmt.dtype == torch.uint8:
            # np.array copies: for one channel the transposed view is already contiguous, and
            # ascontiguousarray would hand out the pool's own memory
            t = torch.from_numpy(np.array(chw, order="C"))
        elif fmt.dtype in _NUMPY_FLOATS:  # numpy's small-array ops cost a fraction of torch's dispatch
            np_dtype = _NUMPY_FLOATS[fmt.dtype]
            t = torch.from_numpy(np.ascontiguousarray(chw, dtype=np_dtype) / np_dtype(255))
        else:
            t = torch.from_numpy(np.array(chw, order="C")).to(fmt.dtype).div_(255)
        if fmt.device is not None and fmt.device.type != "cpu":
            t = t.to(fmt.device)
        return fmt.wrap(t) if fmt.wrap is not None else t

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


def output_format(kind: OutputKind) -> ImageFormat:
    """The :class:`ImageFormat` named by ``uint8`` / ``float`` ((C, H, W) tensors), ``pil`` or ``numpy``."""
    formats = {
        "uint8": ImageFormat("tensor", torch.uint8),
        "float": ImageFormat("tensor", torch.float32),
        "pil": ImageFormat("pil"),
        "numpy": ImageFormat("numpy", np.dtype(np.uint8)),
    }
    if kind not in formats:
        raise ValueError(f"output must be one of {sorted(formats)}, got {kind!r}")
    return formats[kind]


# --- torchvision v2 -------------------------------------------------------------------------------


def _is_label(x: Any) -> bool:
    if type(x) is int:  # the common case first: this runs for every input of every sample
        return True
    if isinstance(x, torch.Tensor):
        return x.ndim == 0 and not x.dtype.is_floating_point and x.dtype != torch.bool
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_image(x: Any) -> bool:
    return isinstance(x, PIL.Image.Image) or (isinstance(x, torch.Tensor) and x.ndim >= 2)


class GanTransform(v2.Transform):
    """Replace the image of an ``(image, label)`` sample by a synthetic image of the label's class.

    A torchvision v2 transform: :meth:`make_params` draws (replace?, class, pool index) from
    torch's RNG, :meth:`transform` applies them; the label passes through unchanged. It needs the
    label in the sample (``t(img, label)``, or inside ``v2.Compose`` given both); v2 passes plain
    ints and 0-dim tensors through before the hooks see them, so this transform picks the label up
    itself (its transformed types include labels).

    Example:
        >>> t = v2.Compose([GanTransform(aug, p=0.5), v2.ToImage(), v2.ToDtype(torch.float32, scale=True)])
        ... # doctest: +SKIP
        >>> img, label = t(pil_image, 3)  # doctest: +SKIP
    """

    _transformed_types = (PIL.Image.Image, torch.Tensor, _is_label)

    def __init__(self, augmenter: GanAugmenter, p: float | None = None) -> None:
        super().__init__()
        p = augmenter.p if p is None else p
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
        self.augmenter = augmenter
        self.p = float(p)

    def _needs_transform_list(self, flat_inputs: list[Any]) -> list[bool]:
        needs = super()._needs_transform_list(flat_inputs)
        # v2 hands only the first plain tensor to the hooks, so a 0-dim tensor label would be skipped.
        return [n or _is_label(x) for n, x in zip(needs, flat_inputs, strict=True)]

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        images, labels = [], []
        for x in flat_inputs:
            if _is_label(x):
                labels.append(x)
            elif _is_image(x):
                images.append(x)
        if len(images) != 1 or len(labels) != 1:
            raise ValueError(
                f"{type(self).__name__} needs exactly one image and one integer label per sample "
                f"(call it as t(img, label)), got {len(images)} image(s) and {len(labels)} label(s)"
            )
        fmt = self.augmenter.format_of(images[0])
        return {**self.augmenter.make_params(labels[0], self.p), "format": fmt}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if _is_label(inpt):
            return inpt
        return self.augmenter.apply(inpt, params, params["format"])


# --- albumentations -------------------------------------------------------------------------------


class GanAlbumentations(A.ImageOnlyTransform):
    """An albumentations transform that replaces ``image`` by a synthetic image of class ``label``.

    Albumentations decides with probability ``p`` whether to apply it and draws the pool index from
    its own RNG (seeded by ``A.Compose(seed=...)``); the class comes from the ``label`` passed with
    the image. Takes uint8 or float-in-[0, 1] ``(H, W, C)`` / ``(H, W)`` arrays.

    Example:
        >>> pipeline = A.Compose([GanAlbumentations(aug, p=0.5), A.HorizontalFlip()])  # doctest: +SKIP
        >>> out = pipeline(image=hwc_uint8, label=3)["image"]                          # doctest: +SKIP
    """

    def __init__(self, augmenter: GanAugmenter, p: float = 0.5) -> None:
        super().__init__(p=p)
        self.augmenter = augmenter

    @property
    def targets_as_params(self) -> list[str]:
        return ["label"]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        aug = self.augmenter
        fmt = aug.format_of(data["image"])
        return {
            "gan_class": aug.class_of(data["label"]),
            "gan_index": int(self.random_generator.integers(aug.pool_size)),
            "gan_epoch": aug.epoch,
            "gan_format": fmt,
        }

    def apply(
        self, img: np.ndarray, gan_class: int, gan_index: int, gan_epoch: int, gan_format: ImageFormat, **params: Any
    ) -> np.ndarray:
        return self.augmenter.render(self.augmenter._hwc(gan_class, gan_index, gan_epoch), gan_format)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("augmenter",)


# --- datasets -------------------------------------------------------------------------------------


class AugmentedDataset(Dataset):
    """``dataset`` with every ``(img, target)`` item passed through ``transforms(img, target)``.

    torchvision's classification datasets (MNIST, FashionMNIST, CIFAR, ImageFolder, ...) take only
    ``transform`` (image alone) and ``target_transform``, not the joint ``transforms=`` that a
    class-conditional replacement needs. Wrap them instead; any ``(img, target)`` callable works
    (a :class:`GanAugmenter`, a ``v2.Compose`` holding a :class:`GanTransform`).

    Example:
        >>> ds = AugmentedDataset(FashionMNIST("data", transform=None), aug)  # doctest: +SKIP
    """

    def __init__(self, dataset: Any, transforms: Any) -> None:
        if not callable(transforms):
            raise ValueError(f"transforms must be a callable (img, target) -> (img, target), got {transforms!r}")
        self.dataset = dataset
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        img, target = self.dataset[index][:2]
        return self.transforms(img, target)


def _dataset_labels(dataset: Any) -> list[int]:
    targets = getattr(dataset, "targets", None)
    if targets is not None and len(targets) == len(dataset):
        return [int(t) for t in (targets.tolist() if isinstance(targets, torch.Tensor) else targets)]
    log.info(
        "BalancedDataset: %s has no .targets; reading %d items once for their labels",
        type(dataset).__name__,
        len(dataset),
    )
    return [int(dataset[i][1]) for i in range(len(dataset))]


class SyntheticDataset(Dataset):
    """``per_class`` synthetic images of every label, class-major: item ``i`` is a fixed image.

    Item ``k * per_class + i`` (for an int ``per_class``) is synthetic image ``i`` of label ``k``:
    the same image every epoch and in every DataLoader worker; :meth:`set_epoch` switches to a
    fresh set on purpose. ``output`` picks the image type (``uint8`` / ``float`` ``(C, H, W)``
    tensors, ``pil``, ``numpy`` ``(H, W, C)``).

    Example:
        >>> ds = SyntheticDataset(aug, per_class=100, output="float")  # doctest: +SKIP
        >>> img, label = ds[0]                                          # doctest: +SKIP
    """

    def __init__(
        self,
        augmenter: GanAugmenter,
        per_class: int | Sequence[int],
        *,
        output: OutputKind = "uint8",
        transform: Any = None,
        epoch: int = 0,
        prefill: bool = True,
    ) -> None:
        k = augmenter.num_labels
        counts = [per_class] * k if isinstance(per_class, int) else list(per_class)
        if len(counts) != k or any(not isinstance(n, int) or n < 0 for n in counts):
            raise ValueError(f"per_class must be a count >= 0 or {k} of them (one per label), got {per_class!r}")
        self.augmenter = augmenter
        self.per_class = counts
        self.format = output_format(output)
        self.transform = transform
        self.epoch = int(epoch)
        self.prefill = prefill
        self._starts = np.cumsum([0, *counts]).tolist()
        if prefill:
            self._prefill()

    def _prefill(self) -> None:
        self.augmenter.prefill(self.per_class, self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the synthetic images of ``epoch`` from now on (prefilled here when ``prefill``)."""
        self.epoch = int(epoch)
        if self.prefill:
            self._prefill()

    def __len__(self) -> int:
        return self._starts[-1]

    def locate(self, index: int) -> tuple[int, int]:
        """``(label, synthetic index)`` of item ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} synthetic images")
        label = bisect.bisect_right(self._starts, index) - 1
        return label, index - self._starts[label]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        label, i = self.locate(index)
        img = self.augmenter.image(label, i, self.format, self.epoch)
        return (self.transform(img) if self.transform is not None else img), label


class BalancedDataset(Dataset):
    """A dataset topped up with synthetic images until every class has ``target`` items.

    Items ``0 .. len(dataset)-1`` are the dataset's own; then come synthetic images, label by label
    (``target="max"``: up to the largest class; an int: up to that count, never removing real
    items; a class of the augmenter that the dataset does not hold gets none). Synthetic item ``j``
    of label ``k`` is synthetic image ``j`` of that class: the same image
    every epoch and in every DataLoader worker (:meth:`set_epoch` switches to a fresh set on purpose).
    Synthetic images come in the type, dtype and range of the dataset's own images (read from its
    first item) and labels in its label type; ``transform`` is applied to every image, real or
    synthetic (put random label-preserving augmentation there, not in the wrapped dataset).

    Example:
        >>> ds = BalancedDataset(ImageFolder("data/train"), aug)      # doctest: +SKIP
        >>> ds.real_counts, ds.synthetic_counts                       # doctest: +SKIP
        ([500, 40, 12], [0, 460, 488])
    """

    def __init__(
        self,
        dataset: Any,
        augmenter: GanAugmenter,
        target: Literal["max"] | int = "max",
        *,
        labels: Sequence[int] | None = None,
        transform: Any = None,
        epoch: int = 0,
        prefill: bool = True,
    ) -> None:
        if len(dataset) == 0:
            raise ValueError("BalancedDataset needs a non-empty dataset")
        labels = _dataset_labels(dataset) if labels is None else [int(t) for t in labels]
        if len(labels) != len(dataset):
            raise ValueError(f"{len(labels)} labels for a dataset of {len(dataset)} items")
        k = augmenter.num_labels
        bad = [t for t in labels if not 0 <= t < k]
        if bad:
            names = augmenter.classes if augmenter.classes is not None else augmenter.class_names
            raise ValueError(f"dataset label {bad[0]} is not one of the augmenter's {k} classes {names}")
        real = np.bincount(labels, minlength=k).tolist()
        if target == "max":
            goal = max(real)
        elif isinstance(target, int) and not isinstance(target, bool) and target >= 1:
            goal = target
        else:
            raise ValueError(f"target must be 'max' or a positive count per class, got {target!r}")
        img, label = dataset[0][:2]
        self.format = augmenter.format_of(img)  # fail now on a size/channel/range mismatch
        self._tensor_labels = isinstance(label, torch.Tensor)
        self.dataset = dataset
        self.augmenter = augmenter
        self.target = goal
        self.real_counts: list[int] = real
        # A class the dataset does not hold is not topped up: it is no class of this dataset (a
        # split or subset of the augmenter's classes), and adding it would change the task.
        self.synthetic_counts: list[int] = [max(goal - n, 0) if n > 0 else 0 for n in real]
        self.transform = transform
        self.epoch = int(epoch)
        self.prefill = prefill
        self._starts = np.cumsum([len(dataset), *self.synthetic_counts]).tolist()
        if prefill:
            self._prefill()

    def _prefill(self) -> None:
        self.augmenter.prefill(self.synthetic_counts, self.epoch)

    def set_epoch(self, epoch: int) -> None:
        """Use the synthetic images of ``epoch`` from now on (prefilled here when ``prefill``)."""
        self.epoch = int(epoch)
        if self.prefill:
            self._prefill()

    @property
    def counts(self) -> list[int]:
        """Items per label after the top-up."""
        return [r + s for r, s in zip(self.real_counts, self.synthetic_counts, strict=True)]

    def __len__(self) -> int:
        return self._starts[-1]

    def is_synthetic(self, index: int) -> bool:
        return index >= len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        if index < len(self.dataset):
            img, label = self.dataset[index][:2]
        else:
            label = bisect.bisect_right(self._starts, index) - 1
            img = self.augmenter.image(label, index - self._starts[label], self.format, self.epoch)
            label = torch.tensor(label) if self._tensor_labels else label
        return (self.transform(img) if self.transform is not None else img), label

"""Image formats the augmenter takes and hands back: PIL ``L``/``RGB``, ``(C, H, W)`` tensors (plain or
``tv_tensors``), ``(H, W[, C])`` numpy arrays; uint8 (0..255) or float (values in [0, 1]).

A synthetic image comes out of the pool as a uint8 ``(H, W, C)`` array; :func:`image_format` reads the
format of a real image (and checks it against the generator), :func:`render` turns a pool image into
that format.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import PIL.Image
import torch
from torchvision import tv_tensors

Target = int | np.integer | torch.Tensor
OutputKind = Literal["uint8", "float", "pil", "numpy"]
PIL_MODES = {1: "L", 3: "RGB"}
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


def _is_label(x: Any) -> bool:
    if type(x) is int:  # the common case first: this runs for every input of every sample
        return True
    if isinstance(x, torch.Tensor):
        return x.ndim == 0 and not x.dtype.is_floating_point and x.dtype != torch.bool
    return isinstance(x, int | np.integer) and not isinstance(x, bool)


def _is_image(x: Any) -> bool:
    return isinstance(x, PIL.Image.Image) or (isinstance(x, torch.Tensor) and x.ndim >= 2)


def _shape_error(what: str, size: int, channels: int) -> ValueError:
    return ValueError(
        f"{what}, but the generator makes {size}x{size} images with {channels} "
        f"channel(s) (PIL mode {PIL_MODES[channels]}); resize or convert before the augmenter"
    )


def image_format(img: Any, size: int, channels: int) -> ImageFormat:
    """The format of ``img``, checked against a generator of ``size`` x ``size`` images with ``channels``.

    Raises:
        ValueError: the size, channels, dtype or value range do not match (the message names both sides).
        TypeError: ``img`` is no PIL image, tensor or numpy array.
    """
    S, C = size, channels
    if isinstance(img, PIL.Image.Image):
        if img.mode != PIL_MODES[C]:
            raise _shape_error(f"PIL image has mode {img.mode}", S, C)
        if img.size != (S, S):
            raise _shape_error(f"PIL image is {img.size[0]}x{img.size[1]}", S, C)
        return ImageFormat("pil")
    if isinstance(img, torch.Tensor):
        if img.ndim != 3:
            raise _shape_error(f"tensor image has shape {tuple(img.shape)} (expected (C, H, W))", S, C)
        if tuple(img.shape) != (C, S, S):
            raise _shape_error(f"tensor image has shape {tuple(img.shape)} (C, H, W)", S, C)
        _check_dtype(img.dtype, img, "tensor")
        wrap = type(img) if isinstance(img, tv_tensors.TVTensor) else None
        return ImageFormat("tensor", img.dtype, device=img.device, wrap=wrap)
    if isinstance(img, np.ndarray):
        squeeze = img.ndim == 2
        if not (squeeze and C == 1) and img.ndim != 3:
            raise _shape_error(f"numpy image has shape {img.shape} (expected (H, W, C))", S, C)
        shape = img.shape + (1,) if squeeze else img.shape
        if shape != (S, S, C):
            raise _shape_error(f"numpy image has shape {img.shape} (H, W, C)", S, C)
        _check_dtype(img.dtype, img, "numpy")
        return ImageFormat("numpy", img.dtype, squeeze=squeeze)
    raise TypeError(
        f"GanAugmenter takes PIL images, (C, H, W) tensors or (H, W, C) numpy arrays, got {type(img).__name__}"
    )


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

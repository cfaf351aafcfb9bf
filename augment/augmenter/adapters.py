"""The augmenter inside other frameworks' pipelines: a torchvision v2 transform and an albumentations transform.

Both draw their parameters apart from applying them (v2: :meth:`GanTransform.make_params`; albumentations:
``get_params_dependent_on_data``) and hand the drawn pool image back in the input's format.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import albumentations as A
import numpy as np
import PIL.Image
import torch
from torchvision.transforms import v2

from augment.augmenter.formats import ImageFormat, _is_image, _is_label

if TYPE_CHECKING:
    from augment.augmenter.core import GanAugmenter


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
        # Private hook kept: v2 drops a 0-dim tensor label before make_params and no public hook can let it in.
        needs = super()._needs_transform_list(flat_inputs)
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

"""One view pipeline as a list of augmentations, in the paper's order (arXiv:2006.07733,
Appendix B): crop, flip, colour jitter, grayscale, blur, solarisation. A new augmentation is a
class (``augmentation.Augmentation``), its ``ViewSpec`` field(s) and its line here."""

from __future__ import annotations

from collections.abc import Sequence

from byol.views.augmentation import Augmentation
from byol.views.blur import GaussianBlur
from byol.views.colour import ColourJitter, Grayscale, Solarize
from byol.views.geometric import HorizontalFlip, RandomResizedCrop
from byol.views.spec import ViewSpec, blur_kernel_size


def pipeline(spec: ViewSpec, image_size: int) -> list[Augmentation]:
    """The augmentations of one view, making image_size x image_size views."""
    s = spec
    return [
        RandomResizedCrop(image_size, s.crop_scale, s.crop_ratio),
        HorizontalFlip(s.flip_prob),
        ColourJitter(s.jitter_prob, s.brightness, s.contrast, s.saturation, s.hue),
        Grayscale(s.grayscale_prob),
        GaussianBlur(
            s.blur_prob, s.blur_sigma, blur_kernel_size(image_size, s.blur_kernel_fraction)
        ),
        Solarize(s.solarize_prob),
    ]


def size_stage(augmentations: Sequence[Augmentation]) -> int:
    """How many leading augmentations need the image at its own size: up to the last that
    resizes it (the crop). The cropped path runs them in DataLoader workers."""
    resizing = [i for i, a in enumerate(augmentations) if a.resizes]
    return resizing[-1] + 1 if resizing else 0

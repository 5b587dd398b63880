"""What one augmentation of a view pipeline is, and how its random draws are made.

An ``Augmentation`` draws the parameters of n images at once (``sample``: a small dict of tensors
with one row per image) and applies them either to one uint8 image (``apply_image``, with
torchvision's functional ops: the reference) or to a float batch on the training device
(``apply_batch``, every row with its own parameters). The per-image, batched and crops-in-workers
paths are drivers that run the same list of augmentations (``pipeline.pipeline``).

Each augmentation draws from its own random stream, seeded by the view's seed and the
augmentation's ``name``: adding, removing or reordering one never changes the draws of another,
so runs that do not use a new augmentation keep their views, and their weights. The streams are
CPU generators whatever the device: the parameters are a few numbers per image, worked out with
numpy (whose operations on a few numbers cost a fraction of torch's dispatch, and the per-image
path draws one image at a time), then moved to the device.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import ClassVar

import numpy as np
import torch

Params = dict[str, torch.Tensor]  # one augmentation's parameters, tensors with one row per image


class Draws(dict[str, Params]):
    """One view's draws: augmentation name -> its parameters. ``draws["blur"]`` is the blur's
    parameters; ``draws[rows]`` (an int, a slice or an index tensor) the draws of those images
    only, e.g. a rank's share of a global batch, or ``draws[0]`` one image's (leading dimension
    gone). A dict underneath, so DataLoader's default collate stacks single images' draws into a
    batch's, and ``to`` moves them like the tensors beside them."""

    def __getitem__(self, key: str | int | slice | torch.Tensor) -> Params | Draws:
        if isinstance(key, str):
            return super().__getitem__(key)
        return Draws({name: {k: v[key] for k, v in p.items()} for name, p in self.items()})

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Draws:
        return Draws(
            {
                name: {k: v.to(device, non_blocking=non_blocking) for k, v in p.items()}
                for name, p in self.items()
            }
        )


class Augmentation:
    """One augmentation. Subclasses set ``name`` (the key of its random stream and of its
    parameters in ``Draws``: stable, unique in a pipeline), ``draws_per_image`` (how many uniform
    numbers one image's parameters take) and implement ``parameters`` and the two ``apply``.
    ``resizes`` marks the augmentation that changes the image size (the crop): the cropped path
    runs it, and everything before it, in DataLoader workers on each image at its own size."""

    name: ClassVar[str] = ""
    resizes: ClassVar[bool] = False
    draws_per_image: int = 0

    def uniform_rows(self, n: int, generator: torch.Generator) -> np.ndarray:
        """n rows of ``draws_per_image`` uniforms from one stream. One image's row is the first
        ``draws_per_image`` numbers of its stream, whatever n (see ``draw_each``)."""
        return uniforms(generator, n, self.draws_per_image)

    def parameters(self, u: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> Params:
        """The parameters of n images from their uniforms (n x ``draws_per_image``, float64) and
        their sizes (n integers each): numpy on a whole batch at once."""
        raise NotImplementedError

    def sample(self, n: int, height: int, width: int, generator: torch.Generator) -> Params:
        """The parameters of n images of height x width, drawn from ``generator`` (a CPU
        generator: this augmentation's own stream)."""
        sizes = np.full(n, height), np.full(n, width)
        return self.parameters(self.uniform_rows(n, generator), *sizes)

    def apply_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        """uint8 C x H x W (C = 1: a gray source) -> uint8, with one image's parameters."""
        raise NotImplementedError

    def apply_batch(self, x: torch.Tensor, params: Params, masked: bool) -> torch.Tensor:
        """Float N x C x H x W in [0, 1] -> the same, each row with its own parameters; x may be
        overwritten. ``masked``: never ask the device which rows to compute (see apply_where)."""
        raise NotImplementedError


class RandomApply(Augmentation):
    """An augmentation applied to each image with probability ``p``. Subclasses that draw values
    set ``values_per_image`` and ``values`` (from n x values_per_image uniforms) and transform the
    chosen images (``transform_image``, ``transform_batch``). On a batch, p = 0 costs nothing and
    p = 1 skips selecting the rows."""

    values_per_image: int = 0

    def __init__(self, p: float) -> None:
        self.p = p
        self.draws_per_image = 1 + self.values_per_image

    def uniform_rows(self, n: int, generator: torch.Generator) -> np.ndarray:
        # Whether each image is chosen, then its values: the stream's order since the first draws.
        applied = uniforms(generator, n, 1)
        if not self.values_per_image:
            return applied
        return np.concatenate([applied, uniforms(generator, n, self.values_per_image)], axis=1)

    def parameters(self, u: np.ndarray, heights: np.ndarray, widths: np.ndarray) -> Params:
        return {"applied": torch.from_numpy(u[:, 0] < self.p), **self.values(u[:, 1:])}

    def values(self, u: np.ndarray) -> Params:
        return {}

    def transform_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def transform_batch(self, x: torch.Tensor, params: Params) -> torch.Tensor:
        raise NotImplementedError

    def apply_image(self, image: torch.Tensor, params: Params) -> torch.Tensor:
        return self.transform_image(image, params) if params["applied"] else image

    def apply_batch(self, x: torch.Tensor, params: Params, masked: bool) -> torch.Tensor:
        if self.p == 0:
            return x
        if self.p == 1:
            return self.transform_batch(x, params)
        return apply_where(x, params["applied"], self.transform_batch, params, masked)


def apply_where(
    x: torch.Tensor,
    chosen: torch.Tensor,
    fn: Callable[[torch.Tensor, Params], torch.Tensor],
    params: Params,
    masked: bool,
) -> torch.Tensor:
    """x with fn(x, params) in the rows where ``chosen``. Masked: compute every row and select,
    which never asks the device how many rows were chosen (no host-device sync, for GPUs);
    otherwise compute only the chosen rows, in place (less work, for CPUs)."""
    if masked:
        return torch.where(chosen.view(-1, 1, 1, 1), fn(x, params), x)
    rows = torch.nonzero(chosen).squeeze(1)
    if rows.numel():
        x.index_copy_(0, rows, fn(x[rows], {k: v[rows] for k, v in params.items()}))
    return x


def uniforms(generator: torch.Generator, *shape: int) -> np.ndarray:
    """Uniform draws in [0, 1) of the given shape, from ``generator``, as float64 numpy."""
    return torch.rand(shape, generator=generator, dtype=torch.float64).numpy()


def as_tensor(values: np.ndarray) -> torch.Tensor:
    """Worked-out parameters as a tensor: float32 for real numbers, like the images."""
    if values.dtype == np.float64:
        values = values.astype(np.float32)
    return torch.from_numpy(values)


def _stable_hash(data: bytes) -> int:
    """63 bits of blake2b: the same in every process and Python version (unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def fork_seed(generator: torch.Generator) -> int:
    """A seed for one view, taken from ``generator``, which then moves on (the next view gets
    another). Read from the generator's state, which lives on the host for every device, rather
    than from a draw, which on an accelerator would wait for the device."""
    seed = _stable_hash(generator.get_state().numpy().tobytes())
    torch.rand(1, generator=generator, device=generator.device)
    return seed


def stream(view_seed: int, name: str) -> torch.Generator:
    """The random stream of augmentation ``name`` in the view seeded ``view_seed``."""
    return torch.Generator().manual_seed(_stable_hash(f"{view_seed}/{name}".encode()))


def draw(
    augmentations: Sequence[Augmentation],
    n: int,
    height: int,
    width: int,
    generator: torch.Generator | None,
) -> Draws:
    """One view's draws for n images, on the generator's device: one seed from ``generator``,
    then each augmentation from its own stream. Without a generator, torch's global one."""
    generator = torch.default_generator if generator is None else generator
    seed = fork_seed(generator)
    draws = Draws({a.name: a.sample(n, height, width, stream(seed, a.name)) for a in augmentations})
    return draws if generator.device.type == "cpu" else draws.to(generator.device)


def draw_each(
    augmentations: Sequence[Augmentation],
    heights: Sequence[int],
    widths: Sequence[int],
    generators: Sequence[torch.Generator],
) -> Draws:
    """One view's draws for n images, image i from ``generators[i]`` alone: row i is exactly
    ``draw(augmentations, 1, heights[i], widths[i], generators[i])``. Only the few uniforms are
    drawn image by image (each image has its own streams); the parameters are then worked out
    for all n at once, which is what makes a micro-batch of per-image draws cheap."""
    seeds = [fork_seed(g) for g in generators]
    sizes = np.asarray(heights), np.asarray(widths)
    draws = Draws()
    for a in augmentations:
        rows = [uniforms(stream(seed, a.name), 1, a.draws_per_image) for seed in seeds]
        draws[a.name] = a.parameters(np.concatenate(rows), *sizes)
    return draws


def checked(augmentations: Sequence[Augmentation]) -> list[Augmentation]:
    """The list, refused if two augmentations share a name: they would share a random stream
    and one's parameters would hide the other's."""
    names = [a.name for a in augmentations]
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"augmentations need distinct, non-empty names: {names}")
    return list(augmentations)

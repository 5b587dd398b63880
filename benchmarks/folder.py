"""End-to-end BYOL training throughput on a folder of photo-size JPEGs read back from disk image by
image, as a user's folder too large for memory is: our folder path (decode and both crops in
DataLoader workers, flip, colour, blur and solarisation batched on the training device), our
per-image path (torchvision per image in the workers: views=per-image) and lightly's documented
recipe (torchvision ImageFolder with BYOLTransform on PIL images in the workers), at the same
precision, taking turns in one process.

    python benchmarks/folder.py --cache /tmp/byol-bench --image-size 96 --precision fp32

The folder is made once under ``--cache`` (never in the repository) from real images: CIFAR-10 JPEG
copy images ($BYOL_SHARED_DIR/datasets), each upscaled (bicubic) to its own random width and
height between ``--min-side`` and ``--max-side`` pixels and saved as a JPEG of quality 90, in one
sub-folder per class. The same DataLoader worker count serves every pipeline.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))

from peers import LightlyRecipe  # noqa: E402
from throughput import (  # noqa: E402
    OurRecipe,
    common_arguments,
    companion,
    measure,
    report,
    throughput_config,
)

from byol.data import load_datasets  # noqa: E402
from byol.training.epochs import ViewPairs, per_image_epoch  # noqa: E402
from byol.views.cropped import cropped_paper_views  # noqa: E402
from byol.views.per_image import paper_views  # noqa: E402


def photo_folder(cache: Path, count: int, sides: tuple[int, int]) -> Path:
    """``count`` JPEGs of random photo sizes made from CIFAR-10 images, once per argument set."""
    folder = cache / f"cifar10-photos-{count}-{sides[0]}-{sides[1]}"
    done = folder / ".complete"
    if done.exists():
        return folder
    train, _, info = load_datasets("cifar10-jpeg")
    rng = np.random.default_rng(0)
    for i in range(count):
        image, label = train[i]
        width, height = (int(s) for s in rng.integers(sides[0], sides[1] + 1, 2))
        picture = Image.fromarray(image.permute(1, 2, 0).numpy()).resize(
            (width, height), Image.Resampling.BICUBIC
        )
        out = folder / info.classes[label]
        out.mkdir(parents=True, exist_ok=True)
        picture.save(out / f"{i:05d}.jpg", quality=90)
    done.write_text(f"{count}\n")
    return folder


class FolderEpochs:
    """What ``byol pretrain`` does with a folder read from files, for OurRecipe: view pairs from
    DataLoader workers (``per_image_epoch``), the device's share of the views timed apart."""

    def __init__(self, dataset, views, config) -> None:
        self.pairs, self.config = ViewPairs(dataset, views), config
        self.phases: dict[str, float] = defaultdict(float)
        if self.pairs.finish is not None:
            self.pairs.finish = self._timed(self.pairs.finish)

    def _timed(self, finish):  # noqa: ANN001, ANN202
        def timed(batch):  # noqa: ANN001, ANN202
            start = time.perf_counter()
            views = finish(batch)
            self.phases["views on device"] += time.perf_counter() - start
            return views

        return timed

    def epoch(self, epoch: int, start_batch: int):  # noqa: ANN201
        return per_image_epoch(self.pairs, self.config, torch.device("cpu"), epoch, start_batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser)
    parser.set_defaults(image_size=96, precision=["fp32"], steps=4, rounds=3)
    parser.add_argument("--cache", type=Path, required=True, help="where the folder is made once")
    parser.add_argument("--photos", type=int, default=2000)
    parser.add_argument("--min-side", type=int, default=256)
    parser.add_argument("--max-side", type=int, default=500)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    folder = photo_folder(args.cache, args.photos, (args.min_side, args.max_side))
    train, _, info = load_datasets(str(folder))
    size, batch, hidden = args.image_size, args.batch_size, args.hidden_dim
    recipes = []
    for p in args.precision:
        for last in args.channels_last:
            config = throughput_config(
                size, batch, hidden, p, last, args.compile or companion(last)
            )
            config = config.replace(num_workers=args.workers)
            for path, make in (("folder path", cropped_paper_views), ("per-image", paper_views)):
                made = make(config.views, size, info.mean, info.std, info.grayscale)
                epochs = FolderEpochs(train, made, config)
                recipe = OurRecipe(
                    config, None, info.mean, info.std, None, epochs, 0, args.run_steps
                )
                recipe.name = f"{recipe.name[:-1]}, {path})"
                recipes.append(recipe)
        recipes.append(LightlyRecipe(None, size, batch, hidden, args.workers, p, folder))
    for recipe in recipes:
        recipe.prepare()
    seconds = measure(recipes, args.rounds, args.warmup, args.steps, args.data_only)
    print(
        f"{len(train)} JPEGs of {args.min_side}-{args.max_side} px read from {folder}, {size} px "
        f"views, batch {batch}, ResNet-18 (torchvision), heads {hidden}, "
        f"{torch.get_num_threads()} threads, {args.workers} DataLoader workers for every "
        f"pipeline, {args.rounds} rounds of {args.steps} steps{', data only' * args.data_only}, "
        f"torch {torch.__version__}"
    )
    report(seconds, batch, recipes)


if __name__ == "__main__":
    main()

"""kNN top-1 against training wall-clock time: our pipeline and lightly's BYOL recipe, the same
budget each, one after the other in one process.

    python benchmarks/time_to_accuracy.py --dataset fashion-mnist --budget 300
    python benchmarks/time_to_accuracy.py --dataset cifar10-jpeg --budget 300

The clock stops while kNN is measured (every ``--eval-every`` seconds of training, on the frozen
encoder: bank = ``--bank`` labelled training images, queries = ``--queries`` test images, k=200,
temperature 0.1, same eval view for both). Writes a JSON of the curves and a PNG plot.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from peers import LightlyRecipe  # noqa: E402
from throughput import OurRecipe  # noqa: E402

from byol.data import load_datasets, subset  # noqa: E402
from byol.evaluation.features import extract_features  # noqa: E402
from byol.evaluation.knn import knn_accuracy  # noqa: E402
from byol.presets import preset  # noqa: E402
from byol.training.monitor import _with_transform  # noqa: E402
from byol.views.per_image import EvalTransform  # noqa: E402


def knn_score(encoder: torch.nn.Module, bank, queries) -> float:
    was_training = encoder.training
    features = [extract_features(encoder, ds, torch.device("cpu"), 512) for ds in (bank, queries)]
    encoder.train(was_training)
    return knn_accuracy(*features[0], *features[1], 200, 0.1)


def run(recipe, bank, queries, budget: float, eval_every: float) -> list[tuple[float, float]]:
    curve = [(0.0, knn_score(recipe.encoder(), bank, queries))]
    print(f"  {recipe.name}: 0 s kNN {curve[-1][1]:.2f}%", flush=True)
    batches, trained, next_eval = recipe.batches(), 0.0, eval_every
    for module in getattr(recipe, "modules", []):
        module.train()
    while trained < budget:
        start = time.perf_counter()
        loss = recipe.step(next(batches))
        float(loss)  # the step is done before the clock stops
        trained += time.perf_counter() - start
        if trained >= next_eval or trained >= budget:
            curve.append((trained, knn_score(recipe.encoder(), bank, queries)))
            print(f"  {recipe.name}: {trained:.0f} s kNN {curve[-1][1]:.2f}%", flush=True)
            next_eval += eval_every
    return curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--budget", type=float, default=300.0, help="training seconds each")
    parser.add_argument("--eval-every", type=float, default=60.0)
    parser.add_argument("--bank", type=int, default=10000)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--lightly-workers", type=int, default=2)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    train, test, info = load_datasets(args.dataset)
    size = train.images.shape[-1]
    eval_view = EvalTransform(size, info.mean, info.std, 1.0)
    bank = _with_transform(subset(train, args.bank, 0), eval_view)
    queries = _with_transform(subset(test, args.queries, 0), eval_view)
    # Ours: the CPU preset's recipe (fashion-mnist; at 32 px in colour for CIFAR-10), with its
    # peak learning rate held constant like lightly's example, since the budget is in seconds.
    config = preset("fashion-mnist").replace(image_size=size)
    images = (
        subset(train, config.data.train_subset, 0).images
        if config.data.train_subset
        else train.images
    )
    images = images[:, :1] if info.grayscale else images

    curves = {}
    torch.manual_seed(0)
    ours = OurRecipe(config, images, info.mean, info.std, "byol (ours, CPU preset recipe)")
    ours.prepare()  # compiles where the preset's run length repays it (byol/speed)
    curves[ours.name] = run(ours, bank, queries, args.budget, args.eval_every)
    torch.manual_seed(0)
    lightly = LightlyRecipe(train.images, size, 256, 1024, args.lightly_workers)
    curves[lightly.name] = run(lightly, bank, queries, args.budget, args.eval_every)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"time_to_accuracy_{args.dataset}"
    (out / f"{stem}.json").write_text(json.dumps(curves, indent=1) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in curves.items():
        ax.plot([t for t, _ in curve], [a for _, a in curve], marker="o", label=name)
    ax.set_xlabel("training time (s)")
    ax.set_ylabel(f"kNN top-1 (%), {args.queries} test images")
    ax.set_title(f"{args.dataset}: kNN accuracy vs time, {torch.get_num_threads()} CPU threads")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / f"{stem}.png", dpi=120)
    print(f"wrote {out / stem}.json and .png")


if __name__ == "__main__":
    main()

"""End-to-end BYOL training throughput (data, views, step) of our pipeline and the peers' recipes,
in one process, same backbone (torchvision ResNet-18), batch, image size and head width, each
pipeline in every precision asked for (peers in bf16: their step under torch.autocast, what their
user would switch on).

    python benchmarks/throughput.py --image-size 32 --batch-size 256 --precision fp32 bf16
    python benchmarks/throughput.py --image-size 96 --batch-size 256 --images 4000

Sources are the CIFAR-10 JPEG copy ($BYOL_SHARED_DIR/datasets) decoded once into memory, resized
to the benchmark size (Fashion-MNIST if the copy is absent). Pipelines take turns over several
rounds so that machine noise hits all of them alike. Each turn opens a fresh stream of batches
(DataLoader workers start, and stop when it closes, so no pipeline's workers run while another is
timed), takes ``--warmup`` steps, then times ``--steps`` steps, split into: waiting for data, views
made on the training device, copies (memory format), and the model step. On a CPU the step is
synchronous, so its time is the step's own.

Ours runs once per ``--channels-last`` value: ``off`` is as runs were before ``auto`` (contiguous,
eager), ``auto`` what ``byol/speed`` chooses for a run of ``--run-steps`` steps (by default the
preset's epochs over the images held). Every peer runs as its documentation gives it and, where
ours chose channels_last or compile, again with the same switches. Every row reports its share of
the step's peak: the step's FLOPs (FlopCounterMode, counted once eagerly) at the matrix-multiply
rate measured on the same threads in its precision, against the time it took end to end.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).parent))

from peers import ByolPytorchRecipe, LightlyRecipe  # noqa: E402
from step import matmul_peak  # noqa: E402

from byol import distributed  # noqa: E402
from byol.data import load_datasets  # noqa: E402
from byol.presets import preset  # noqa: E402
from byol.runtime import resolve_precision  # noqa: E402
from byol.training.epochs import BatchedEpochs  # noqa: E402
from byol.training.optim import build_optimizer  # noqa: E402
from byol.training.run_context import speed_choices  # noqa: E402
from byol.training.schedules import scaled_learning_rate  # noqa: E402
from byol.training.step import train_step  # noqa: E402
from byol.training.train_state import build_model  # noqa: E402
from byol.views.batched import batch_paper_views  # noqa: E402


def source_images(size: int, count: int) -> tuple[torch.Tensor, str, tuple, tuple]:
    """``count`` real uint8 images at ``size`` px, the dataset's name, and its mean/std."""
    try:
        train, _, info = load_datasets("cifar10-jpeg")
    except Exception:  # noqa: BLE001 - any reason the copy is unusable: fall back
        train, _, info = load_datasets("fashion-mnist")
    images = train.images[:count]
    if images.shape[-1] != size:
        resized = F.interpolate(images.float(), size=size, mode="bicubic", antialias=True)
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images.contiguous(), info.name, info.mean, info.std


def throughput_config(
    size, batch, hidden, precision, channels_last="false", compile="false", **model
):  # noqa: ANN001, ANN201
    """Ours at the benchmark's shape: torchvision ResNet-18 unless ``model`` says otherwise, the
    paper's views (blur at 96 px, none at 32 px, as lightly's CIFAR example)."""
    return preset("stl10" if size >= 64 else "cifar10").replace(
        **{"cifar_stem": False, **model},
        image_size=size,
        batch_size=batch,
        projector_hidden_dim=hidden,
        predictor_hidden_dim=hidden,
        precision=precision,
        channels_last=channels_last,
        compile=compile,
    )


class OurRecipe:
    """Our pipeline as `byol pretrain` runs it: views made a batch at a time (``epochs``: from
    in-memory uint8 images by default), LARS at the config's peak learning rate, fused EMA, and
    the speed switches a run of ``run_steps`` steps chooses (``byol/speed``; by default the
    config's epochs over ``images``)."""

    family = "ours"

    def __init__(
        self,
        config,
        images,
        mean,
        std,
        name=None,
        epochs=None,
        view_threads=0,
        run_steps=None,
        device=None,
    ):
        c = self.config = config
        self.view_threads = view_threads  # intra-op threads for making views (0: the step's)
        device = device or torch.device("cpu")
        self.precision = resolve_precision(
            device, c.runtime.precision, c.data.image_size, c.model.cifar_stem
        )
        if run_steps is None:  # what a run of the config's epochs over these images chooses
            held = 0 if images is None else len(images)
            run_steps = c.schedule.epochs * (held // c.optim.batch_size) or 10_000
        self.choices = speed_choices(c, distributed.Ranks(), device, self.precision, run_steps)
        asked = (c.runtime.channels_last, c.runtime.compile)
        label = {("auto", "auto"): "auto", ("false", "false"): "as before auto"}.get(
            asked, f"channels_last={asked[0]}, compile={asked[1]}"
        )
        self.name = name or (
            f"byol (ours, {self.precision}, {label}: {self.choices.short()}"
            f"{f', views on {view_threads} thread(s)' if view_threads else ''})"
        )
        self.model = build_model(c)
        if self.choices.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.lr = scaled_learning_rate(c.optim.base_lr, c.optim.batch_size)
        self.optimizer = build_optimizer(
            self.model,
            c.optim.optimizer,
            self.lr,
            c.optim.weight_decay,
            c.optim.momentum,
            c.optim.lars_trust_coefficient,
            kernels=self.choices.optimizer_kernels,
        )
        self.tau, self.steps_done = c.schedule.tau_base, 0
        # Given epochs (a folder's) time their own device work into phases["views on device"].
        self.views_timed_here = epochs is None
        if epochs is None:
            epochs = BatchedEpochs(
                images, batch_paper_views(c.views, c.data.image_size, mean, std), c
            )
        self.epochs = epochs
        # Seconds per phase of the data time, for the breakdown
        self.phases: dict[str, float] = getattr(epochs, "phases", defaultdict(float))

    def prepare(self) -> None:
        """Compiles the model if the switches say so: after its FLOPs are counted eagerly."""
        if self.choices.compile:
            self.model.compile(mode=self.choices.compile_mode)

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch = 0
        while True:
            for micro_batches in self.epochs.epoch(epoch, 0):  # accumulation_steps=1: one pair
                start, threads = time.perf_counter(), torch.get_num_threads()
                torch.set_num_threads(self.view_threads or threads)
                ((v1, v2),) = micro_batches  # the views are made here
                torch.set_num_threads(threads)
                made = time.perf_counter()
                if self.choices.channels_last:
                    v1 = v1.contiguous(memory_format=torch.channels_last)
                    v2 = v2.contiguous(memory_format=torch.channels_last)
                self.phases["copies"] += time.perf_counter() - made
                if self.views_timed_here:  # in memory: no workers, all of it is views
                    self.phases["views on device"] += made - start
                yield v1, v2
            epoch += 1

    def step(self, views) -> torch.Tensor:
        self.model.before_step(self.steps_done)  # as `byol pretrain` does
        self.steps_done += 1
        out = train_step(self.model, self.optimizer, *views, self.lr, self.tau, self.precision)
        return out.loss.detach()

    def encoder(self) -> torch.nn.Module:
        return self.model.online_encoder


def time_steps(recipe, batches, steps: int, data_only: bool = False) -> dict[str, float]:
    """Seconds per step over ``steps`` steps: in all, waiting for data (views made on the
    device and copies included), the model step, and the recipe's own phases of the data time.
    ``data_only``: no model step, the rate at which the pipeline delivers views."""
    phases = getattr(recipe, "phases", {})
    before = dict(phases)
    data = step = 0.0
    loss = torch.zeros(())
    for _ in range(steps):
        start = time.perf_counter()
        views = next(batches)
        got = time.perf_counter()
        if not data_only:
            loss = recipe.step(views)
        data, step = data + got - start, step + time.perf_counter() - got
    start = time.perf_counter()
    float(loss)  # the loss is read at the end only
    step += time.perf_counter() - start
    out = {"total": data + step, "data": data, "step": step}
    out.update({k: v - before.get(k, 0.0) for k, v in phases.items()})
    return {k: v / steps for k, v in out.items()}


def measure(recipes, rounds: int, warmup: int, steps: int, data_only: bool = False):  # noqa: ANN201
    """Per recipe, one time_steps dict per round; the recipes take turns within each round."""
    seconds: dict[str, list[dict[str, float]]] = {r.name: [] for r in recipes}
    for _ in range(rounds):
        for recipe in recipes:
            stream = recipe.batches()
            time_steps(recipe, stream, warmup, data_only)  # workers, allocator, oneDNN kernels
            seconds[recipe.name].append(time_steps(recipe, stream, steps, data_only))
            stream.close()  # stops its DataLoader workers
    return seconds


def count_step_flops(recipe) -> int:  # noqa: ANN001
    """FLOPs of one of ``recipe``'s steps (torch's FlopCounterMode: matrix multiplies and
    convolutions), counted eagerly: call before ``prepare`` compiles it."""
    stream = recipe.batches()
    views = next(stream)
    stream.close()
    counter = FlopCounterMode(display=False)
    with counter:
        float(recipe.step(views))
    return counter.get_total_flops()


def matmul_peaks(precisions) -> dict[str, float]:  # noqa: ANN001
    """The matrix-multiply rate (FLOP/s) on this process's threads, per precision."""
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    return {p: matmul_peak(dtypes[p]) for p in precisions}


def report(
    seconds: dict[str, list[dict[str, float]]],
    batch: int,
    recipes=(),  # noqa: ANN001
    flops: dict[str, int] | None = None,
    peaks: dict[str, float] | None = None,
) -> None:
    """img/s (median and range over rounds), where each step's time goes (medians, ms per step),
    the share of the step's peak (its FLOPs at the matmul rate of its precision on the same
    threads, against the time it took end to end), and ours / each peer at equal precision."""
    flops, peaks = flops or {}, peaks or {}
    precision = {r.name: r.precision for r in recipes}
    rates = {n: [batch / r["total"] for r in rounds] for n, rounds in seconds.items()}
    width = max(40, *(len(n) + 2 for n in seconds))
    print(
        f"{'pipeline':<{width}}{'img/s':>8}{'range':>15}{'wait':>8}{'views':>8}{'copies':>8}"
        f"{'step':>8}{'GFLOP/s':>9}{'of peak':>9}"
    )
    for name, rounds in seconds.items():
        median = {k: statistics.median(r.get(k, 0.0) for r in rounds) for k in rounds[0]}
        own = median.get("views on device", 0.0) + median.get("copies", 0.0)
        ms = [1e3 * max(median["data"] - own, 0.0)] + [
            1e3 * median.get(k, 0.0) for k in ("views on device", "copies", "step")
        ]
        spread = f"{min(rates[name]):.1f}-{max(rates[name]):.1f}"
        cells = "".join(f"{v:>8.0f}" for v in ms)
        achieved = flops.get(name, 0) / median["total"]
        peak = peaks.get(precision.get(name, ""), 0.0)
        share = f"{100 * achieved / peak:>8.0f}%" if achieved and peak else f"{'':>9}"
        rate = statistics.median(rates[name])
        speed = f"{achieved / 1e9:>9.1f}" if achieved else f"{'':>9}"
        print(f"{name:<{width}}{rate:>8.1f}{spread:>15}{cells}{speed}{share}")
    print("(wait, views, copies, step: ms per step; wait = data time not spent making views)")
    if peaks:
        print(", ".join(f"matmul peak {p} {v / 1e9:.0f} GFLOP/s" for p, v in peaks.items()))
    for ours in (r for r in recipes if r.family == "ours"):
        for peer in (r for r in recipes if r.family != "ours" and r.precision == ours.precision):
            a, b = rates[ours.name], rates[peer.name]
            per_round = [x / y for x, y in zip(a, b, strict=True)]
            ratio = statistics.median(a) / statistics.median(b)
            print(
                f"{ours.name} / {peer.name}: {ratio:.2f}x "
                f"(per round {min(per_round):.2f}-{max(per_round):.2f}x)"
            )


def switch(text: str) -> str:
    """on/off/auto (or true/false) as a runtime setting's word."""
    words = {"on": "true", "true": "true", "off": "false", "false": "false", "auto": "auto"}
    if text.lower() not in words:
        raise argparse.ArgumentTypeError(f"{text!r} is not on, off or auto")
    return words[text.lower()]


def companion(layout: str) -> str:
    """compile when --compile is not given: auto beside an auto layout, else off, so that
    ``--channels-last off on`` compares the layouts alone."""
    return "auto" if layout == "auto" else "false"


def common_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments this benchmark shares with benchmarks/folder.py."""
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--hidden-dim", type=int, default=1024, help="projector/predictor width")
    parser.add_argument("--steps", type=int, default=5, help="timed steps per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before each round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (lightly's too)")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"], help="every pipeline")
    parser.add_argument(
        "--channels-last",
        nargs="+",
        type=switch,
        default=["false", "auto"],
        help="ours, each of on/off/auto (off: as before auto)",
    )
    parser.add_argument(
        "--compile",
        type=switch,
        default=None,
        help="ours: on/off/auto (default: auto beside --channels-last auto, else off)",
    )
    parser.add_argument(
        "--run-steps",
        type=int,
        default=None,
        help="ours under auto: the run length it chooses for (default: the preset's epochs)",
    )
    parser.add_argument(
        "--data-only", action="store_true", help="no model step: how fast views are delivered"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common_arguments(parser)
    parser.add_argument("--images", type=int, default=10000, help="source images held in memory")
    parser.add_argument("--peers", nargs="*", default=["lightly", "byol-pytorch"])
    parser.add_argument(
        "--peer-switches",
        nargs="+",
        choices=("theirs", "ours"),
        default=["theirs", "ours"],
        help="the peers as documented, and with the layout and compile ours chose under auto",
    )
    parser.add_argument(
        "--view-threads", nargs="+", type=int, default=[0], help="ours: 0 = the step's threads"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    images, name, mean, std = source_images(args.image_size, args.images)
    size, batch, hidden = args.image_size, args.batch_size, args.hidden_dim
    recipes = []
    for p in args.precision:
        auto = None
        for last, view_threads in itertools.product(args.channels_last, args.view_threads):
            config = throughput_config(
                size, batch, hidden, p, last, args.compile or companion(last)
            )
            ours = OurRecipe(
                config, images, mean, std, view_threads=view_threads, run_steps=args.run_steps
            )
            recipes.append(ours)
            auto = ours if last == "auto" else auto
        for peer in args.peers:
            for switches in args.peer_switches:
                chosen = auto.choices if switches == "ours" and auto else None
                if switches == "ours" and not (chosen and (chosen.channels_last or chosen.compile)):
                    continue  # ours chose nothing the peers lack: the documented row says it
                recipes.append(
                    peer_recipe(peer, images, size, batch, hidden, args.workers, p, chosen)
                )
    flops = {}
    if not args.data_only:
        for recipe in recipes:
            flops[recipe.name] = count_step_flops(recipe)
    for recipe in recipes:
        getattr(recipe, "prepare", lambda: None)()
    peaks = matmul_peaks(sorted(set(args.precision))) if not args.data_only else {}
    seconds = measure(recipes, args.rounds, args.warmup, args.steps, args.data_only)
    print(
        f"{name}, {size} px, batch {batch}, ResNet-18 (torchvision), heads {hidden}, "
        f"{torch.get_num_threads()} threads, {args.workers} DataLoader workers for lightly, "
        f"{args.rounds} rounds of {args.steps} steps{', data only' * args.data_only}, torch "
        f"{torch.__version__}"
    )
    report(seconds, batch, recipes, flops, peaks)


def peer_recipe(peer, images, size, batch, hidden, workers, precision, chosen):  # noqa: ANN001, ANN201
    """A peer's recipe, as its documentation gives it (``chosen`` None) or with our layout and
    compile switches (``chosen``: the SpeedChoices ours made under auto)."""
    make = {"lightly": LightlyRecipe, "byol-pytorch": ByolPytorchRecipe}[peer]
    workers = workers if peer == "lightly" else 0
    return make(images, size, batch, hidden, workers, precision, switches=chosen)


if __name__ == "__main__":
    main()

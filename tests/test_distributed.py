"""Data parallelism on this CPU machine with gloo: two processes holding half of a global batch each
train exactly like one process holding all of it (global batch norm, DDP, the target's EMA, the
views), only rank 0 writes files, runs resume across process counts, and gradient accumulation
counts the schedules in optimizer steps.

Processes are started the way torchrun starts them: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and
MASTER_PORT in the environment, and ``byol.distributed.process_group`` joins from there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from PIL import Image
from safetensors.torch import load_file

from byol import distributed, settings
from byol.cli import main
from byol.data import load_datasets
from byol.errors import ConfigError
from byol.presets import preset
from byol.run_folder import CHECKPOINT, ENCODER, read_metrics
from byol.sync_batchnorm import convert_sync_batchnorm
from byol.training.epochs import BatchedEpochs, EpochBatches
from byol.training.loop import pretrain
from byol.training.optim import build_optimizer
from byol.training.schedules import learning_rate, target_tau
from byol.training.step import accumulated_step
from byol.training.train_state import build_model
from byol.views.batched import batch_paper_views

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists(),
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)",
)
WORLD = 2
STEPS = 3
BASELINES = ("simclr", "barlow", "moco", "vicreg")
ONE = distributed.Ranks()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_torchrun_rank(rank: int, port: int, function, args: tuple) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    function(rank, *args)


def run_ranks(function, *args) -> None:
    """``function(rank, *args)`` in WORLD fresh processes, each set up as torchrun sets one up."""
    mp.spawn(_as_torchrun_rank, args=(free_port(), function, args), nprocs=WORLD, join=True)


def tiny_config(**changes):
    """ResNet-18 at 16 px with small heads: a few seconds per step pair on one CPU thread."""
    settings = dict(
        backbone="resnet18-narrow",  # 1/8-width ResNet-18: behaviour, not accuracy
        image_size=16,
        batch_size=16,
        projector_hidden_dim=32,
        predictor_hidden_dim=32,
        projection_dim=16,
        threads=1,
        num_workers=0,
        precision="fp32",
        predictor_warmup_steps=0,  # one process only (DDP cannot skip the encoder's gradients)
        schedule_epochs=0,  # schedules end with the run, as the paper's do
        projector_dim=64,  # Barlow Twins' projector, not its 8192 wide
        expander_dim=64,  # VICReg's
        queue_size=4096,  # MoCo's, as the preset's
    )
    return preset("fashion-mnist").replace(**{**settings, **changes})


def noise_images(n: int = 64) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 20, 20), dtype=torch.uint8, generator=generator)


# --- the global batch is sharded, not changed ---------------------------------------------------


def test_shard_slices_cover_the_global_batch_once():
    for world, accumulation in ((1, 1), (2, 1), (4, 2), (3, 4)):
        batch = 24 * world * accumulation
        covered = [
            i
            for rank in range(world)
            for part in distributed.shard_slices(
                batch, distributed.Ranks(rank, world), accumulation
            )
            for i in range(batch)[part]
        ]
        assert covered == list(range(batch))
    with pytest.raises(ConfigError, match="multiple of 4"):
        distributed.check_batch(30, 2, 2)


def test_per_image_batches_of_the_ranks_make_the_one_process_batches():
    one = list(EpochBatches(100, 16, seed=3, epoch=2, start_batch=1))
    shards = [
        list(EpochBatches(100, 16, 3, 2, 1, distributed.Ranks(rank, 2), accumulation_steps=2))
        for rank in range(2)
    ]
    assert len(one) == 5 and all(len(s) == 10 for s in shards)  # 2 micro-batches per step
    for b, batch in enumerate(one):
        # rank 0's two micro-batches, then rank 1's: the one-process batch, views seeds included
        assert shards[0][2 * b] + shards[0][2 * b + 1] + shards[1][2 * b] + shards[1][
            2 * b + 1
        ] == (batch)


def test_batched_views_of_the_ranks_make_the_one_process_views():
    config = tiny_config(accumulation_steps=2)
    views = batch_paper_views(config.views, config.data.image_size, (0.5,) * 3, (0.25,) * 3)
    images = noise_images()
    one = BatchedEpochs(images, views, config.replace(accumulation_steps=1))
    ranks = [BatchedEpochs(images, views, config, distributed.Ranks(r, 2)) for r in range(2)]
    epochs = zip(one.epoch(1, 0), *(r.epoch(1, 0) for r in ranks), strict=True)
    for whole, *parts in list(epochs)[:2]:
        (view_1, view_2), *_ = list(whole)
        pieces = [pair for part in parts for pair in part]  # rank 0's micro-batches, then rank 1's
        assert len(pieces) == 4 and pieces[0][0].shape[0] == 4
        # The same draws per image; only float rounding of the batched resize may differ.
        assert torch.allclose(torch.cat([p[0] for p in pieces]), view_1, atol=1e-5)
        assert torch.allclose(torch.cat([p[1] for p in pieces]), view_2, atol=1e-5)


# --- two processes train as one ----------------------------------------------------------------


def train_a_few_steps(
    config, out: Path, ranks: distributed.Ranks, dtype: torch.dtype = torch.float64, steps=STEPS
) -> None:
    """Optimizer steps in float64 (so that rounding cannot hide a wrong formula); saves the global
    losses, the averaged gradients of the last step and the model state."""
    views = batch_paper_views(config.views, config.data.image_size, (0.5,) * 3, (0.25,) * 3)
    epochs = BatchedEpochs(noise_images(), views, config, ranks)
    torch.manual_seed(config.seed)
    model = build_model(config)
    if config.method.name == "moco":
        # One batch-norm group per process: with global BN the key shuffle then changes nothing,
        # so one process and two compute the same keys (MoCo's default 2 groups emulate 2 devices).
        model.bn_splits = 1
    if ranks.world_size > 1 and config.model.sync_batchnorm:
        model = convert_sync_batchnorm(model, torch.device("cpu"))
    model = model.to(dtype)
    trained = distributed.wrap(model, torch.device("cpu"))
    optimizer = build_optimizer(model, "lars", 0.5, 1e-6)
    losses = []
    for step, micro_batches in zip(range(steps), epochs.epoch(0, 0), strict=False):
        micro_batches = [(v1.to(dtype), v2.to(dtype)) for v1, v2 in micro_batches]
        tau = target_tau(step, steps, 0.9)  # a fast target, so that the EMA shows in 3 steps
        output = accumulated_step(
            trained, optimizer, micro_batches, 0.5, tau, "fp32", config.optim.accumulation_steps
        )
        losses.append(distributed.mean_over_ranks(output.loss).item())
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    torch.save(dict(losses=losses, grads=grads, state=model.state_dict()), out)


def _two_rank_phases(rank: int, out: Path) -> None:
    with distributed.process_group(torch.device("cpu")) as (ranks, _):
        assert ranks == distributed.Ranks(rank, WORLD, rank)
        train_a_few_steps(tiny_config(), out / f"sync-{rank}.pt", ranks)
        local = tiny_config(sync_batchnorm=False)
        train_a_few_steps(local, out / f"local-{rank}.pt", ranks, steps=2)
        train_a_few_steps(tiny_config(), out / f"fp32-{rank}.pt", ranks, torch.float32, steps=1)
        gather_phase(rank, out)
        for method in BASELINES:
            config = tiny_config(method=method)
            train_a_few_steps(config, out / f"{method}-{rank}.pt", ranks, steps=2)


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory) -> Path:
    """One spawn of two processes for all the comparisons below (process start-up is the cost)."""
    out = tmp_path_factory.mktemp("ranks")
    run_ranks(_two_rank_phases, out)
    torch.set_num_threads(1)
    train_a_few_steps(tiny_config(), out / "one.pt", ONE)
    train_a_few_steps(tiny_config(), out / "one-fp32.pt", ONE, torch.float32, steps=1)
    train_a_few_steps(tiny_config(accumulation_steps=2), out / "one-accumulated.pt", ONE, steps=2)
    single_process_gather(out)
    for method in BASELINES:
        train_a_few_steps(tiny_config(method=method), out / f"{method}.pt", ONE, steps=2)
    return out


def largest_difference(a: dict, b: dict) -> float:
    """The largest absolute difference between two saved runs, over losses, gradients, weights."""
    diffs = [abs(x - y) for x, y in zip(a["losses"], b["losses"], strict=True)]
    diffs += [(a["grads"][k] - b["grads"][k]).abs().max().item() for k in a["grads"]]
    for key in a["state"]:
        if not key.endswith("num_batches_tracked"):
            diffs.append((a["state"][key] - b["state"][key]).abs().max().item())
    return max(diffs)


def test_two_processes_with_half_the_batch_each_train_as_one_process(two_rank_results):
    one = torch.load(two_rank_results / "one.pt", weights_only=True)
    ranks = [torch.load(two_rank_results / f"sync-{r}.pt", weights_only=True) for r in range(WORLD)]
    assert largest_difference(ranks[0], ranks[1]) == 0.0  # every rank holds the same model
    assert one["grads"].keys() == ranks[0]["grads"].keys()
    assert not any(k.startswith("target") for k in one["grads"])  # the target gets no gradient
    # The online network and the target (its EMA) moved apart.
    state = one["state"]
    assert (state["online_encoder.conv1.weight"] != state["target_encoder.conv1.weight"]).any()
    # Loss, gradients, online and target weights, BN running statistics after STEPS steps: the
    # losses go through float32 (byol_loss), the rest is float64.
    assert max(abs(x - y) for x, y in zip(one["losses"], ranks[0]["losses"], strict=True)) < 1e-5
    one["losses"] = ranks[0]["losses"]
    assert largest_difference(one, ranks[0]) < 1e-9


def test_global_batch_norm_keeps_float32_gradients_on_ill_conditioned_channels(two_rank_results):
    # Noise images make channels whose spread is tiny against their mean; statistics reduced in
    # float32 lost their variance there (gradients 1-10% off). torch's kernels accumulate in
    # float64 and so does ours: the gradients of the first step agree to float32 rounding.
    one = torch.load(two_rank_results / "one-fp32.pt", weights_only=True)["grads"]
    two = torch.load(two_rank_results / "fp32-0.pt", weights_only=True)["grads"]
    scale = max(g.abs().max().item() for g in one.values())
    assert max((one[k] - two[k]).abs().max().item() for k in one) < 1e-4 * scale


def test_per_device_batch_norm_over_two_processes_equals_accumulating_two_micro_batches(
    two_rank_results,
):
    # Rank r's half of each global batch is micro-batch r of one accumulating process: with
    # batch-norm statistics per device (per micro-batch) both compute the same step. This checks
    # DDP's gradient averaging and no_sync, and that accumulation averages the micro-batches.
    accumulated = torch.load(two_rank_results / "one-accumulated.pt", weights_only=True)
    local = torch.load(two_rank_results / "local-0.pt", weights_only=True)
    # BN running statistics differ by design (one process sees both halves, rank 0 only its own).
    for run in (accumulated, local):
        run["state"] = {k: v for k, v in run["state"].items() if "running" not in k}
    assert largest_difference(accumulated, local) < 1e-9
    # And per-device statistics really are another computation than global ones.
    synced = torch.load(two_rank_results / "sync-0.pt", weights_only=True)
    assert abs(local["losses"][1] - synced["losses"][1]) > 1e-4


@pytest.mark.parametrize("method", BASELINES)
def test_baselines_over_two_processes_train_as_one_process(two_rank_results, method):
    # SimCLR's negatives and Barlow Twins' cross-correlation span the global batch (gathered with
    # gradients); MoCo's queue receives every process's keys. Losses, gradients, weights, the
    # queue and its pointer after two steps match one process holding the whole batch.
    one = torch.load(two_rank_results / f"{method}.pt", weights_only=True)
    ranks = [
        torch.load(two_rank_results / f"{method}-{r}.pt", weights_only=True) for r in range(WORLD)
    ]
    assert largest_difference(ranks[0], ranks[1]) == 0.0
    assert one["grads"].keys() == ranks[0]["grads"].keys()
    # The losses go through float32 (MoCo's InfoNCE, like byol_loss), the rest is float64.
    assert max(abs(x - y) for x, y in zip(one["losses"], ranks[0]["losses"], strict=True)) < 1e-5
    one["losses"] = ranks[0]["losses"]
    assert largest_difference(one, ranks[0]) < 1e-9
    if method == "moco":  # the queue holds 2 steps x 2 views x the global batch of 16
        assert one["state"]["queue_pointer"].item() == ranks[0]["state"]["queue_pointer"] == 64


# --- gather_with_grad: what the contrastive baselines need ----------------------------------------


def contrastive_losses(z_local: torch.Tensor, z_all: torch.Tensor, rows: slice) -> torch.Tensor:
    """SimCLR-like: this rank's rows against every row of the global batch (local/global mean);
    Barlow-like: a cross-correlation over the whole global batch (the same on every rank)."""
    logits = z_local @ z_all.T / 0.5
    targets = torch.arange(z_all.shape[0])[rows]
    simclr = torch.nn.functional.cross_entropy(logits, targets)
    standardised = (z_all - z_all.mean(0)) / z_all.std(0)
    barlow = (standardised.T @ standardised / z_all.shape[0] - torch.eye(z_all.shape[1])).pow(2)
    return simclr + barlow.sum()


def gather_inputs() -> tuple[torch.nn.Linear, torch.Tensor]:
    torch.manual_seed(5)
    return torch.nn.Linear(6, 4).double(), torch.randn(8, 6, dtype=torch.float64)


def gather_phase(rank: int, out: Path) -> None:
    layer, x = gather_inputs()
    rows = slice(rank * 4, rank * 4 + 4)
    trained = distributed.wrap(layer, torch.device("cpu"))
    z_local = trained(x[rows])
    z_all = distributed.gather_with_grad(z_local)
    contrastive_losses(z_local, z_all, rows).backward()
    grads = [p.grad for p in layer.parameters()]
    torch.save(dict(z_all=z_all.detach(), grads=grads), out / f"gather-{rank}.pt")


def single_process_gather(out: Path) -> None:
    layer, x = gather_inputs()
    z = layer(x)
    assert distributed.gather_with_grad(z) is z  # one process: the identity
    contrastive_losses(z, z, slice(0, 8)).backward()
    torch.save(dict(z_all=z.detach(), grads=[p.grad for p in layer.parameters()]), out / "g.pt")


def test_gather_with_grad_gives_the_global_batch_and_its_gradient(two_rank_results):
    one = torch.load(two_rank_results / "g.pt", weights_only=True)
    for rank in range(WORLD):
        ranked = torch.load(two_rank_results / f"gather-{rank}.pt", weights_only=True)
        assert torch.allclose(ranked["z_all"], one["z_all"], atol=1e-12)
        for a, b in zip(ranked["grads"], one["grads"], strict=True):
            assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()


# --- pretrain end to end: rank-0 files, resume, across process counts --------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """64 real Fashion-MNIST images as a flat (unlabelled) folder: no kNN, so the runs are short."""
    root = tmp_path_factory.mktemp("flat")
    train, _, _ = load_datasets("fashion-mnist")
    for index in range(64):
        Image.fromarray(train.images[index, 0].numpy(), mode="L").save(root / f"{index}.png")
    return root


def run_config(folder: Path, **changes):
    return tiny_config(dataset=str(folder), epochs=2, log_every_steps=1, **changes)


@pytest.fixture(scope="module")
def one_process_run(image_folder, tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("one")
    torch.set_num_threads(1)
    result = pretrain(run_config(image_folder), run_dir, quiet=True)
    assert result.steps == 2 * 64 // 16
    return run_dir


def _pretrain_ranks(rank: int, folder: Path, out: Path) -> None:
    # One process group for three runs (pretrain uses a group it finds, as in a notebook); the
    # torchrun test below covers pretrain creating its own. Rank 1 is handed other folders for
    # the first two runs: had it written anything, they would exist.
    mine = (lambda name: out / name) if rank == 0 else (lambda name: out / f"{name}-rank-1")
    with distributed.process_group(torch.device("cpu")):
        pretrain(run_config(folder), mine("whole"), quiet=True)
        stop_after_step_1 = run_config(folder, max_minutes=1e-9)
        pretrain(stop_after_step_1, mine("cut"), quiet=True)
        if rank == 0:
            stopped = torch.load(out / "cut" / CHECKPOINT, weights_only=True)
            torch.save({"step": stopped["step"], "world_size": stopped["world_size"]}, out / "s.pt")
        pretrain(run_config(folder), out / "cut", resume=True, quiet=True)


def encoder_difference(a: Path, b: Path) -> float:
    x, y = load_file(str(a / ENCODER)), load_file(str(b / ENCODER))
    assert x.keys() == y.keys()
    return max((x[k].float() - y[k].float()).abs().max().item() for k in x)


def losses(run_dir: Path) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir) if "loss" in r}


def assert_same_early_losses(run_dir: Path, reference: Path) -> None:
    """The global-batch losses of the first steps agree to float32 rounding. Later steps drift
    apart: over a few LARS steps on 16 images float32 rounding grows (one process in float32
    against one in float64 drifts as much); exactness is the float64 test's job above."""
    ours, theirs = losses(run_dir), losses(reference)
    assert ours.keys() == theirs.keys() == set(range(1, 9))  # one line per step, rank 0 alone
    for step in (1, 2, 3):
        assert ours[step] == pytest.approx(theirs[step], abs=1e-4)


@needs_fashion_mnist
def test_two_process_pretrain_writes_from_rank_0_only_and_resumes(
    image_folder, one_process_run, tmp_path
):
    run_ranks(_pretrain_ranks, image_folder, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut", "s.pt", "whole"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    files = {"config.json", "metrics.jsonl", "tensorboard", "checkpoint.pt", "summary.json"}
    assert files | {ENCODER} <= {p.name for p in whole.iterdir()}
    assert torch.load(tmp_path / "s.pt", weights_only=True) == {"step": 1, "world_size": 2}
    assert json.loads((whole / "config.json").read_text())["model"]["sync_batchnorm"] is True
    summary = json.loads((cut / "summary.json").read_text())
    assert summary["steps"] == 8 and summary["world_size"] == 2
    # Stopped after step 1 and resumed, under two processes: the uninterrupted run, exactly.
    assert encoder_difference(cut, whole) < 1e-6
    assert losses(cut) == pytest.approx(losses(whole), abs=1e-6)
    assert_same_early_losses(whole, one_process_run)


@needs_fashion_mnist
def test_torchrun_cli_then_resume_in_one_process(image_folder, one_process_run, tmp_path):
    run_dir = tmp_path / "run"
    config, default = run_config(image_folder), preset("fashion-mnist")
    sets = []
    preset_values = settings.flatten(default)
    for path, value in settings.flatten(config).items():  # the run's config as --set overrides
        if value != preset_values[path]:
            text = ",".join(map(str, value)) if isinstance(value, tuple) else value
            sets += ["--set", f"{path}={text}"]
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]), OMP_NUM_THREADS="1")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    torchrun += ["--master_port", str(free_port())]
    launched = subprocess.run(
        [
            *torchrun,
            "-m",
            "byol",
            "pretrain",
            "--run-dir",
            str(run_dir),
            "--quiet",
            *sets,
            "--set",
            "max_minutes=1e-9",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert launched.stdout.count("run folder:") == 1  # rank 0 alone reports
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["world_size"] == 2

    # The same global batch on one process (this one: the CLI's own entry point, without another
    # interpreter's start-up): the run continues where two processes stopped.
    torch.set_num_threads(1)
    assert main(["pretrain", "--resume", str(run_dir), "--quiet", "--set", "max_minutes=0"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 8
    assert_same_early_losses(run_dir, one_process_run)


# --- gradient accumulation: schedules in optimizer steps ----------------------------------------


@needs_fashion_mnist
@pytest.mark.parametrize("views", ["batched", "per-image"])
def test_accumulation_counts_schedules_in_optimizer_steps(image_folder, tmp_path, views):
    torch.set_num_threads(1)
    config = run_config(image_folder, accumulation_steps=2, warmup_epochs=0.5, view_path=views)
    result = pretrain(config, tmp_path, quiet=True)
    total = 2 * 64 // 16  # optimizer steps: epochs x images / global batch, micro-batches aside
    assert result.steps == total
    records = [r for r in read_metrics(tmp_path) if "loss" in r]
    assert [r["step"] for r in records] == list(range(1, total + 1))
    for r in records:  # the values used by the step that ended at r["step"]
        assert r["tau"] == pytest.approx(target_tau(r["step"] - 1, total, config.schedule.tau_base))
        assert r["lr"] == pytest.approx(learning_rate(r["step"] - 1, total, 2, 16 / 256))
    # Counting micro-batches would have put tau at 1 halfway; it is still far from 1 there.
    assert records[total // 2 - 1]["tau"] < 1 - 1e-3
    # Every micro-batch ran: each optimizer step ran 2 micro-batches of 2 views through each BN.
    state = torch.load(tmp_path / CHECKPOINT, weights_only=True)["model"]
    assert state["online_encoder.bn1.num_batches_tracked"] == total * 2 * 2
    assert state["target_encoder.bn1.num_batches_tracked"] == total * 2 * 2
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["optim"]["accumulation_steps"] == 2


def test_a_global_batch_that_does_not_split_is_a_clear_error(tmp_path):
    config = tiny_config(dataset=str(tmp_path), batch_size=15, accumulation_steps=2)
    with pytest.raises(ConfigError, match="does not split into 1 process"):
        pretrain(config, tmp_path / "run", quiet=True)

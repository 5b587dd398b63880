"""``byol embed``: the embeddings of any folder of images, labelled or not, row by row with the
file's path relative to the folder, for use in other tools (``.npy`` + ``files.txt``, and
Parquet when pyarrow is installed)."""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset, IterableDataset

from byol import run_folder
from byol.backbones import format_kwargs, is_timm
from byol.checkpoint import encoder_metadata, load_encoder, timm_kwargs
from byol.config import Config, apply_overrides
from byol.config.memory import check_eval_memory
from byol.data import ImageFolderDataset, Source, known_stats, load_datasets
from byol.data.decode import UnreadableImage, decode_image
from byol.data.images import folder_stats
from byol.data.shard_files import looks_like_shards
from byol.errors import ByolError, CheckpointError
from byol.evaluation.features import extract_features
from byol.files import expand_home
from byol.runtime import resolve_device, resolve_precision
from byol.views.per_image import EvalTransform

EMBEDDINGS, FILES, PARQUET, MANIFEST = (
    "embeddings.npy",
    "files.txt",
    "embeddings.parquet",
    "embed.json",
)


@dataclasses.dataclass
class EncoderSource:
    """An encoder file, the folder outputs go to, and the config it was trained with (its
    run's, or for a bare file the architecture from its metadata)."""

    encoder_path: Path
    out_dir: Path
    config: Config
    from_run: bool

    def load(self) -> nn.Module:
        encoder = load_encoder(self.encoder_path)[0].eval()
        return encoder


def encoder_source(source: str | Path, overrides: list[str] | None = None) -> EncoderSource:
    """A run folder or an ``encoder.safetensors`` file, with ``key=value`` config overrides."""
    path = Path(source)
    if path.is_dir():
        encoder_path, out_dir = path / run_folder.ENCODER, path
    elif path.is_file() and path.suffix == ".safetensors":
        encoder_path, out_dir = path, path.parent
    else:
        raise ByolError(f"{path} is neither a run folder nor an encoder .safetensors file.")
    if not encoder_path.is_file():
        raise CheckpointError(f"{path} holds no {run_folder.ENCODER}; run `byol pretrain` first.")
    saved = out_dir / run_folder.CONFIG
    if saved.is_file():
        config = Config.load(saved)
    else:
        try:
            meta = encoder_metadata(encoder_path)
        except Exception as error:  # safetensors raises its own types for a bad header
            raise CheckpointError(
                f"{encoder_path} is not readable safetensors ({error})."
            ) from None
        config = Config().replace(backbone=meta.get("architecture", "resnet50"))
        if is_timm(config.model.backbone):  # a ViT is fed the size it was built for
            kwargs = timm_kwargs(meta)
            size = int(kwargs.pop("img_size", config.data.image_size))
            config = config.replace(backbone_kwargs=format_kwargs(kwargs), image_size=size)
        config = config.replace(cifar_stem=meta.get("cifar_stem") == "true")
    config = apply_overrides(config, overrides or [])
    config.validate()
    check_eval_memory(config, resolve_device(config.runtime.device), config.monitor.eval_batch_size)
    return EncoderSource(encoder_path, out_dir, config, saved.is_file())


class _Files(Dataset):
    """The folder's files in order, each decoded and transformed; an unreadable file yields a
    blank image and index -1, so that it can be left out and listed afterwards."""

    def __init__(self, paths: list[Path], transform: EvalTransform) -> None:
        self.paths, self.transform = paths, transform
        self.blank = torch.zeros(3, transform.image_size, transform.image_size, dtype=torch.uint8)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        try:
            return self.transform(decode_image(self.paths[i])), i
        except UnreadableImage:
            return self.transform(self.blank), -1


class _Rows(IterableDataset):
    """A dataset's items in its order, transformed, each with its row number; the names of the
    rows (a shard's sample keys, else row numbers) and of the unreadable ones are kept."""

    def __init__(self, source: Source, transform: EvalTransform) -> None:
        self.source, self.transform = source, transform
        self.names: list[str] = []
        self.skipped: list[str] = []

    def __iter__(self) -> Iterator[tuple[torch.Tensor, int]]:
        source = self.source
        if not source.streaming:
            for i in range(len(source)):
                self.names.append(str(i))
                yield self.transform(source[i][0]), i
            return
        if source.pieces() is None:
            for i, (image, _) in enumerate(source.stream()):
                self.names.append(str(i))
                yield self.transform(image), i
            return
        for piece in range(len(source.pieces())):
            for record in source.read_piece(piece):
                try:
                    image, _ = source.decode(record)
                except UnreadableImage as error:
                    self.skipped.append(str(error.path))
                    continue
                self.names.append(source.record_name(record))
                yield self.transform(image), len(self.names) - 1


def is_dataset(name: str) -> bool:
    """Whether ``byol embed`` is given tar shards or a Hugging Face dataset, not a folder."""
    return name.startswith("hf:") or looks_like_shards(name)


def embed(
    source: str | Path,
    folder: str | Path,
    out: str | Path | None = None,
    overrides: list[str] | None = None,
) -> list[Path]:
    """Write ``embeddings.npy`` (N x D float32), ``files.txt`` (row i's path, relative to
    ``folder``; for tar shards or ``hf:NAME``, its shard and key or its row number: their train
    split, streamed), ``embed.json`` (what made them) and, with pyarrow, ``embeddings.parquet``."""
    src = encoder_source(source, overrides)
    c = src.config
    device = resolve_device(c.runtime.device)
    precision = resolve_precision(
        device, c.runtime.precision, c.data.image_size, c.model.cifar_stem
    )
    if is_dataset(str(folder)):
        dataset, _, info = load_datasets(
            str(folder), in_memory=False, hf_options=c.data.hf_options()
        )
        mean, std = _pretraining_stats(c, lambda: (info.mean, info.std))
        transform = EvalTransform(c.data.image_size, mean, std, c.monitor.eval_crop_fraction)
        rows = _Rows(dataset, transform)
        encoder = src.load().to(device)
        features, _ = extract_features(encoder, rows, device, c.monitor.eval_batch_size, precision)
        files, skipped, classes = rows.names, list(info.unreadable) + rows.skipped, info.classes
        name = Path(str(folder).removeprefix("hf:")).name or "dataset"
        array = features.numpy().astype(np.float32)
    else:
        root = expand_home(folder)
        images = ImageFolderDataset(root)
        mean, std = _pretraining_stats(c, lambda: folder_stats(images)[:2])
        paths = images.files()
        transform = EvalTransform(c.data.image_size, mean, std, c.monitor.eval_crop_fraction)
        encoder = src.load().to(device)
        features, index = extract_features(
            encoder, _Files(paths, transform), device, c.monitor.eval_batch_size, precision
        )
        kept = index >= 0
        files = [paths[i].relative_to(root).as_posix() for i in index[kept].tolist()]
        done = set(index[kept].tolist())
        skipped = [str(path) for path, _ in images.unreadable]  # met while reading statistics
        skipped += [str(path) for i, path in enumerate(paths) if i not in done]
        name, classes = root.resolve().name or "folder", images.classes
        array = features[kept].numpy().astype(np.float32)
    out_dir = Path(out) if out else src.out_dir / "embed" / name
    written = _write(out_dir, array, files)
    manifest: dict[str, Any] = dict(
        encoder=str(src.encoder_path),
        folder=str(folder),
        count=len(files),
        dim=array.shape[1],
        image_size=c.data.image_size,
        mean=list(mean),
        std=list(std),
        unreadable_skipped=skipped,
        classes=classes,
    )
    run_folder.write_json(out_dir / MANIFEST, manifest)
    return [*written, out_dir / MANIFEST]


def _pretraining_stats(config: Config, own: Callable[[], tuple]) -> tuple:
    """(mean, std) the encoder's inputs were normalised with: a known dataset's, the statistics
    of the images it was pretrained on (a folder, shards, a Hugging Face dataset), or (those
    gone) the embedded images' ``own``."""
    known = known_stats(config.data.dataset)
    if known is not None:
        return known
    if is_dataset(config.data.dataset):
        try:
            info = load_datasets(
                config.data.dataset,
                config.data.data_dir or None,
                in_memory=False,
                hf_options=config.data.hf_options(),
            )[2]
            return info.mean, info.std
        except ByolError:
            return own()
    trained_on = expand_home(config.data.dataset)
    if (trained_on / "train").is_dir():
        trained_on = trained_on / "train"
    if not trained_on.is_dir():
        return own()
    return folder_stats(ImageFolderDataset(trained_on))[:2]


def _write(out_dir: Path, array: np.ndarray, files: list[str]) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.save(buffer, array)
    run_folder.write_bytes(out_dir / EMBEDDINGS, buffer.getvalue())
    run_folder.write_text(out_dir / FILES, "".join(f"{name}\n" for name in files))
    written = [out_dir / EMBEDDINGS, out_dir / FILES]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:  # Parquet is a convenience: the .npy and the file list say it all
        return written
    column = pa.FixedSizeListArray.from_arrays(pa.array(array.reshape(-1)), array.shape[1])
    table = pa.table({"file": files, "embedding": column})
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    run_folder.write_bytes(out_dir / PARQUET, sink.getvalue().to_pybytes())
    return [*written, out_dir / PARQUET]

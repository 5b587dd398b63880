"""``byol export --format onnx``: the encoder as an ONNX graph with a dynamic batch axis, checked
against the PyTorch encoder with onnxruntime on a batch of another size than the one traced."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import torch

from byol import run_folder
from byol.errors import ByolError, ConfigError
from byol.reporting.embed import encoder_source

ONNX_EXTRA = "pip install 'byol[onnx]'"
ONNX_FILE = "encoder.onnx"


def export_onnx(
    source: str | Path, out: str | Path | None = None, overrides: list[str] | None = None
) -> tuple[Path, float]:
    """Write ``encoder.onnx`` (input ``images`` N x 3 x S x S, normalised as in pretraining;
    output ``features`` N x D) into ``out`` (default RUN_DIR/export); return its path and the
    largest absolute difference between onnxruntime's and PyTorch's features."""
    try:
        import onnx  # noqa: F401 - torch's exporter needs it
        import onnxruntime
    except ImportError:
        raise ConfigError(f"ONNX export needs onnx and onnxruntime: {ONNX_EXTRA}.") from None
    src = encoder_source(source, overrides)
    encoder = src.load().float()
    size = src.config.data.image_size
    generator = torch.Generator().manual_seed(0)
    traced = torch.randn(2, 3, size, size, generator=generator)
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the tracer's notes on shape-dependent Python branches
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: the torch.export-based one needs onnxscript besides.
        torch.onnx.export(
            encoder,
            (traced,),
            buffer,
            input_names=["images"],
            output_names=["features"],
            dynamic_axes={"images": {0: "batch"}, "features": {0: "batch"}},
            dynamo=False,
        )
    out_dir = Path(out) if out else src.out_dir / run_folder.EXPORT
    path = out_dir / ONNX_FILE
    run_folder.write_bytes(path, buffer.getvalue())
    session = onnxruntime.InferenceSession(buffer.getvalue(), providers=["CPUExecutionProvider"])
    check = torch.randn(5, 3, size, size, generator=generator)  # another batch size than traced
    (got,) = session.run(None, {"images": check.numpy()})
    with torch.no_grad():
        expected = encoder(check).flatten(1).numpy()
    difference = float(np.abs(got - expected).max())
    scale = float(np.abs(expected).max())
    if got.shape != expected.shape or not difference <= 1e-3 * max(1.0, scale):
        raise ByolError(
            f"{path}: onnxruntime's features differ from PyTorch's (max abs difference "
            f"{difference:.3g}, shapes {got.shape} vs {expected.shape}); please report it."
        )
    return path, difference

"""Suite-wide: fixtures several test files share, and what one run of the suite wrote, printed
at the end (it must stay small)."""

import resource
from pathlib import Path

import pytest


def _written() -> tuple[float, float]:
    """(GB passed to write() by this process, GB of block output of it and its children)."""
    wchar = 0
    io = Path("/proc/self/io")
    if io.is_file():
        fields = dict(line.split(": ") for line in io.read_text().splitlines())
        wchar = int(fields["wchar"])
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    blocks = sum(resource.getrusage(w).ru_oublock for w in who)
    return wchar / 1e9, blocks * 512 / 1e9


FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory) -> Path:
    """256 training and 100 test Fashion-MNIST images as an image folder, one sub-folder a class."""
    if not (FASHION_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    import torch
    from PIL import Image

    from byol.data import load_datasets

    root = tmp_path_factory.mktemp("small")
    train, test, _ = load_datasets("fashion-mnist")
    for split, dataset, count in (("train", train, 256), ("test", test, 100)):
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
        for index in order[:count].tolist():
            image, label = dataset[index]
            folder = root / split / f"c{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(image[0].numpy(), mode="L").save(folder / f"{index}.png")
    return root


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: intra-op threads only add overhead on a shared 2-core machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    calls, disk = _written()
    terminalreporter.write_line(
        f"written by this run: {calls:.2f} GB through write() in the test process (files, pipes, "
        f"sockets), {disk:.2f} GB to disk by it and its children"
    )

"""`byol report`: one self-contained HTML page from a real (tiny) run, rendered by a real headless
browser whose screenshot must show the plots."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from byol.cli import main
from byol.methods.losses import COLLAPSED_BELOW
from byol.presets import preset
from byol.reporting.figures import pca_2d
from byol.reporting.html_report import build_report, collapse_warning, write_report
from byol.run_folder import save_config
from byol.training.loop import pretrain

CLASSES = ["red", "green", "blue", "grey"]
COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (128, 128, 128)]
BROWSER = next(
    (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)),
    None,
)


def coloured_folder(root: Path) -> Path:
    """train/ and test/ with one folder per class: noisy 16 px images of the class's colour."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 16), ("test", 8)):
        for name, colour in zip(CLASSES, COLOURS, strict=True):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                noise = rng.integers(-40, 40, (16, 16, 3))
                pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(root / split / name / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real run (4 steps), evaluated with `byol eval knn` and exported with `byol export`."""
    tmp = tmp_path_factory.mktemp("report")
    config = preset("fashion-mnist").replace(
        dataset=str(coloured_folder(tmp / "images")),
        backbone="resnet18-narrow",  # 1/8-width ResNet-18: behaviour, not accuracy
        image_size=16,
        batch_size=16,
        epochs=1,
        warmup_epochs=0.5,
        projector_hidden_dim=32,
        predictor_hidden_dim=32,
        projection_dim=16,
        num_workers=0,
        log_every_steps=1,
        knn_references=False,
        threads=1,
        precision="fp32",  # 16 px in bf16 meets oneDNN's NaN weight gradient (test_baselines TINY)
    )
    run = tmp / "run"
    pretrain(config, run, quiet=True)
    assert main(["eval", "knn", str(run)]) == 0
    assert main(["export", str(run), "--queries-per-class", "1"]) == 0
    return run


def embedded_pngs(page: str) -> list[Image.Image]:
    found = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    return [Image.open(io.BytesIO(base64.b64decode(data))) for data in found]


def test_report_page_holds_everything_and_nothing_external(finished_run: Path) -> None:
    path = write_report(finished_run, points=32)
    assert path == finished_run / "report.html"
    page = path.read_text()
    # example views, curves, the nearest-neighbour picture, the embedding map: real PNGs of
    # sensible size
    images = embedded_pngs(page)
    assert len(images) == 4
    assert all(img.width > 400 and img.height > 150 for img in images)
    # self-contained: no file or URL is fetched when the page opens
    assert not re.findall(r'(?:src|href)="(?!data:)', page)
    # the config, the evaluation table (from results.json), the final kNN (from summary.json)
    assert '<th>data.image_size</th><td class="num">16</td>' in page
    results = json.loads((finished_run / "results.json").read_text())
    top1 = results["datasets"][next(iter(results["datasets"]))]["byol"]["knn200_top1"]
    assert "kNN k=200" in page and f"{top1:.2f}" in page
    assert "kNN top-1, BYOL encoder (%)" in page
    assert "32 class-balanced images" in page
    assert ('id="collapse-warning"' in page) == bool(
        collapse_warning([json.loads(x) for x in (finished_run / "metrics.jsonl").open()])
    )


def test_collapse_banner_names_the_step_and_value(tmp_path: Path) -> None:
    save_config(tmp_path, preset("fashion-mnist"))
    records = [
        {"step": s, "loss": 1.0, "lr": 0.1, "tau": 0.99, "collapse": c}
        for s, c in ((1, 0.9), (2, 0.4), (3, 0.03), (4, 0.05))
    ]
    text = "".join(json.dumps(r) + "\n" for r in records) + '{"step": 5, "loss": 0.9, "colla'
    (tmp_path / "metrics.jsonl").write_text(text)  # last line cut short by a killed run
    page = build_report(tmp_path, points=0)
    banner = re.search(r'<div class="banner" id="collapse-warning">(.*?)</div>', page)
    assert banner and "fell to 0.030 at step 3" in banner.group(1)
    assert f"below {COLLAPSED_BELOW}" in banner.group(1)
    assert "has not finished" in page  # no summary.json yet
    records[2]["collapse"] = records[3]["collapse"] = 0.5
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert 'id="collapse-warning"' not in build_report(tmp_path, points=0)


def test_pca_recovers_the_direction_of_largest_variance() -> None:
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(500, 2, generator=generator) * torch.tensor([5.0, 1.0])
    basis = torch.linalg.qr(torch.randn(64, 64, generator=generator))[0][:, :2]
    features = latent @ basis.T + 0.01 * torch.randn(500, 64, generator=generator)
    coords, share = pca_2d(features)
    assert share[0] == pytest.approx(25 / 26, abs=0.02) and share[1] == pytest.approx(
        1 / 26, abs=0.01
    )
    # up to sign, the first coordinate is the latent's first (largest-variance) coordinate
    correlation = torch.corrcoef(torch.stack([coords[:, 0], latent[:, 0]]))[0, 1]
    assert abs(correlation) > 0.999


def test_report_of_a_missing_or_foreign_folder_is_one_line(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0].startswith("byol: error:") and "is not a folder" in err[0]
    assert err[1].startswith("byol: error:") and "has no config.json" in err[1]


def colourful_pixels(image: Image.Image) -> tuple[int, int]:
    """(distinct colours, pixels whose channels differ by more than 60: plot colours, not text)."""
    pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    distinct = len(np.unique(pixels, axis=0))
    return distinct, int(((pixels.max(1) - pixels.min(1)) > 60).sum())


def screenshots(
    pages: dict[Path, Path], width: int = 1200, height: int = 2600
) -> list[Image.Image]:
    """Each page -> its screenshot, the browsers started together: most of a screenshot is the
    browser's start-up, spent waiting more than computing."""
    browsers = {}
    for page, out in pages.items():
        command = [
            BROWSER,
            "--headless",
            "--no-sandbox",  # as root (CI containers) chromium refuses to start with its sandbox
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ]
        browsers[out] = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
    shots = []
    for out, browser in browsers.items():
        _, stderr = browser.communicate(timeout=120)
        assert out.is_file(), f"chromium wrote no screenshot: {stderr[-2000:]}"
        shots.append(Image.open(out))
    return shots


@pytest.mark.skipif(BROWSER is None, reason="no chromium: apt-get install chromium (setup.sh does)")
def test_report_renders_in_a_headless_browser_with_its_plots(
    finished_run: Path, tmp_path: Path
) -> None:
    page = write_report(finished_run, tmp_path / "report.html", points=32)
    # The same page without its pictures: text and tables only.
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r'<img [^>]*src="data:[^"]*">', "", page.read_text()))
    shot, bare_shot = screenshots({page: tmp_path / "shot.png", bare: tmp_path / "bare.png"})
    assert shot.size == (1200, 2600)
    distinct, colourful = colourful_pixels(shot)
    bare_distinct, bare_colourful = colourful_pixels(bare_shot)
    assert distinct > 1000 and colourful > 20000, (distinct, colourful)
    assert colourful > 10 * max(bare_colourful, 1) and distinct > 3 * bare_distinct

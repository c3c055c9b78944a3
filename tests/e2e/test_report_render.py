"""The HTML reports of `score --report` and `evaluate --report`, rendered by headless Chromium (Debian's
package, installed by `make system-deps`): the screenshot is not blank and shows flags (red) and, for a
labeled corpus, label windows (yellow)."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.e2e
RNNWATCH = [sys.executable, "-m", "rnnwatch.consumer.cli"]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    assert found, "chromium is missing: `make system-deps` installs the Debian package"
    return found


def _screenshot(page: Path, png: Path, tmp_path: Path) -> np.ndarray:
    out = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1200,1000", f"--screenshot={png}",
         page.resolve().as_uri()],
        capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and png.exists(), out.stderr[-2000:]
    return np.asarray(Image.open(png).convert("RGB"), dtype=np.int64)


def _colour_pixels(img: np.ndarray, rgb: tuple[int, int, int], tol: int = 40) -> int:
    return int((np.abs(img - np.array(rgb)).max(axis=2) <= tol).sum())


def _write_series(path: Path) -> None:
    rng = np.random.default_rng(4)
    values = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 500)))
    values[400] *= 1.3
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["timestamp", "value"])
        w.writerows([f"2020-01-01T{i // 60:02d}:{i % 60:02d}:00Z", f"{v:.4f}"] for i, v in enumerate(values))


def test_score_report_renders_with_flags(tmp_path: Path, bundled_model: Path) -> None:
    src, report = tmp_path / "in.csv", tmp_path / "report.html"
    _write_series(src)
    out = subprocess.run([*RNNWATCH, "score", "--model", str(bundled_model), "--input", str(src), "--output",
                          str(tmp_path / "out.csv"), "--report", str(report)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    img = _screenshot(report, tmp_path / "score.png", tmp_path)
    assert img.std() > 5
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert _screenshot(blank, tmp_path / "blank.png", tmp_path).std() < 1  # what the check tells apart
    assert _colour_pixels(img, (31, 119, 180)) > 200  # the value line
    assert _colour_pixels(img, (214, 39, 40)) > 20  # flags


def test_evaluate_report_renders_with_windows_and_flags(tmp_path: Path, tiny_corpus: Path) -> None:
    report = tmp_path / "eval.html"
    out = subprocess.run([*RNNWATCH, "evaluate", "--corpus", str(tiny_corpus), "--jobs", "1", "--hidden", "8",
                          "--epochs", "3", "--output", str(tmp_path / "eval.json"), "--report", str(report)],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, out.stderr
    text = report.read_text()
    assert text.count("<svg") == 2 and text.count('class="window"') == 2
    img = _screenshot(report, tmp_path / "eval.png", tmp_path)
    assert img.std() > 5
    assert _colour_pixels(img, (250, 226, 160), tol=30) > 200  # label windows (yellow at 35 % on white)
    assert _colour_pixels(img, (214, 39, 40)) > 20  # flags

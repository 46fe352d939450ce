"""The per-image explorer in a real JupyterLab, driven through headless Chromium (Playwright).

Starts JupyterLab on 127.0.0.1 (empty token, a free port, a temporary notebook folder and
Jupyter/IPython dirs, the venv's kernel), opens a notebook that writes a 3D run directory and
shows an explorer, runs it, moves the slice slider with the keyboard and checks that the overlay
image changed. Uses Debian's chromium (``apt-get install chromium``), never a downloaded browser.
Skipped without /usr/bin/chromium unless ``CALIBTUT_REQUIRE_BROWSER=1`` (CI), which fails instead.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BUILD_RUN = """\
import torch
from calibtut import metrics
from calibtut.runs import RunDir, run_path

generator = torch.Generator().manual_seed(0)
names = ["background", "tumour"]
labels = torch.zeros((2, 24, 24, 6), dtype=torch.long)
labels[0, 6:18, 6:18, 1:5] = 1
labels[1, 4:12, 8:20, 2:6] = 1
target = torch.nn.functional.one_hot(labels, 2).movedim(-1, 1).float()
probs = torch.softmax(4 * target + 1.5 * torch.randn(target.shape, generator=generator), 1)
results = metrics.image_results(probs, target)
ids = ["case_000", "case_001"]
run = RunDir(run_path("runs", "synthetic", "hard", 0))
run.write_config({"dataset": "synthetic", "loss": "hard", "seed": 0, "class_names": names,
                  "num_bins": 20, "activation": "softmax"})
run.write_results(results, ids, names, [0, 1])
for b, image_id in enumerate(ids):
    run.write_prediction(image_id, (labels[b] + 0.3 * torch.randn(labels[b].shape)).numpy(),
                         labels[b].numpy(), probs[b].argmax(0).numpy(), probs[b].amax(0).numpy())
"""
SHOW_EXPLORER = """\
from calibtut.widgets import ImageExplorer

explorer = ImageExplorer(run)
explorer
"""
# images inside the explorer's Output widgets (output areas nested in the cell's output area)
IMAGES = ".jp-OutputArea .jp-OutputArea img"
OUTPUT_IMAGES = f"Array.from(document.querySelectorAll({IMAGES!r}))"


@pytest.fixture
def chromium() -> Path:
    if not CHROMIUM.is_file():
        reason = f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)"
        if os.environ.get("CALIBTUT_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (CALIBTUT_REQUIRE_BROWSER=1 requires the browser test)")
        pytest.skip(reason)
    return CHROMIUM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def jupyter_lab(tmp_path: Path) -> Iterator[str]:
    """JupyterLab serving a folder with the explorer notebook; the server group dies at teardown."""
    folder = tmp_path / "notebooks"
    folder.mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell(BUILD_RUN),
        nbformat.v4.new_code_cell(SHOW_EXPLORER),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}  # fmt: skip
    nbformat.write(notebook, folder / "explorer.ipynb")
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                      ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")):  # fmt: skip
        env[name] = str(tmp_path / sub)
    port = free_port()
    log = open(tmp_path / "jupyter.log", "w")  # noqa: SIM115 (closed at teardown)
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", "--ServerApp.port_retries=0", "--IdentityProvider.token=",
         f"--ServerApp.root_dir={folder}", "--LabApp.expose_app_in_browser=True",
         *(["--allow-root"] if os.geteuid() == 0 else [])],
        cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/status", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError):
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail(
                        f"JupyterLab did not start:\n{(tmp_path / 'jupyter.log').read_text()}"
                    )
                time.sleep(0.5)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may have exited already
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()


def test_explorer_slider_redraws_in_jupyterlab(chromium, jupyter_lab, tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1100})
            page.set_default_timeout(60_000)
            page.goto(f"{jupyter_lab}/lab/tree/explorer.ipynb")
            page.wait_for_function("window.jupyterapp && document.querySelector('.jp-Notebook')")
            page.wait_for_selector("text=| Idle")  # kernel up: running now asks no questions
            page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")

            # the explorer shows its metrics table, the diagram and the overlay (two images)
            page.wait_for_function(f"{OUTPUT_IMAGES}.length >= 2", timeout=90_000)
            page.wait_for_selector(".widget-html-content >> text=case_000")
            assert "background" in page.inner_text(".widget-html-content")  # the first class
            diagram, overlay = page.evaluate(f"{OUTPUT_IMAGES}.map(img => img.src)")
            readout = page.locator(".widget-readout").first
            start = int(readout.inner_text())

            # keyboard on the slider handle: one slice on, then the overlay is redrawn
            handle = page.locator(".noUi-handle").first
            handle.focus()
            handle.press("ArrowRight")
            page.wait_for_function(
                f"{OUTPUT_IMAGES}.length >= 2 && {OUTPUT_IMAGES}[1].src !== {overlay!r}",
                timeout=30_000,
            )
            assert int(readout.inner_text()) == start + 1
            images = page.evaluate(f"{OUTPUT_IMAGES}.map(img => img.src)")
            assert images[0] == diagram  # the diagram does not depend on the slice
            assert images[1].startswith("data:image/png;base64,")
            page.locator(IMAGES).nth(1).scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "explorer.png"), full_page=True)
        finally:
            browser.close()
    assert (tmp_path / "explorer.png").stat().st_size > 10_000

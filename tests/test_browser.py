"""The course's real notebooks 02 and 08 in a real JupyterLab, driven through headless Chromium.

The notebooks are copied unchanged from ``notebooks/`` into a temporary course folder
(``<tmp>/notebooks``), beside small evaluated runs in ``<tmp>/runs/demo/synthetic`` (where
notebook 08 looks, ``run_root = "../runs"``; written from model outputs by
:func:`fakes.model_run`, 3D so that the slice slider shows). JupyterLab serves that folder
(127.0.0.1, empty token, its own Jupyter/IPython/settings dirs, the venv's kernel); Chromium
opens each notebook and runs every cell from the Run menu. Then every kind of control is used as
a student would (mouse and keyboard: sliders, dropdowns, a multi-select, toggle buttons, lists,
buttons), and each time what is drawn is checked against what that state must show: the numbers
in the text and tables against hand computations from the runs' files, and each figure's PNG
against the one the package draws for that state here (so a figure must both change and be the
right one). No cell may show an error or write to stderr, the browser must log no page error
and the kernel no traceback.

Uses Debian's chromium (``apt-get install chromium``), never a downloaded browser. Skipped
without /usr/bin/chromium unless ``CALIBTUT_REQUIRE_BROWSER=1`` (CI), which fails instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from fakes import model_run  # noqa: E402
from reference import as_sums, direct_errors, direct_histogram, hard_bin, soft_shares  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PLAYGROUND = "02_hard_and_soft_binning"
EXPLORING = "08_exploring_reliability"
LOSSES = ("baseline", "hard", "soft")
CLASSES = ("organ", "ring")
N_IMAGES = 6
SHAPE = (16, 16, 6)  # 3D: the explorer shows its slice slider
SETTINGS = {
    # every cell in the page, so that locators see them all (no virtual scrolling)
    "@jupyterlab/notebook-extension/tracker": {"windowingMode": "none"},
    # no news or update check: the browser must not reach out (and log errors when it cannot)
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
}


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """``<tmp>/notebooks`` with notebooks 02 and 08 as committed, ``<tmp>/runs/demo/synthetic``
    with an evaluated baseline, hard and soft run (six 3D test images, every prediction saved)."""
    root = tmp_path_factory.mktemp("course")
    (root / "notebooks").mkdir()
    for name in (PLAYGROUND, EXPLORING):
        shutil.copy(NOTEBOOKS / f"{name}.ipynb", root / "notebooks")
    for loss in LOSSES:
        model_run(
            root / "runs" / "demo", loss, n_images=N_IMAGES, shape=SHAPE,
            class_names=("background", *CLASSES), score_background=False,
        )  # fmt: skip
    return root


@pytest.fixture(scope="module")
def jupyter_lab(course: Path) -> Iterator[tuple[str, Path]]:
    """JupyterLab serving the course's notebooks; (its URL, its log). The server's process group
    (with its kernels) dies at teardown."""
    folder = course / "notebooks"
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # the inline backend
    env["OMP_NUM_THREADS"] = "1"
    for name, sub in (("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"),
                      ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython"),
                      ("JUPYTERLAB_SETTINGS_DIR", "settings"),
                      ("JUPYTERLAB_WORKSPACES_DIR", "workspaces")):  # fmt: skip
        env[name] = str(course / sub)
    for plugin, values in SETTINGS.items():
        path = course / "settings" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(values))
    port = free_port()
    log_path = course / "jupyter.log"
    log = open(log_path, "w")  # noqa: SIM115 (closed at teardown)
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
                    pytest.fail(f"JupyterLab did not start:\n{log_path.read_text()}")
                time.sleep(0.5)
        yield url, log_path
    finally:
        with contextlib.suppress(ProcessLookupError):  # the group may have exited already
            os.killpg(server.pid, signal.SIGTERM)  # the server and the kernels it started
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        log.close()


@pytest.fixture(scope="module")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


# --- driving JupyterLab ---

EMPTY_SVG = '<svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"/>'
NOTEBOOK = "window.jupyterapp.shell.currentWidget"
KERNEL_ERRORS = f"""() => {{
    window.kernelErrors = [];
    const kernel = {NOTEBOOK}.sessionContext.session.kernel, control = new Set();
    // JupyterLab's widget manager probes a new kernel for ipywidgets' control comm; before the
    // notebook imports ipywidgets, the kernel says on stderr that it has none (harmless)
    kernel.anyMessage.connect((_, {{msg, direction}}) => {{
        if (direction === 'send' && msg.header.msg_type === 'comm_open'
            && msg.content.target_name === 'jupyter.widget.control') control.add(msg.content.comm_id);
    }});
    const harmless = line => line === 'No such comm target registered: jupyter.widget.control'
        || [...control].some(id => line === 'No such comm: ' + id);
    kernel.iopubMessage.connect((_, msg) => {{
        const type = msg.header.msg_type, content = msg.content;
        if (type === 'error') window.kernelErrors.push(content.ename + ': ' + content.evalue);
        if (type === 'stream' && content.name === 'stderr')
            window.kernelErrors.push(...content.text.split('\\n').map(l => l.trim())
                                     .filter(l => l && !harmless(l)));
    }});
}}"""
CELL_OUTPUTS = f"""() => {NOTEBOOK}.content.widgets.map((cell, i) => ({{
    index: i, type: cell.model.type, count: cell.model.type === 'code' ? cell.model.executionCount : 0,
    outputs: cell.model.type === 'code' ? cell.model.outputs.toJSON() : [],
}}))"""


class Lab:
    """One notebook open in JupyterLab, and what the page and the kernel logged meanwhile."""

    def __init__(self, browser, url: str, log_path: Path, name: str) -> None:
        self.page = browser.new_page(viewport={"width": 1500, "height": 1100})
        self.page.set_default_timeout(30_000)
        self.log_path, self.log_start = log_path, log_path.stat().st_size
        self.page_errors: list[str] = []
        self.page.on("pageerror", lambda error: self.page_errors.append(str(error)))
        self.page.on(
            "console",
            lambda m: self.page_errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        # the notebooks' badges and links point outside: answer with an empty image, so that the
        # page works the same offline (where a failed load would log a console error)
        self.external: list[str] = []
        self.page.route(lambda target: not target.startswith(url), self._outside)
        self.url, self.name = url, name
        # a workspace of its own, so that no other notebook is restored beside this one
        self.page.goto(f"{url}/lab/workspaces/{name[:2]}/tree/{name}.ipynb?reset")
        self.page.wait_for_function(
            f"window.jupyterapp && {NOTEBOOK} && {NOTEBOOK}.sessionContext?.session?.kernel"
            f"?.status === 'idle'",
            timeout=60_000,
        )
        # every error and stderr message of the kernel, also those of widget callbacks (JupyterLab
        # shows these in no cell, only in its log console)
        self.page.evaluate(KERNEL_ERRORS)

    def _outside(self, route) -> None:
        self.external.append(route.request.url)
        route.fulfill(status=200, content_type="image/svg+xml", body=EMPTY_SVG)

    def run_all(self, timeout_ms: int = 150_000) -> None:
        """Run > Run All Cells, from the menu; wait until every code cell has run."""
        self.page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Run$")).click()
        self.page.locator(".lm-Menu-itemLabel", has_text=re.compile("^Run All Cells$")).click()
        self.page.wait_for_function(
            f"""() => {{ const nb = {NOTEBOOK};
                return nb.sessionContext.session?.kernel?.status === 'idle' && nb.content.widgets
                    .filter(c => c.model.type === 'code').every(c => c.model.executionCount);
            }}""",
            timeout=timeout_ms,
            polling=500,
        )

    def cell(self, source: str):
        """The cell whose source contains ``source``."""
        index = self.page.evaluate(
            f"s => {NOTEBOOK}.content.widgets.findIndex(c => c.model.sharedModel.getSource()"
            ".includes(s))",
            source,
        )
        assert index >= 0, f"no cell contains {source!r}"
        return self.page.locator(".jp-Notebook .jp-Cell").nth(index)

    def assert_clean(self) -> None:
        """No error output, nothing on stderr, no page error, no kernel traceback."""
        self.page.wait_for_function(f"{NOTEBOOK}.sessionContext.session?.kernel?.status === 'idle'")
        bad = [
            (cell["index"], output)
            for cell in self.page.evaluate(CELL_OUTPUTS)
            for output in cell["outputs"]
            if output["output_type"] == "error"
            or (output["output_type"] == "stream" and output.get("name") == "stderr")
        ]
        assert not bad, f"cells with errors or stderr: {bad}"
        assert not self.page_errors, self.page_errors
        kernel = self.page.evaluate("window.kernelErrors")
        assert not kernel, f"the kernel reported: {kernel}"
        with open(self.log_path) as log:
            log.seek(self.log_start)
            server = log.read()
        assert "Traceback" not in server, server

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, kind, *_) -> None:
        if kind is not None:  # what the page showed when the test failed, beside the log
            with contextlib.suppress(Exception):
                self.page.screenshot(path=str(self.log_path.with_name(f"failed-{self.name}.png")),
                                     full_page=True)  # fmt: skip
        self.close()

    def close(self) -> None:
        """Close the page and shut the notebook's kernel down (it would hold memory and CPU)."""
        kernel = self.page.evaluate(f"{NOTEBOOK}.sessionContext.session?.kernel?.id")
        self.page.close()
        if kernel:
            request = urllib.request.Request(f"{self.url}/api/kernels/{kernel}", method="DELETE")
            with contextlib.suppress(urllib.error.URLError):
                urllib.request.urlopen(request, timeout=10).close()


def options(select) -> list[str]:
    """A select's option labels (ipywidgets writes their spaces as no-break spaces)."""
    return [t.replace("\xa0", " ").strip() for t in select.locator("option").all_text_contents()]


def selected(select) -> list[str]:
    texts = select.evaluate("s => [...s.selectedOptions].map(o => o.text)")
    return [t.replace("\xa0", " ").strip() for t in texts]


def image_src(output) -> str:
    """The PNG an Output widget shows, as a data URL (the one image in it)."""
    (src,) = output.locator("img").evaluate_all("imgs => imgs.map(i => i.src)")
    return src


def wait_for_image(output, expected: str, before: str | None = None) -> str:
    """Wait until the Output widget shows exactly the PNG ``expected`` (a data URL), which must
    differ from the one shown ``before`` the control moved; returns it."""
    from playwright.sync_api import TimeoutError

    assert expected != before, "the control should have changed the figure"
    try:
        output.page.wait_for_function(
            "([el, png]) => { const i = el.querySelectorAll('img');"
            " return i.length === 1 && i[0].src === png; }",
            arg=[output.element_handle(), expected],
            timeout=20_000,
        )
    except TimeoutError:
        shown = output.locator("img").evaluate_all("imgs => imgs.map(i => i.src.slice(-40))")
        raise AssertionError(f"not the expected figure: shown {shown}") from None
    return expected


def wait_for_text(locator, pattern: str) -> str:
    """Wait until the element's text matches ``pattern`` (found again on each try: an HTML
    widget replaces its content); returns the text."""
    from playwright.sync_api import expect

    expect(locator).to_have_text(re.compile(pattern))
    return locator.text_content()


def png_of(fig) -> str:
    """What the explorers show for ``fig``: its PNG at their resolution, as a data URL."""
    import matplotlib.pyplot as plt

    from calibtut.widgets._common import _figure_output

    try:
        return "data:image/png;base64," + _figure_output(fig)["data"]["image/png"]
    finally:
        plt.close(fig)


def shown_number(value: float) -> str:
    """A number as the explorers' tables print it (a dash where undefined)."""
    return "–" if np.isnan(value) else f"{value:.4f}"


def read_table(table, keys: list[tuple[str, str]] | None = None) -> dict:
    """An explorer's table as ``{(run, class): {column: text}}``, read in one step (an update
    replaces the whole table); with ``keys``, wait until its rows are those."""
    script = """t => ({head: [...t.querySelectorAll('th')].map(h => h.textContent.trim()),
        rows: [...t.querySelectorAll('tbody tr')].map(r =>
            [...r.querySelectorAll('td')].map(d => d.textContent.trim()))})"""
    deadline = time.monotonic() + 20
    while True:
        read = table.evaluate(script)
        rows = {(r[0], r[1]): dict(zip(read["head"][2:], r[2:], strict=True))
                for r in read["rows"]}  # fmt: skip
        if keys is None or list(rows) == keys or time.monotonic() > deadline:
            assert keys is None or list(rows) == keys, (list(rows), keys)
            return rows
        time.sleep(0.2)


def png_size(path: Path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def press(handle, key: str, times: int = 1) -> None:
    handle.focus()
    for _ in range(times):
        handle.press(key)


# --- notebook 02: the binning playground ---


def example_loss(p: float, target: int, num_bins: int, soft: bool) -> float:
    """The playground example's mL1-ACE by hand: eight values plus ``p``, equal-width bins with
    MONAI's edges, soft shares between centres (a soft bin under 0.01 is empty)."""
    from calibtut.views import EXAMPLE_PROBS, EXAMPLE_TARGETS

    values = np.array([*EXAMPLE_PROBS, p])
    targets = np.array([*EXAMPLE_TARGETS, target], dtype=float)
    weights = np.zeros((values.size, num_bins))
    for i, v in enumerate(values):
        if soft:
            for k, w in soft_shares(v, num_bins).items():
                weights[i, k] = w
        else:
            weights[i, hard_bin(np.float32([v]), num_bins)[0]] = 1
    count = weights.sum(0)
    occupied = count >= (0.01 if soft else 1e-12)
    gaps = np.abs(weights.T @ values - weights.T @ targets)[occupied] / count[occupied]
    return gaps.mean()


def assert_playground(summary: str, p: float, num_bins: int, binning: str, target: int) -> None:
    """The summary line against hand computations: the value's shares, the loss and d loss/dp
    (central differences of the hand-computed loss)."""
    soft = binning == "soft"
    match = re.fullmatch(
        r"p = ([0-9.]+) goes to (.+); mL1-ACE \((\w+)\) = ([0-9.]+); ∂loss/∂p = ([-+0-9.]+)",
        summary.strip(),
    )
    assert match, summary
    assert float(match[1]) == pytest.approx(p) and match[3] == binning
    shares = {int(k): float(w) for k, w in re.findall(r"bin (\d+) \(([0-9.]+)\)", match[2])}
    if soft:
        expected = {k: w for k, w in soft_shares(p, num_bins).items() if w > 0}
    else:
        expected = {int(hard_bin(np.float32([p]), num_bins)[0]): 1.0}
    assert shares.keys() == expected.keys(), (shares, expected)
    for k, w in expected.items():
        assert shares[k] == pytest.approx(w, abs=0.0051)
    assert float(match[4]) == pytest.approx(example_loss(p, target, num_bins, soft), abs=5.1e-5)
    h = 1e-6
    slope = (example_loss(p + h, target, num_bins, soft)
             - example_loss(p - h, target, num_bins, soft)) / (2 * h)  # fmt: skip
    assert float(match[5]) == pytest.approx(slope, abs=2e-4)


def test_notebook_02_playground_follows_every_control(browser, jupyter_lab, course):
    url, log = jupyter_lab
    with Lab(browser, url, log, PLAYGROUND) as lab:
        playground(lab, course)


def playground(lab: Lab, course: Path) -> None:
    from calibtut.views import binning_example

    lab.run_all()
    lab.assert_clean()
    cell = lab.cell("playground = BinningPlayground(")
    summary, output = cell.locator(".calibtut-summary"), cell.locator(".calibtut-output")
    binning, target = cell.locator(".calibtut-binning"), cell.locator(".calibtut-target")

    def expect(p: float, num_bins: int, kind: str, label: int, before: str | None) -> str:
        expected = png_of(binning_example(p, num_bins, kind, label).figure)
        shown = wait_for_image(output, expected, before)
        wait_for_text(summary, rf"p = {p:.3f} .*\({kind}\)")
        assert_playground(summary.text_content(), p, num_bins, kind, label)
        assert binning.locator(".mod-active").text_content().strip() == kind
        return shown

    # as the notebook builds it (soft; the later cells leave the live widget alone)
    shown = expect(0.37, 5, "soft", 1, None)
    saved = json.loads((course / "runs" / "course" / f"{PLAYGROUND}.json").read_text())
    assert saved["playground"]["widget_binning"] == "soft"

    # slider: the p handle one step (0.005) right with the keyboard
    p_handle, bins_handle = (
        cell.locator(".calibtut-value .noUi-handle"),
        cell.locator(".calibtut-num-bins .noUi-handle"),
    )
    press(p_handle, "ArrowRight")
    shown = expect(0.375, 5, "soft", 1, shown)
    # toggle: hard binning (the value wholly in bin 1)
    binning.get_by_role("button", name="hard").click()
    shown = expect(0.375, 5, "hard", 1, shown)
    # slider: 5 -> 6 bins (0.375 in bin 2)
    press(bins_handle, "ArrowRight")
    shown = expect(0.375, 6, "hard", 1, shown)
    # toggle: the value's target 1 -> 0 (the loss and gradient change, its bin does not)
    target.get_by_role("button", name="0").click()
    shown = expect(0.375, 6, "hard", 0, shown)
    # back to soft, and the value dragged with the mouse to the far right (p = 1)
    binning.get_by_role("button", name="soft").click()
    shown = expect(0.375, 6, "soft", 0, shown)
    box = p_handle.bounding_box()
    track = cell.locator(".calibtut-value .noUi-target").bounding_box()
    lab.page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    lab.page.mouse.down()
    lab.page.mouse.move(track["x"] + track["width"] + 40, box["y"] + box["height"] / 2, steps=8)
    lab.page.mouse.up()
    expect(1.0, 6, "soft", 0, shown)
    lab.assert_clean()


# --- notebook 08: the image and dataset explorers ---


def runs_of(course: Path) -> dict:
    from calibtut.runs import RunDir

    return {
        loss: RunDir(course / "runs" / "demo" / "synthetic" / loss / "seed_0") for loss in LOSSES
    }


def merged_sums(run, num_bins: int) -> np.ndarray:
    """The run's saved bin sums merged into ``num_bins`` (neighbours added), by hand."""
    sums = as_sums(run.results().bins)
    return sums.reshape(*sums.shape[:3], num_bins, -1).sum(-1)


def class_mean_ace(run, classes=CLASSES, num_bins: int = 20) -> pd.Series:
    """Per image, the ACE averaged over ``classes``, from the bins by hand."""
    ace = direct_errors(merged_sums(run, num_bins))["ace"]
    positions = [run.results().class_names.index(c) for c in classes]
    return pd.Series(np.nanmean(ace[:, positions], 1), index=run.results().image_ids)


def ranked_ids(listed: list[str]) -> list[tuple[str, float]]:
    """The image list's entries, ``"<id>   <value>"``, as (id, value)."""
    return [(text.split()[0], float(text.split()[1])) for text in listed]


def test_notebook_08_explorers_follow_every_control(browser, jupyter_lab, course):
    url, log = jupyter_lab
    with Lab(browser, url, log, EXPLORING) as lab:
        explorers(lab, course)


def explorers(lab: Lab, course: Path) -> None:
    from calibtut import plots, views

    runs = runs_of(course)
    lab.run_all()
    lab.assert_clean()
    page = lab.page
    explorer = lab.cell("images = ImageExplorer(found)")
    caption = explorer.locator(".calibtut-metrics caption")
    metrics = explorer.locator(".calibtut-metrics table")
    diagrams, overlay = (
        explorer.locator(".calibtut-diagram-output"),
        explorer.locator(".calibtut-overlay-output"),
    )
    image_list = explorer.locator(".calibtut-image select")

    def metrics_rows(runs_shown, classes_shown) -> dict[tuple[str, str], dict[str, str]]:
        return read_table(metrics, [(r, c) for r in runs_shown for c in classes_shown])

    def expect_diagrams(chosen: list[str], image_id: str, classes, num_bins=None, before=None):
        expected = views.reliability_diagrams(
            {loss: runs[loss] for loss in chosen}, image_id, classes, num_bins,
            title=f"image {image_id}",
        )  # fmt: skip
        return wait_for_image(diagrams, png_of(expected), before)

    def expect_overlay(chosen, image_id: str, channel, slice_index, before=None, region=None):
        selection = {loss: runs[loss] for loss in chosen}
        expected = png_of(views.overlays(selection, image_id, channel, slice_index, -1, region))
        return wait_for_image(overlay, expected, before)

    # after Run All: the image the soft loss changed most (by hand), all classes, every run
    soft_change = (class_mean_ace(runs["soft"]) - class_mean_ace(runs["baseline"])).abs()
    most_changed = soft_change.idxmax()
    wait_for_text(caption, f"^{most_changed} · 20 bins$")
    per_image = {loss: pd.read_csv(run.per_image_path) for loss, run in runs.items()}
    rows = metrics_rows(LOSSES, CLASSES)
    for loss, table in per_image.items():
        for row in table[table.image_id == most_changed].itertuples():
            assert rows[(loss, row.class_name)]["ACE"] == shown_number(row.ace)
            assert rows[(loss, row.class_name)]["Dice"] == shown_number(row.dice)
    drawn = expect_diagrams(list(LOSSES), most_changed, None)
    arrays = runs["baseline"].prediction(most_changed)
    busiest = plots.busiest_slice(arrays)
    slice_readout = explorer.locator(".calibtut-slice .widget-readout")
    assert int(slice_readout.text_content()) == busiest
    shown = expect_overlay(list(LOSSES), most_changed, None, busiest)

    # multi-select: baseline and soft only (a row of diagrams and overlays each)
    explorer.locator(".calibtut-runs select").select_option(label=["baseline", "soft"])
    drawn = expect_diagrams(["baseline", "soft"], most_changed, None, before=drawn)
    metrics_rows(["baseline", "soft"], CLASSES)
    shown = expect_overlay(["baseline", "soft"], most_changed, None, busiest, before=shown)

    # dropdown: the ring alone (its probability map in the overlay)
    explorer.locator(".calibtut-class-index select").select_option(label="ring")
    drawn = expect_diagrams(["baseline", "soft"], most_changed, ["ring"], before=drawn)
    metrics_rows(["baseline", "soft"], ["ring"])
    shown = expect_overlay(["baseline", "soft"], most_changed, "ring", busiest, before=shown)

    # slider: one slice on with the keyboard (the overlay only)
    press(explorer.locator(".calibtut-slice .noUi-handle"), "ArrowRight")
    shown = expect_overlay(["baseline", "soft"], most_changed, "ring", busiest + 1, before=shown)
    assert int(slice_readout.text_content()) == busiest + 1
    assert image_src(diagrams) == drawn

    # range slider: the zoom box's last row five rows up (rows 0-10), then the button: all of it
    press(explorer.locator(".calibtut-zoom-rows .noUi-handle-upper"), "ArrowLeft", times=5)
    args = (["baseline", "soft"], most_changed, "ring", busiest + 1)
    shown = expect_overlay(*args, before=shown, region=(0, 11, 0, SHAPE[1]))
    explorer.locator(".calibtut-unzoom").click()
    shown = expect_overlay(*args, before=shown)

    # dropdown: sort by ACE, largest first, each id with its value (the baseline's ring ACE)
    explorer.locator(".calibtut-sort select").select_option(label="ACE")
    by_hand = class_mean_ace(runs["baseline"], ["ring"]).sort_values(ascending=False)
    page.wait_for_function(
        "el => /\\d\\.\\d{4}$/.test(el.options[0].text.trim())", arg=image_list.element_handle()
    )
    listed = ranked_ids(options(image_list))
    assert [i for i, _ in listed] == list(by_hand.index)
    np.testing.assert_allclose([v for _, v in listed], by_hand.to_numpy(), atol=5e-5)
    assert "of 6 images" in explorer.locator(".calibtut-ranked-by").text_content()

    # toggle: smallest first
    explorer.locator(".calibtut-order").get_by_role("button", name="smallest first").click()
    page.wait_for_function(
        "([el, first]) => el.options[0].text.trim().startsWith(first)",
        arg=[image_list.element_handle(), by_hand.index[-1]],
    )
    assert [i for i, _ in ranked_ids(options(image_list))] == list(by_hand.index[::-1])

    # range slider: the lower handle to the top (End): only the image with the largest ACE
    lower = explorer.locator(".calibtut-within .noUi-handle-lower")
    press(lower, "End")
    wait_for_text(explorer.locator(".calibtut-ranked-by"), "1 of 6 images")
    assert [i for i, _ in ranked_ids(options(image_list))] == [by_hand.index[0]]
    wait_for_text(caption, f"^{by_hand.index[0]} · ")
    drawn = expect_diagrams(["baseline", "soft"], by_hand.index[0], ["ring"])
    press(lower, "Home")
    wait_for_text(explorer.locator(".calibtut-ranked-by"), "6 of 6 images")

    # list and buttons: the second smallest, then next, then previous
    ascending = list(by_hand.index[::-1])
    image_list.select_option(index=1)
    wait_for_text(caption, f"^{ascending[1]} · 20 bins$")
    drawn = expect_diagrams(["baseline", "soft"], ascending[1], ["ring"], before=drawn)
    explorer.locator(".calibtut-next").click()
    wait_for_text(caption, f"^{ascending[2]} · ")
    assert explorer.locator(".calibtut-position").text_content().strip() == "3 of 6"
    drawn = expect_diagrams(["baseline", "soft"], ascending[2], ["ring"], before=drawn)
    explorer.locator(".calibtut-previous").click()
    wait_for_text(caption, f"^{ascending[1]} · ")
    assert selected(image_list)[0].startswith(ascending[1])

    # dropdown: 10 bins, every value re-binned from the saved sums (by hand)
    explorer.locator(".calibtut-num-bins select").select_option(label="10")
    wait_for_text(caption, f"^{ascending[1]} · 10 bins$")
    drawn = expect_diagrams(["baseline", "soft"], ascending[1], ["ring"], 10, before=drawn)
    for loss in ("baseline", "soft"):
        ace10 = class_mean_ace(runs[loss], ["ring"], 10)[ascending[1]]
        assert metrics_rows(["baseline", "soft"], ["ring"])[(loss, "ring")]["ACE"] == (
            f"{ace10:.4f}"
        )
    ten = class_mean_ace(runs["baseline"], ["ring"], 10).sort_values()
    page.wait_for_function(
        "([el, first]) => el.options[0].text.trim().startsWith(first)",
        arg=[image_list.element_handle(), ten.index[0]],
    )
    np.testing.assert_allclose(
        [v for _, v in ranked_ids(options(image_list))], ten.to_numpy(), atol=5e-5
    )

    # toggle: the image's gap change per bin (soft minus baseline), then back to the diagrams
    diagram_view = explorer.locator(".calibtut-diagram-view")
    diagram_view.get_by_role("button", name="gap change").click()
    pair = {loss: runs[loss] for loss in ("baseline", "soft")}
    expected = views.gap_change_figure(pair, ascending[1], ["ring"], 10)
    wait_for_image(diagrams, png_of(expected), before=drawn)
    diagram_view.get_by_role("button", name="reliability").click()
    wait_for_image(diagrams, drawn)

    # button: export into the notebook's figures/ folder: the figures shown, as PNG and PDF
    explorer.locator(".calibtut-export").click()
    status = wait_for_text(explorer.locator(".calibtut-export-status"), "saved: ")
    names = re.findall(r"figures/(\S+?\.(?:png|pdf))", status)
    stem = f"{ascending[1]}_ring_10bins"
    assert sorted(names) == sorted(
        f"{stem}_{part}.{ext}" for part in ("diagrams", "overlay") for ext in ("png", "pdf")
    )
    figures = course / "notebooks" / "figures"
    expected = views.reliability_diagrams(
        {loss: runs[loss] for loss in ("baseline", "soft")}, ascending[1], ["ring"], 10,
        title=f"image {ascending[1]}",
    )  # fmt: skip
    here, _ = plots.save_figure(expected, course / "expected" / "diagrams")
    assert (figures / f"{stem}_diagrams.png").read_bytes() == here.read_bytes()
    assert png_size(here)[0] > 2 * int(expected.get_figwidth() * 100) * 0.8  # 200 dpi, trimmed
    assert (figures / f"{stem}_diagrams.pdf").read_bytes().startswith(b"%PDF")

    # the dataset explorer (all classes after Run All): histograms, then every control
    dataset = lab.cell("dataset = DatasetExplorer(found")
    histograms = dataset.locator(".calibtut-figure-output")
    summary = dataset.locator(".calibtut-table-output table")

    def expect_histograms(chosen, classes, num_bins, norm, before=None):
        selection = {loss: runs[loss] for loss in chosen}
        expected = views.dataset_histograms(selection, classes, num_bins=num_bins, norm=norm)
        return wait_for_image(histograms, png_of(expected), before)

    def summary_rows(runs_shown, classes_shown) -> dict[tuple[str, str], dict[str, str]]:
        return read_table(summary, [(r, c) for r in runs_shown for c in classes_shown])

    def macro_ace(run, num_bins: int) -> np.ndarray:
        return np.nanmean(direct_errors(merged_sums(run, num_bins))["ace"], 0)

    hist = expect_histograms(list(LOSSES), None, 20, "log")
    rows = summary_rows(LOSSES, CLASSES)
    for loss in LOSSES:
        for c, name in enumerate(CLASSES):
            assert rows[(loss, name)]["ACE macro"] == f"{macro_ace(runs[loss], 20)[c]:.4f}"

    # toggle: linear colours
    dataset.locator(".calibtut-norm").get_by_role("button", name="linear").click()
    hist = expect_histograms(list(LOSSES), None, 20, "linear", before=hist)
    # dropdown: 5 bins (the table re-binned too)
    dataset.locator(".calibtut-num-bins select").select_option(label="5")
    hist = expect_histograms(list(LOSSES), None, 5, "linear", before=hist)
    wait_for_text(summary.locator("caption"), "5 bins")
    ace5 = summary_rows(LOSSES, CLASSES)[("soft", "ring")]["ACE macro"]
    assert ace5 == f"{macro_ace(runs['soft'], 5)[1]:.4f}"
    # multi-select: the hard run alone; dropdown: the ring alone
    dataset.locator(".calibtut-runs select").select_option(label=["hard"])
    hist = expect_histograms(["hard"], None, 5, "linear", before=hist)
    dataset.locator(".calibtut-class-index select").select_option(label="ring")
    hist = expect_histograms(["hard"], ["ring"], 5, "linear", before=hist)
    summary_rows(["hard"], ["ring"])

    # toggle: the differences from the baseline (which the hard run is compared with)
    show, norm = dataset.locator(".calibtut-view"), dataset.locator(".calibtut-norm button").first
    pair = {loss: runs[loss] for loss in ("baseline", "hard")}
    for view, figure in (
        ("gap change", lambda: views.gap_change_figure(pair, None, ["ring"], 5)),
        ("per-image ACE", lambda: views.distribution_figure({"hard": runs["hard"]}, "ACE",
                                                            ["ring"], 5)),
        ("ACE change", lambda: views.distribution_figure(pair, "ACE change from baseline",
                                                         ["ring"], 5)),
    ):  # fmt: skip
        show.get_by_role("button", name=view, exact=True).click()
        hist = wait_for_image(histograms, png_of(figure()), before=hist)
        assert norm.is_disabled()  # the colour scale is the histograms' only
    show.get_by_role("button", name="histograms").click()
    hist = expect_histograms(["hard"], ["ring"], 5, "linear", before=hist)
    assert norm.is_enabled()

    # linked view: the hard run's ring cells, fullest first (by hand), and the images behind one
    sums = merged_sums(runs["hard"], 5)
    matrix = direct_histogram(sums)[1]
    cells = sorted(
        ((int(matrix[j, k]), k, j) for j, k in zip(*np.nonzero(matrix), strict=True)),
        key=lambda cell: (-cell[0], cell[1], cell[2]),
    )
    cell_list = dataset.locator(".calibtut-cell select")
    listed = options(cell_list)
    assert len(listed) == len(cells)
    for text, (count, k, j) in zip(listed, cells, strict=True):
        assert text == (
            f"ring · p {k / 5:.2f}–{(k + 1) / 5:.2f} → truth {j / 5:.2f}–{(j + 1) / 5:.2f} · "
            f"{count} image{'s' * (count != 1)}"
        )
    count, k, j = cells[-1]  # the emptiest cell
    cell_list.select_option(index=len(cells) - 1)
    ids = runs["hard"].results().image_ids
    behind = [i for b, i in enumerate(ids) if direct_histogram(sums[:, b : b + 1])[1, j, k]]
    assert len(behind) == count
    images_list = dataset.locator(".calibtut-cell-images select")
    page.wait_for_function(
        "([el, n, first]) => el.options.length === n && el.options[0].text.trim() === first",
        arg=[images_list.element_handle(), len(behind), behind[0]],
    )
    assert options(images_list) == behind
    # list and button: open the last of them in the image explorer (its class with it)
    images_list.select_option(label=behind[-1])
    dataset.locator(".calibtut-open-image").click()
    wait_for_text(caption, f"^{behind[-1]} · 10 bins$")
    assert selected(explorer.locator(".calibtut-class-index select")) == ["ring"]
    expect_diagrams(["baseline", "soft"], behind[-1], ["ring"], 10)
    lab.assert_clean()
    for name, cell in (("image_explorer", explorer), ("dataset_explorer", dataset)):
        cell.screenshot(path=str(course / f"{name}.png"))  # to look at after a run

"""The course as a static web site an instructor can publish: ``make book``.

Each notebook is executed top to bottom with papermill (as the tests do, in the notebooks'
folder so that their relative paths hold), rendered to HTML with nbconvert, and listed on an
``index.html`` with its title and learning objectives. Executing is the point: the pages show
the figures and numbers of this run, not of a saved notebook. A notebook that fails stops the
build with its name and the error, and no index is written over a previous complete site.

Usage::

    python -m calibtut.book [--smoke] [--out build/book] [--only 01 02]

``--smoke`` runs every notebook in smoke mode (a few training steps; what CI builds), with its
runs in ``<out>/runs`` so that the repository's ``runs/`` is left alone; without it the
notebooks train (or reuse) the course's runs in ``runs/`` as a student's would.
"""

from __future__ import annotations

import argparse
import html
import re
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["COURSE_FOLDER", "BookError", "course_notebooks", "build_book", "main"]

COURSE_FOLDER = Path(__file__).resolve().parents[1] / "notebooks"


class BookError(RuntimeError):
    """A notebook of the course could not be executed or rendered."""


def course_notebooks(folder: Path = COURSE_FOLDER, only: Sequence[str] = ()) -> list[Path]:
    """The course's numbered notebooks in order, or those whose number is in ``only``.

    Args:
        folder: the notebooks' folder.
        only: two-digit numbers to keep (all when empty).

    Returns:
        The ``.ipynb`` paths.

    Raises:
        FileNotFoundError: no notebook, or a number in ``only`` that no notebook has.
    """
    found = sorted(folder.glob("[0-9][0-9]_*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no course notebooks (NN_name.ipynb) in {folder}")
    if only:
        missing = sorted(set(only) - {p.name[:2] for p in found})
        if missing:
            raise FileNotFoundError(f"no notebook numbered {', '.join(missing)} in {folder}")
        found = [p for p in found if p.name[:2] in only]
    return found


def _title_and_objectives(notebook) -> tuple[str, list[str]]:
    """The first heading and the "You will learn to" bullets of a notebook's first cell."""
    text = notebook.cells[0].source if notebook.cells else ""
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")
    objectives: list[str] = []
    if "You will learn to" in text:
        tail = text.split("You will learn to", 1)[1]
        for line in tail.splitlines():
            if line.startswith("* "):
                objectives.append(line[2:].strip())
            elif line.startswith("  ") and objectives:
                objectives[-1] += " " + line.strip()
            elif objectives and not line.strip():
                break
    return title, objectives


def _inline_markdown(text: str) -> str:
    """Escape a line of Markdown for HTML, keeping its code spans and emphasis."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"\*([^*]+)\*", r"<em>\1</em>", text)


def _index(entries: list[tuple[str, str, list[str], float]], smoke: bool) -> str:
    items = []
    for page, title, objectives, seconds in entries:
        learn = "".join(f"<li>{_inline_markdown(o)}</li>" for o in objectives)
        items.append(
            f'<li><a href="{page}">{html.escape(title)}</a> '
            f"<small>(executed in {seconds:.0f} s)</small>"
            + (f"<ul>{learn}</ul>" if learn else "")
            + "</li>"
        )
    mode = (
        " in smoke mode (a few training steps: a check, not the course's results)" if smoke else ""
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>calibtut: calibration-aware training in medical image segmentation</title>"
        "<style>body{font-family:sans-serif;max-width:50em;margin:2em auto;line-height:1.45}"
        "li{margin-bottom:.6em}small{color:#666}</style></head><body>"
        "<h1>calibtut: the course</h1>"
        f"<p>Every notebook below was executed top to bottom for this site{mode}.</p>"
        f"<ol>{''.join(items)}</ol></body></html>\n"
    )


def build_book(
    out: Path,
    smoke: bool = False,
    only: Sequence[str] = (),
    folder: Path = COURSE_FOLDER,
    timeout_s: int = 3600,
) -> Path:
    """Execute the course's notebooks and render them, with an index, into ``out``.

    Args:
        out: the site's folder (created; its pages and index are replaced).
        smoke: smoke mode, with the runs under ``out/runs``.
        only: the two-digit numbers of the notebooks to build (all when empty).
        folder: the notebooks' folder.
        timeout_s: the longest a single cell may run.

    Returns:
        The path of ``index.html``.

    Raises:
        FileNotFoundError: no such notebooks.
        BookError: a notebook failed to execute or render (named, with the error).
    """
    import nbformat
    import papermill
    from nbconvert import HTMLExporter

    notebooks = course_notebooks(folder, only)
    out = Path(out).resolve()
    executed_dir = out / "executed"
    executed_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"smoke": True, "run_root": str(out / "runs")} if smoke else {}
    exporter = HTMLExporter(template_name="lab")
    entries = []
    for source in notebooks:
        executed = executed_dir / source.name
        start = time.perf_counter()
        print(f"book: executing {source.name}", flush=True)
        try:
            papermill.execute_notebook(
                str(source),
                str(executed),
                parameters=parameters,
                cwd=str(folder),
                kernel_name="python3",
                progress_bar=False,
                execution_timeout=timeout_s,
            )
        except Exception as err:  # papermill's PapermillExecutionError names the cell
            raise BookError(
                f"{source.name} failed ({type(err).__name__}): {str(err).strip().splitlines()[-1]}"
                f"; the executed notebook is {executed}"
            ) from err
        seconds = time.perf_counter() - start
        notebook = nbformat.read(executed, as_version=4)
        body, _ = exporter.from_notebook_node(notebook)
        page = source.with_suffix(".html").name
        (out / page).write_text(body, encoding="utf-8")
        title, objectives = _title_and_objectives(notebook)
        entries.append((page, title or source.stem, objectives, seconds))
    glossary = folder / "glossary.md"
    if glossary.is_file():
        shutil.copy(glossary, out / glossary.name)
    index = out / "index.html"
    partial = index.with_suffix(".html.tmp")
    partial.write_text(_index(entries, smoke), encoding="utf-8")
    partial.replace(index)
    return index


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m calibtut.book``: build the site, print where it is; 1 on a failure."""
    parser = argparse.ArgumentParser(
        prog="python -m calibtut.book", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("build/book"), help="the site's folder")
    parser.add_argument("--smoke", action="store_true", help="smoke mode, runs under <out>/runs")
    parser.add_argument("--only", nargs="*", default=(), help="notebook numbers, e.g. 01 02")
    args = parser.parse_args(argv)
    try:
        index = build_book(args.out, smoke=args.smoke, only=args.only)
    except (BookError, FileNotFoundError) as err:
        print(f"calibtut book: error: {err}", file=sys.stderr)
        return 1
    print(f"book: {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

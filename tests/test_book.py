"""``make book``: the course executed and rendered to a static site (calibtut.book)."""

from __future__ import annotations

import re
import shutil

import nbformat
import pytest

from calibtut import book


def test_course_notebooks_are_the_numbered_ones_in_order():
    names = [p.name[:2] for p in book.course_notebooks()]
    assert names == sorted(names) and names[0] == "00" and len(names) >= 10
    assert [p.name[:2] for p in book.course_notebooks(only=["02", "01"])] == ["01", "02"]
    with pytest.raises(FileNotFoundError, match="no notebook numbered 99"):
        book.course_notebooks(only=["99"])


@pytest.mark.notebook
def test_book_executes_renders_and_indexes_the_course(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    out = tmp_path / "site"
    index = book.build_book(out, smoke=True, only=["01", "02"])
    page = index.read_text()
    for name in ("01_what_is_calibration", "02_hard_and_soft_binning"):
        html = (out / f"{name}.html").read_text()
        assert "data:image/png;base64," in html  # executed: the figures are in the page
        assert "Traceback" not in html and f'href="{name}.html"' in page
        executed = nbformat.read(out / "executed" / f"{name}.ipynb", as_version=4)
        assert all(c.execution_count for c in executed.cells if c.cell_type == "code")
    assert "01 · What is calibration?" in page and "02 · Hard and soft binning" in page
    # the objectives of each notebook are listed under its title
    assert "compute the ECE, ACE and MCE of a set of predictions by hand" in page
    assert "derive the gradient of the hard-binned loss" in page
    assert re.search(r"executed in \d+ s", page) and "smoke mode" in page
    assert (out / "runs" / "course" / "01_what_is_calibration.json").is_file()  # not ../runs
    assert (out / "glossary.md").is_file()


@pytest.mark.notebook
def test_a_failing_notebook_stops_the_book_with_its_name(tmp_path):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    good = book.course_notebooks(only=["01"])[0]
    shutil.copy(good, folder / good.name)
    broken = nbformat.v4.new_notebook()
    broken.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3"}
    broken.metadata["language_info"] = {"name": "python"}
    broken.cells = [nbformat.v4.new_markdown_cell("# 05 · Broken"),
                    nbformat.v4.new_code_cell("1 / 0")]  # fmt: skip
    nbformat.write(broken, folder / "05_broken.ipynb")
    out = tmp_path / "site"
    with pytest.raises(book.BookError, match=r"05_broken.ipynb failed .*ZeroDivisionError"):
        book.build_book(out, smoke=True, folder=folder)
    assert not (out / "index.html").exists()  # no index presents a site with a page missing
    assert book.main(["--out", str(out), "--only", "42"]) == 1

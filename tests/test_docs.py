"""Every Python block of README.md and docs/*.md runs, so that none can rot.

The blocks of one file run in order in one namespace, as a reader pastes them into one session, in an empty working
folder (what they write stays there), offline. A block that cannot run here (a 7B model, a GPU) says so on the line
before it with `<!-- not-run: REASON -->`; such blocks are few, and each names its reason.
"""

import glob
import os
import re

import pytest
import torch


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAGES = ["README.md", *sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, "docs", "*.md")))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
NOT_RUN = re.compile(r"<!--\s*not-run:(.*?)-->\s*$")


def python_blocks(page: str) -> list[tuple[int, str, str | None]]:
    """``(line, code, reason)`` of each Python block of ``page``; ``reason`` is the not-run reason, else ``None``."""
    with open(os.path.join(ROOT, page), encoding="utf-8") as f:
        text = f.read()
    blocks = []
    for match in BLOCK.finditer(text):
        before = [line for line in text[: match.start()].splitlines() if line.strip()]
        marker = NOT_RUN.search(before[-1]) if before else None
        blocks.append(
            (text[: match.start()].count("\n") + 1, match.group(1), marker.group(1).strip() if marker else None)
        )
    return blocks


PAGES_WITH_CODE = [page for page in PAGES if python_blocks(page)]


def test_the_pages_hold_python_blocks_and_few_are_not_run():
    assert {"README.md", "docs/measurement.md", "docs/evaluation.md"} <= set(PAGES_WITH_CODE)
    skipped = [(page, line, reason) for page in PAGES for line, _, reason in python_blocks(page) if reason is not None]
    assert all(reason for _, _, reason in skipped), f"a not-run block must say why: {skipped}"
    assert len(skipped) <= 2, f"keep the blocks that do not run few: {skipped}"


@pytest.mark.parametrize("page", PAGES_WITH_CODE)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)  # the pages build random models: the same ones on every run, so the checks below are stable
    namespace = {"__name__": "__docs__"}
    for line, code, reason in python_blocks(page):
        if reason is not None:
            continue
        try:
            exec(compile(code, f"{page}:{line}", "exec"), namespace)
        except Exception as err:
            raise AssertionError(
                f"the Python block at {page}, line {line}, fails: {type(err).__name__}: {err}"
            ) from err
    if page == "README.md":  # the callback snippet prints a real before / after: two steps, two printed values
        before, after = namespace["before"], namespace["after"]
        assert (before["step"], after["step"]) == (0, namespace["trainer"].state.global_step) == (0, 3)
        key = "eval_monosemanticity/fd/mean"
        assert f"{before[key]:.4f}" != f"{after[key]:.4f}", (before[key], after[key])

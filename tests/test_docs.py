"""Every Python code fence of the README and the documentation runs, page by page.

A page's fences run in order in one namespace, in a fresh folder, with the world its
prose assumes (``docs_pages``). A new page with Python fences fails here until it is
given one, so no example goes unrun. Fences of other languages (``toml``, ``text``,
``bash``) are not run; the configs and outputs they show are tested where they are
produced.
"""

import importlib.util
import re
from pathlib import Path

import pytest
from docs_pages import AFTER, NEEDS, WORLDS, EnoughSteps

ROOT = Path(__file__).resolve().parent.parent
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def fences(page: str) -> list[str]:
    return FENCE.findall((ROOT / page).read_text())


def pages() -> list[str]:
    found = [p.relative_to(ROOT).as_posix()
             for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]]  # fmt: skip
    return [p for p in found if fences(p)]


def test_every_page_with_python_fences_has_a_world():
    assert sorted(pages()) == sorted(WORLDS), (
        "give each page with ```python fences its world in tests/docs_pages.py WORLDS"
    )


@pytest.mark.parametrize("page", sorted(WORLDS))
def test_the_fences_of_a_page_run(page, tmp_path, monkeypatch):
    for module in NEEDS.get(page, ()):
        if importlib.util.find_spec(module.split(".")[0]) is None:
            pytest.skip(f"{page} needs {module}, which this environment lacks")
    monkeypatch.chdir(tmp_path)
    world = WORLDS[page]
    namespace = {"__name__": "__docs__", **(world(tmp_path) if world else {})}
    code = fences(page)
    assert code, f"{page} has no Python fences left: take it out of WORLDS"
    for i, fence in enumerate(code):
        try:
            exec(compile(fence, f"{page}, fence {i + 1}", "exec"), namespace)  # noqa: S102
        except EnoughSteps:  # its loop ran a few steps of its 100,000
            continue
    if page in AFTER:
        AFTER[page](namespace)

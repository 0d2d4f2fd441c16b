"""The Jupyter walkthroughs run top to bottom (a broken notebook fails the suite) and show pictures."""

from __future__ import annotations

import nbformat
import pytest
from conftest import ROOT
from nbclient import NotebookClient

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_the_readme_lists_exactly_the_walkthroughs_there_are():
    import re

    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Jupyter walkthroughs") :].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(\d\d_[a-z_]+\.ipynb)`", section))
    assert NOTEBOOKS and listed == {p.name for p in NOTEBOOKS}


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_and_shows_pictures(path):
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    images = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) >= 2, f"{path.name} showed {len(images)} pictures"
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors

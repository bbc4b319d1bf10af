"""The README is a contract that runs: every Python block, on its own, in a fresh namespace and an empty
working directory (so it uses shipped models or what it defines, never a run of the reader's)."""

from pathlib import Path

import pytest
from mktestdocs import grab_code_blocks
from mktestdocs.__main__ import exec_python

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCKS = grab_code_blocks(README.read_text(), lang="python")


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 7


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{k}" for k in range(len(BLOCKS))])
def test_a_readme_block_runs_on_its_own(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exec_python(block)

"""Commands that need no tensor start without importing torch (a second or more saved)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import sys
from capscale.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print("TORCH-LOADED" if "torch" in sys.modules else "TORCH-ABSENT", code)
"""


def _run(*argv: str) -> str:
    done = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True,
                          timeout=300)
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def chinchilla_fit(tmp_path_factory):
    path = tmp_path_factory.mktemp("fit") / "chinchilla.json"
    assert _run("fit", "builtin:chinchilla", "--bootstrap", "20", "-o", str(path)) == \
        "TORCH-ABSENT 0"
    assert json.loads(path.read_text())["law"]
    return path


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["predict", "--help"],
                                  ["train", "--help"], ["sweep", "--help"]])
def test_help_imports_no_torch(argv):
    assert _run(*argv) == "TORCH-ABSENT 0"


def test_fit_and_predict_import_no_torch(chinchilla_fit):
    assert _run("predict", str(chinchilla_fit), "--n", "1e9", "--d", "2e10") == "TORCH-ABSENT 0"


def test_decoupled_fit_of_the_quest_table_imports_no_torch():
    """The format columns of QuEST's runs are specs; deciding which runs are dense and
    keying the multipliers needs no formats library."""
    assert _run("fit", "builtin:quest", "--bootstrap", "0", "--no-heldout") == "TORCH-ABSENT 0"

"""Installing adds one import package, ``retina_fgvis``: training/ and evaluation/ install as its subpackages."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import importlib.util as u, importlib.metadata as m; "
         "print(u.find_spec('training'), u.find_spec('evaluation'), "
         "u.find_spec('retina_fgvis.training') is not None, u.find_spec('retina_fgvis.evaluation') is not None, "
         "m.distribution('retina-fgvis').read_text('top_level.txt').split())")


def test_the_installed_package_has_no_generic_top_level_names(tmp_path):
    # -I: neither the working directory nor PYTHONPATH on the path, only what the installation provides.
    done = subprocess.run([sys.executable, "-I", "-c", PROBE], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert done.stdout.split("\n")[0] == "None None True True ['retina_fgvis']", done.stdout


def test_the_wheel_holds_only_retina_fgvis(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"  # a copy: the build writes its build/ folder next to the sources
    for name in ("retina_fgvis", "training", "evaluation"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    names = zipfile.ZipFile(next((tmp_path / "wheel").glob("*.whl"))).namelist()
    assert {name.split("/")[0] for name in names} == {"retina_fgvis", "retina_fgvis-0.1.0.dist-info"}
    assert "retina_fgvis/training/trainer.py" in names and "retina_fgvis/evaluation/report.py" in names

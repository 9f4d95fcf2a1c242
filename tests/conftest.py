"""Shared test fixtures: paths to the real speech data in ../shared/data (skip when absent).

The exported ONNX graphs of the default inference backend go to one cache folder for the test
session (``$SPEAKERID_CACHE``, inherited by the CLI processes tests start), not the user's
``~/.cache/speakerid``; it is removed at exit unless the caller set ``SPEAKERID_CACHE`` itself.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

if not os.environ.get("SPEAKERID_CACHE"):
    os.environ["SPEAKERID_CACHE"] = tempfile.mkdtemp(prefix="speakerid-test-cache-")
    atexit.register(shutil.rmtree, os.environ["SPEAKERID_CACHE"], True)


def _find_shared_data() -> Path:
    """$SPEAKERID_SHARED_DATA, else ../shared/data beside the checkout, else /work/shared/data."""
    if os.environ.get("SPEAKERID_SHARED_DATA"):
        return Path(os.environ["SPEAKERID_SHARED_DATA"])
    for candidate in (REPO.parent / "shared" / "data", Path("/work/shared/data")):
        if candidate.exists():
            return candidate
    return REPO.parent / "shared" / "data"


SHARED_DATA = _find_shared_data()


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real speech data not found at {path} (set SPEAKERID_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared real-speech folder (see its README); skips the test when absent."""
    return _require(SHARED_DATA)


@pytest.fixture(scope="session")
def shared_speech() -> Path:
    return _require(SHARED_DATA / "speech")


@pytest.fixture(scope="session")
def vox1_o_trials() -> Path:
    return _require(SHARED_DATA / "trials" / "voxceleb1_o_original.txt")

"""The wheel installs into a fresh venv and runs ``tradebridge up`` from there (issue 11).

Built as a user would build it (``pip wheel``), from this checkout, with no network:
``--no-build-isolation`` uses the hatchling of the running environment (``.[dev]`` brings
it); only where it is missing does pip fetch the build backend from the index (as CI can).

The fresh venv gets the wheel with ``--no-deps --no-index`` and its dependencies from the
running environment: a ``.pth`` file naming this environment's site-packages. That reuses
exactly the versions the suite is tested with, needs no index, and cannot leak the checkout
into the venv: a ``.pth`` line only appends a directory to ``sys.path``, so the ``.pth`` files
inside it (the editable install's pointer at ``src/``) are not run, and the venv's own
site-packages, holding the wheel's ``tradebridge``, comes first. The test asserts both: the
package imported is the wheel's, and its migrations (package data) are inside it.
``--system-site-packages`` would not do: the dependencies live in the project's venv, not in
the system's Python.
"""

from __future__ import annotations

import importlib.util
import json
import signal
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from _support.runtime import NO_SETTINGS, Proc, child_env, reachable_tmp_dir, wait_for
from tradebridge import __version__

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "tradebridge"
# The installed venv must see neither the checkout (PYTHONPATH) nor the user's settings.
ISOLATED: dict[str, str | None] = {**NO_SETTINGS, "PYTHONPATH": None, "PYTHONHOME": None}


def _run(args: list[str], cwd: Path, env: dict[str, str | None] | None = None) -> str:
    done = subprocess.run(
        args, cwd=cwd, capture_output=True, text=True, timeout=180, check=False,
        env=child_env(env or {}),
    )  # fmt: skip
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel of this checkout."""
    out = tmp_path_factory.mktemp("wheel")
    isolation = ["--no-build-isolation"] if importlib.util.find_spec("hatchling") else []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *isolation,
          "--wheel-dir", str(out), str(ROOT)], cwd=out)  # fmt: skip
    [built] = out.glob("tradebridge-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Create a fresh venv, install the wheel alone, lend it this environment's packages."""
    root = tmp_path_factory.mktemp("venv")
    where = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(where)], cwd=root)
    python = str(where / "bin" / "python")
    _run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps",
          "--no-index", str(wheel)], cwd=root, env=ISOLATED)  # fmt: skip
    ask = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    inside = _run([python, "-c", ask], cwd=root, env=ISOLATED).strip()
    lent = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(inside, "_tradebridge_test_deps.pth").write_text("\n".join(sorted(lent)) + "\n")
    return where


def test_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())

    for path in PACKAGE.rglob("*"):
        if path.is_file() and path.suffix not in {".py", ".pyc"}:
            assert f"tradebridge/{path.relative_to(PACKAGE)}" in names, path
    assert "tradebridge/store/sql/0001_ledger.sql" in names
    assert "tradebridge/py.typed" in names
    assert any(n.endswith("entry_points.txt") for n in names)


def test_wheel_in_fresh_venv_runs_version_and_up_places_a_signal(venv: Path) -> None:
    tradebridge = str(venv / "bin" / "tradebridge")
    with reachable_tmp_dir("tb-wheel-up-") as root:
        where = "import tradebridge; print(tradebridge.__file__)"
        imported = _run([str(venv / "bin" / "python"), "-c", where], root, ISOLATED)
        assert imported.startswith(str(venv)), imported  # the wheel's, not the checkout's
        assert _run([tradebridge, "version"], root, ISOLATED).strip() == __version__

        data_dir = root / "stack"
        up = Proc([tradebridge, "up", "--data-dir", str(data_dir), "--port", "0",
                   "--sim-port", "0"], root / "up.log", env=ISOLATED)  # fmt: skip
        try:
            found = wait_for(lambda: _endpoints(up, data_dir), 60, "endpoints.json")
            wait_for(lambda: _healthy(found["healthz_url"]), 30, "/healthz ok")
            sent = _run([tradebridge, "send", "buy", "MNQ1!", "1", "--account", "DEMO0000001",
                         "--data-dir", str(data_dir), "--wait"], root, ISOLATED)  # fmt: skip
            assert "filled" in sent, sent
            up.signal(signal.SIGTERM)
            assert up.wait(timeout=60) == 0, up.output()
        finally:
            up.stop()
        assert "Traceback" not in up.output()
        assert not (data_dir / "endpoints.json").exists()


def _endpoints(up: Proc, data_dir: Path) -> dict[str, Any] | None:
    assert up.alive(), up.output()
    try:
        found: dict[str, Any] = json.loads((data_dir / "endpoints.json").read_text())
    except (OSError, ValueError):
        return None
    return found if found.get("pid") == up.pid else None


def _healthy(url: str) -> bool:
    try:
        answer = httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200 and answer.json().get("status") == "ok"

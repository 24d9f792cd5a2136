"""Session fixtures of the deployment tests: the gateway's wheel, built once per test run, and a fresh
virtualenv outside the checkout with that wheel and its dependencies installed, as a region installs it.

- `wheel_path`: `docker/build.sh wheel` (`pip wheel --no-deps`) of a copy of the checkout (what git would
  see, without .venv, var/, build output), in a temporary directory; pip's cache serves the build
  requirements.
- `wheelhouse`: `docker/build.sh wheelhouse`: the wheel and every dependency as wheels, built once per run
  from pip's cache: each virtualenv installs from it without the network (`--no-index`).
- `installed_gateway`: a `python -m venv` outside the checkout with the wheel installed by
  `docker/build.sh install`; its bin/ path.

docker/build.sh holds the commands, and docker/Dockerfile runs the same three: what these fixtures
install is what the image installs.
- `run_environment(...)`: the environment a command of that virtualenv runs with: only what it is given,
  never the test runner's GATEWAY_* variables or the checkout's virtualenv.

When the wheel cannot be built here (no package index and nothing in pip's cache), the tests that use
them skip with the reason; any other build failure fails them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# What is not part of the source: the checkout's own environment and outputs.
NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "var", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".cache", "results"
)
# pip's words when the index (or a proxy in front of it) cannot be reached and its cache does not have it.
OFFLINE = (
    "No matching distribution found",
    "Could not find a version that satisfies",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ProxyError",
)
PIP_TIMEOUT = 600


BUILD = REPO / "docker" / "build.sh"


def _build(step: str, *arguments: Path) -> subprocess.CompletedProcess[str]:
    """A step of docker/build.sh (wheel, wheelhouse, install), with this interpreter's pip."""
    return subprocess.run(
        ["sh", str(BUILD), step, *map(str, arguments)],
        capture_output=True,
        text=True,
        timeout=PIP_TIMEOUT,
        check=False,
        env={**os.environ, "BUILD_PYTHON": sys.executable},
    )


def _built_or_skipped(done: subprocess.CompletedProcess[str], what: str) -> None:
    if done.returncode == 0:
        return
    output = done.stdout + done.stderr
    if any(sign in output for sign in OFFLINE):
        pytest.skip(f"{what} cannot be built offline (no package index, not in pip's cache): {output[-400:]}")
    pytest.fail(f"{what} failed:\n{output[-3000:]}")


@pytest.fixture(scope="session")
def wheel_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The gateway's wheel, built once per test run from a copy of the checkout."""
    started = time.monotonic()
    source = tmp_path_factory.mktemp("source") / "gateway-source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE)
    out = tmp_path_factory.mktemp("wheel")
    _built_or_skipped(_build("wheel", source, out), "the gateway's wheel")
    wheels = list(out.glob("*.whl"))
    assert len(wheels) == 1, wheels
    print(f"wheel built in {time.monotonic() - started:.1f} s: {wheels[0].name}")
    return wheels[0]


@pytest.fixture(scope="session")
def wheelhouse(wheel_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and all its dependencies as wheels (from pip's cache), to install without the network."""
    started = time.monotonic()
    house = tmp_path_factory.mktemp("wheelhouse")
    shutil.copy(wheel_path, house)
    _built_or_skipped(_build("wheelhouse", wheel_path, house), "the wheelhouse")
    print(f"wheelhouse built in {time.monotonic() - started:.1f} s")
    return house


def make_venv(wheelhouse: Path, where: Path) -> Path:
    """A fresh virtualenv at `where` with the gateway installed from the wheelhouse; its bin/ directory."""
    assert not where.resolve().is_relative_to(REPO), f"{where} is inside the checkout"
    # Without pip of its own (ensurepip takes seconds): this pip installs into it (`--python`), as in the
    # image.
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(where)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    bin_dir = where / "bin"
    done = _build("install", wheelhouse, bin_dir / "python")
    assert done.returncode == 0, done.stdout + done.stderr
    return bin_dir


@pytest.fixture(scope="session")
def installed_gateway(wheelhouse: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """bin/ of a fresh virtualenv outside the checkout with the gateway's wheel installed."""
    started = time.monotonic()
    bin_dir = make_venv(wheelhouse, tmp_path_factory.mktemp("venv") / "gateway-venv")
    print(f"virtualenv made and the wheel installed in {time.monotonic() - started:.1f} s")
    yield bin_dir


def site_package(bin_dir: Path) -> Path:
    """The installed `gateway` package's directory in that virtualenv."""
    found = subprocess.run(
        [str(bin_dir / "python"), "-c", "import gateway, os; print(os.path.dirname(gateway.__file__))"],
        capture_output=True,
        text=True,
        check=True,
        cwd=bin_dir,
        env=run_environment(bin_dir),
        timeout=60,
    )
    return Path(found.stdout.strip())


def run_environment(bin_dir: Path, **variables: str) -> dict[str, str]:
    """The environment of a command of the installed gateway: its bin/ on PATH, and `variables`."""
    return {
        "PATH": f"{bin_dir}{os.pathsep}/usr/local/bin:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "LANG": "C.UTF-8",
        "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
        **variables,
    }

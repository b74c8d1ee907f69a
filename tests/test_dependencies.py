"""constraints.txt pins every dependency (what `make install` installs and CI tests; `make lock`
re-resolves it): it must cover pyproject.toml's requirements within their ranges, agree with the
Makefile's torch, and be what this environment runs."""

import importlib.metadata
import re

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .conftest import ROOT


def pins_for_this_python() -> dict[str, Version]:
    """constraints.txt's pins whose markers hold here (one per package after the markers)."""
    pins: dict[str, Version] = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # one exact pin a line
        assert spec.operator == "==", f"not an exact pin: {line}"
        if req.marker is None or req.marker.evaluate():
            name = canonicalize_name(req.name)
            assert name not in pins, f"two pins apply to {name} on this Python"
            pins[name] = Version(spec.version)
    return pins


def project_requirements() -> list[Requirement]:
    """mt's requirements with the dev extra (what `make install` asks for)."""
    reqs = [Requirement(r) for r in importlib.metadata.requires("mt") or []]
    return [r for r in reqs if r.marker is None or r.marker.evaluate({"extra": "dev"})]


def test_every_requirement_is_pinned_within_its_range():
    pins = pins_for_this_python()
    requirements = project_requirements()
    assert {canonicalize_name(r.name) for r in requirements} >= {"torch", "sacrebleu", "pytest"}
    for req in requirements:
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} is in pyproject.toml but not pinned in constraints.txt: run make lock"
        assert req.specifier.contains(pins[name], prereleases=True), f"{name}=={pins[name]} is outside {req}"


def test_torch_pin_is_the_makefiles():
    makefile = (ROOT / "Makefile").read_text()
    torch_version = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, re.M).group(1)
    assert pins_for_this_python()["torch"] == Version(torch_version)


def test_this_environment_runs_the_pinned_versions():
    # `make install` installs with -c constraints.txt; a mismatch means the lock is not what was tested.
    pins = pins_for_this_python()
    for req in project_requirements():
        name = canonicalize_name(req.name)
        installed = Version(importlib.metadata.version(req.name))
        pinned = pins[name]
        # torch's CPU build is 2.13.0+cpu: the local label is the build, not another release
        assert Version(installed.public) == pinned, (
            f"{name} {installed} installed, constraints.txt pins {pinned}: run make install (or make lock)"
        )

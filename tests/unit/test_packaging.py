"""The lock file that `make up` and `make test` install from agrees with pyproject.toml."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement

REPO = Path(__file__).resolve().parents[2]


def _locked() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name, _, version = line.partition("==")
            pins[name.strip().lower().replace("_", "-").replace(".", "-")] = version.strip()
    return pins


def test_every_dependency_is_pinned_in_the_lock_within_its_range() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in ("dev", "airflow"):
        wanted += project["optional-dependencies"][extra]
    locked = _locked()
    problems = []
    for text in wanted:
        req = Requirement(text)
        name = req.name.lower().replace("_", "-").replace(".", "-")
        if name not in locked:
            problems.append(f"{req.name} is not in requirements.lock")
        elif locked[name] not in req.specifier:
            problems.append(f"{req.name}=={locked[name]} does not satisfy {req.specifier}")
    assert not problems, "run `make lock`: " + "; ".join(problems)


def test_pyspark_and_pyspark_client_are_locked_to_the_connector_version() -> None:
    # pyspark-client overwrites pyspark's Python files when the versions differ.
    locked = _locked()
    pom = (REPO / "infra" / "spark" / "pom.xml").read_text()
    assert locked["pyspark"] == locked["pyspark-client"]
    assert f"<spark.version>{locked['pyspark']}</spark.version>" in pom

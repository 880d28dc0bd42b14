"""What one build of the image cannot show (tests/image builds and runs it for real): the layer
that installs the dependencies sees nothing but pyproject.toml, so a change to the code rebuilds
only the layers after it."""

from __future__ import annotations

from pathlib import Path

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    parsed = DockerfileParser(path=str(ROOT / "Dockerfile"))
    return [(i["instruction"], i["value"]) for i in parsed.structure if i["instruction"] != "COMMENT"]


def test_dependencies_are_installed_before_the_source_is_copied() -> None:
    steps = instructions()
    deps = next(i for i, (ins, value) in enumerate(steps) if ins == "RUN" and "requirements.txt" in value)
    copies = [value.split()[0] for ins, value in steps[:deps] if ins == "COPY"]
    assert copies == ["pyproject.toml"]  # the dependency layer sees nothing that changes with the code
    source = next(i for i, (ins, value) in enumerate(steps) if ins == "COPY" and value.startswith("reactor "))
    assert source > deps

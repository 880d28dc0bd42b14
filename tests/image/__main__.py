"""The image by hand, from the repository's root with the project's virtual environment active.

`python -m tests.image build [DIR] [--tag TAG]` makes sure the base image is there (the stand-in,
cached), then builds DIR's Dockerfile as it is: this repository's by default, tagged `reactor`, or
a worker's that starts `FROM reactor`. `python -m tests.image run IMAGE [ARG...]` runs an image
with what podman needs here, passing SUPABASE_* and REACTOR_* on from the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tests.image import base, podman

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.image")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build a Dockerfile with podman")
    build.add_argument("context", nargs="?", type=Path, default=ROOT)
    build.add_argument("--tag", default="reactor")
    run = commands.add_parser("run", help="run an image against the project in SUPABASE_URL")
    run.add_argument("image")
    run.add_argument("args", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if podman.missing():
        print(f"missing: {' '.join(podman.missing())}; apt-get install them first", file=sys.stderr)
        return 1
    if args.command == "build":
        print(f"base: {base.ensure()}", file=sys.stderr)
        image = podman.build(args.context, args.tag)
        size = int(podman.podman("image", "inspect", "--format", "{{.Size}}", image).stdout)
        print(f"built {args.tag} ({image[:12]}, {size / 1e6:.0f} MB)", file=sys.stderr)
        return 0
    passed = [f"--env={name}" for name in sorted(os.environ) if name.startswith(("SUPABASE_", "REACTOR_"))]
    command = [podman.tool("podman"), "run", "--rm", *podman.run_options(), *passed, args.image, *args.args]
    os.execv(command[0], command)


if __name__ == "__main__":
    sys.exit(main())

"""`make gpu-bundle`: the wheels bench/gpu_check.sh may need on a GPU machine that has torch and
numpy but perhaps none of our other dependencies, for that machine's Python (--python, default
3.12: the lent H100/H200 image's), without its network.

What the check imports (REQUIREMENTS) and everything they need, less torch and what torch needs
(the GPU machine's own torch is the one to test) and numpy (on every such machine, 17 MB): the
lock's versions, hash-checked, as wheels for that Python. DeepSpeed is an sdist on PyPI: built
here into a py3-none-any wheel (no ops compiled; pretrain.train uses torch's AdamW).

The bundle also holds requirements.txt (REQUIREMENTS with pyproject.toml's version ranges) and
python-version. gpu_check.sh asks the machine's pip which of those its environment lacks or
holds outside the ranges, and installs only those wheels, into a temporary directory.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name as canonical

ROOT = Path(__file__).resolve().parents[1]
# what pretrain.train, pretrain.export and the logits comparison import, besides torch
REQUIREMENTS = ("deepspeed", "pydantic", "pyyaml", "numpy", "safetensors", "transformers")
ON_THE_MACHINE = ("torch", "numpy")  # with their own dependencies
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_27_x86_64",
             "manylinux_2_28_x86_64")


def marker_environment(python: str) -> dict[str, str]:
    return {"python_version": python, "python_full_version": f"{python}.0",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "os_name": "posix", "extra": ""}


def closure(names: tuple[str, ...], python: str) -> set[str]:
    """`names` and what they require on `python` (no extras), from this environment's metadata
    (the lock's versions: `make setup` installed them)."""
    environment, seen, todo = marker_environment(python), set(), list(names)
    while todo:
        name = canonical(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        for line in metadata.requires(name) or []:
            requirement = Requirement(line)
            if requirement.marker is None or requirement.marker.evaluate(environment):
                todo.append(requirement.name)
    return seen


def locked(lock: Path) -> dict[str, str]:
    """Each package's block of the lock: `name==version \\` and its `--hash` lines."""
    blocks: dict[str, str] = {}
    name = None
    for line in lock.read_text().splitlines():
        if line and not line.startswith((" ", "#")):
            name = canonical(line.split("==")[0])
            blocks[name] = line
        elif name and line.lstrip().startswith("--hash"):
            blocks[name] += "\n" + line
        else:
            name = None
    return blocks


def ranges(pyproject: Path) -> dict[str, str]:
    """pyproject.toml's requirement for each dependency and optional dependency, by name."""
    project = tomllib.loads(pyproject.read_text())["project"]
    lines = project["dependencies"] + [line for group in
                                       project["optional-dependencies"].values()
                                       for line in group]
    found: dict[str, str] = {}
    for line in lines:
        requirement = Requirement(line)
        found.setdefault(canonical(requirement.name), f"{requirement.name}{requirement.specifier}")
    return found


def build(out: Path, python: str) -> list[str]:
    wanted = closure(REQUIREMENTS, python) - closure(ON_THE_MACHINE, python)
    blocks = locked(ROOT / "requirements.lock")
    missing = sorted(wanted - blocks.keys())
    if missing:
        raise SystemExit(f"gpu_bundle: not in requirements.lock: {', '.join(missing)}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    pinned = out / "locked.txt"
    pinned.write_text("".join(blocks[name] + "\n" for name in sorted(wanted - {"deepspeed"})))
    abi = "cp" + python.replace(".", "")
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "--quiet", "--no-deps", "--require-hashes",
                    "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
                    "--abi", abi, *platforms, "-r", str(pinned), "-d", str(out)], check=True)
    deepspeed = blocks["deepspeed"].split()[0]
    subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(out), deepspeed], check=True)
    pinned.unlink()
    specs = ranges(ROOT / "pyproject.toml")
    (out / "requirements.txt").write_text("".join(specs[canonical(name)] + "\n"
                                                  for name in REQUIREMENTS))
    (out / "python-version").write_text(python + "\n")
    return sorted(path.name for path in out.glob("*.whl"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default="3.12",
                        help="the GPU machine's Python, major.minor (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-bundle",
                        help="the bundle's directory, emptied first (default: build/gpu-bundle)")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python):
        parser.error(f"--python: {args.python!r} is not major.minor, e.g. 3.12")
    wheels = build(args.out, args.python)
    size = sum(path.stat().st_size for path in args.out.iterdir()) / 2**20
    print(f"{len(wheels)} wheels for CPython {args.python} in {args.out} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()

"""`make gpu-bundle` (bench/gpu_bundle.py) and bench/gpu_check.sh, on CPU: the bundle is built
here from the lock, and the check runs with an interpreter that has torch and numpy and nothing
else of ours, as a GPU machine's may be."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import pytest
import torch

from .conftest import ROOT

pytest.importorskip("deepspeed")

PYTHON = "{}.{}".format(*sys.version_info[:2])
SCRIPT = ["bash", str(ROOT / "bench" / "gpu_check.sh")]


def bundle_module():
    spec = importlib.util.spec_from_file_location("gpu_bundle", ROOT / "bench" / "gpu_bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpu") / "bundle"
    done = subprocess.run([sys.executable, "bench/gpu_bundle.py", "--python", PYTHON, "--out",
                           str(out)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def torch_only_python(tmp_path_factory) -> Path:
    """A new venv that sees, through a .pth file, only torch and numpy of this environment (links
    to their files and their dependencies' files, dist-info included, so pip knows them)."""
    where = tmp_path_factory.mktemp("torch-only")
    shown = where / "shown"
    shown.mkdir()
    for name in bundle_module().closure(("torch", "numpy"), PYTHON):
        distribution = metadata.distribution(name)
        for top in {Path(str(file)).parts[0] for file in distribution.files or []}:
            source = Path(distribution.locate_file(top))
            if top != ".." and source.exists() and not (shown / top).exists():
                (shown / top).symlink_to(source)
    env = where / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    # ensurepip's setuptools (3.11) would hide the newer one torch requires
    subprocess.run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"],
                   check=True, capture_output=True)
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "shown.pth").write_text(f"{shown}\n")
    return python


def test_the_bundle_holds_what_the_check_needs_less_torch_and_numpy(bundle):
    wheels = {path.name.split("-")[0].lower() for path in bundle.glob("*.whl")}
    assert {"deepspeed", "pydantic", "pydantic_core", "transformers", "pyyaml", "hjson",
            "safetensors"} <= wheels
    assert not wheels & {"torch", "numpy", "sympy", "jinja2", "pyarrow", "sentencepiece"}
    assert (bundle / "python-version").read_text().strip() == PYTHON
    requirements = (bundle / "requirements.txt").read_text().split()
    assert "pydantic>=2.6" in requirements and "numpy>=1.26" in requirements


@pytest.mark.slow
def test_gpu_check_on_cpu_installs_what_the_machine_lacks_and_leaves_nothing_behind(
        bundle, torch_only_python, tmp_path):
    """--device cpu --steps 3 (tiny config, CPU) with an interpreter that has torch and numpy:
    pip's dry run picks the bundle's wheels it lacks, and the check prints one JSON line."""
    environ = os.environ | {"TMPDIR": str(tmp_path)}
    environ.pop("PYTHONPATH", None)
    done = subprocess.run([*SCRIPT, "--device", "cpu", "--steps", "3", "--python",
                           str(torch_only_python), "--bundle", str(bundle),
                           "--budget", "900"],  # a shared 2-core CPU, not a GPU's 8 min
                          cwd=tmp_path, env=environ, capture_output=True, text=True,
                          timeout=1000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["device"] == "cpu" and result["steps"] == 3
    assert result["tokens_per_s"] > 0 and result["mfu"] is None
    assert result["loss_first"] > result["loss_last"] > 0
    assert result["export_bf16_logits_max_abs_diff"] < 0.5  # bf16 rounding of logits ~10
    installed = {name.split("-")[0].lower() for name in result["installed_from_bundle"]}
    assert {"deepspeed", "pydantic", "transformers", "pyyaml"} <= installed
    assert not installed & {"torch", "numpy"}  # the machine's own
    assert list(tmp_path.iterdir()) == []  # TMPDIR: every file it wrote was in one directory


@pytest.mark.slow
def test_when_compiled_training_fails_the_check_trains_eager_and_says_why(bundle, tmp_path):
    """A C++ compiler that refuses inductor's code (as a machine without one would) fails the
    compiled run; the check trains again eager and reports the error. This interpreter has all
    the bundle's requirements, so nothing is installed."""
    compiler = tmp_path / "bin" / "c++"
    compiler.parent.mkdir()
    compiler.write_text('#!/bin/sh\ncase "$*" in *cache/inductor*) exit 1 ;; esac\n'
                        'exec g++ "$@"\n')
    compiler.chmod(0o755)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    environ = os.environ | {"TMPDIR": str(scratch), "CXX": str(compiler)}
    done = subprocess.run([*SCRIPT, "--device", "cpu", "--compile", "--python", sys.executable,
                           "--bundle", str(bundle), "--budget", "900"], env=environ,
                          capture_output=True, text=True, timeout=1000)
    assert done.returncode == 0, (done.stdout + done.stderr)[-5000:]
    assert "training with torch.compile failed; training again eager" in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["compiled"] is False and "CppCompileError" in result["compile_error"]
    assert result["steps"] == 3 and result["loss_first"] > result["loss_last"] > 0
    assert result["installed_from_bundle"] == []
    assert list(scratch.iterdir()) == []


def test_gpu_check_on_cuda_without_a_gpu_stops_before_any_work(tmp_path):
    (tmp_path / "requirements.txt").write_text("deepspeed\n")
    (tmp_path / "python-version").write_text(f"{PYTHON}\n")
    done = subprocess.run([*SCRIPT, "--python", sys.executable, "--bundle", str(tmp_path)],
                          env=os.environ | {"TMPDIR": str(tmp_path)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert f"torch {torch.__version__} sees no CUDA device" in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["python-version",
                                                               "requirements.txt"]


def test_gpu_check_refuses_a_bundle_for_another_python_before_any_work(tmp_path):
    (tmp_path / "requirements.txt").write_text("deepspeed\n")
    (tmp_path / "python-version").write_text("3.99\n")
    done = subprocess.run([*SCRIPT, "--python", sys.executable, "--bundle", str(tmp_path)],
                          env=os.environ | {"TMPDIR": str(tmp_path)}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2
    assert f"Python {PYTHON}, the bundle's wheels are for 3.99" in done.stderr
    assert f"GPU_PYTHON={PYTHON}" in done.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["python-version",
                                                               "requirements.txt"]


@pytest.mark.parametrize(("arguments", "message"), [
    (["--device", "tpu"], "--device: 'tpu' is not cuda or cpu"),
    (["--steps", "0"], "--steps: '0' is not a positive whole number"),
    (["--config", "nope.yaml"], "--config: no file nope.yaml"),
    (["--budget"], "--budget needs a value"),
    (["--gpus", "8"], "unknown argument: --gpus"),
    (["--python", "/nonexistent/python", "--device", "cpu"], "cannot import torch"),
])
def test_gpu_check_rejects_bad_arguments_with_the_reason(arguments, message, tmp_path):
    (tmp_path / "requirements.txt").write_text("deepspeed\n")
    (tmp_path / "python-version").write_text(f"{PYTHON}\n")
    done = subprocess.run([*SCRIPT, "--bundle", str(tmp_path), *arguments], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr


def test_gpu_check_help_lists_its_options():
    done = subprocess.run([*SCRIPT, "--help"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    for option in ("--device cuda|cpu", "--config YAML", "--steps N", "--budget S",
                   "--python PY", "--bundle", "--no-compile"):
        assert option in done.stdout

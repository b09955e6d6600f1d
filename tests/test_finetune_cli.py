"""pretrain.finetune's command line: bad length flags fail before any work; --help explains it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT
from .finetune_inputs import MRPC

pytest.importorskip("deepspeed")


def finetune_main(capsys, *flags: str) -> tuple[int, str]:
    from pretrain.finetune import main

    code = main(list(flags))
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("flags", "expected"), [
    (["--steps", "5", "--epochs", "2"], "--steps 5 and --epochs 2 are both given"),
    (["--epochs", "0"], "--epochs 0: must be >= 1"),
    (["--eval_every", "0"], "--eval_every 0: must be >= 1"),
    (["--warmup_ratio", "1.5"], "--warmup_ratio 1.5: must lie in [0, 1]"),
    (["--warmup_ratio", "0.1", "--warmup_steps", "3"], "are both given"),
    (["--steps", "4", "--warmup_steps", "9"], "warmup_steps 9 > max_steps 4"),
])
def test_bad_length_flags_fail_before_any_work(tmp_path, capsys, flags, expected):
    out = tmp_path / "out"
    code, err = finetune_main(capsys, "--init", str(tmp_path / "missing"), "--data",
                              str(MRPC["train"]), "--task", "classify", "--output", str(out),
                              *flags)
    assert code == 2 and expected in err, err
    assert not out.exists()


def test_help_explains_the_cli():
    done = subprocess.run([sys.executable, "pretrain/finetune.py", "--help"], cwd=ROOT,
                          capture_output=True, text=True, check=True)
    assert "--task" in done.stdout and "LlamaForSequenceClassification" in done.stdout
    for words in ("--epochs", "--eval_every", "--warmup_ratio", "macro-F1", "not both"):
        assert words in done.stdout, words

"""pretrain.evaluate: loss, perplexity and bits per byte of a model on text files, Parquet and a
refine run's data/ (local or remote); the same numbers from a checkpoint and from its export,
from transformers' own loss, and from lm-evaluation-harness's rolling log-likelihood."""

from __future__ import annotations

import gzip
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pretrain.codec import LosslessTokenizer
from pretrain.documents import DataError, read_documents
from pretrain.evaluate import evaluate, main
from pretrain.export import EOS_ID
from pretrain.inference import ModelError

from .pretrain_data import kept_documents
from .tiny_lm import news_lines, news_tokenizer, tiny_export

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"
ZERO1 = ROOT / "configs" / "deepspeed" / "zero1.json"
NUMBERS = ("loss", "perplexity", "bits_per_byte", "bits_per_token")
COUNTS = ("documents", "tokens", "bytes", "sha256")


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A tiny model trained for 40 steps on news text (max_position_embeddings 128), exported."""
    root = tmp_path_factory.mktemp("evaluate")
    return tiny_export(root / "hf", news_tokenizer(root / "tok"), steps=40)


def short_documents(count: int = 8) -> list[str]:
    """Real news text with a multi-byte character or two, each well under 128 tokens."""
    return [line[:160] + (" — café" if i % 3 == 0 else "")
            for i, line in enumerate(news_lines()[:count])]


def write_jsonl(path: Path, texts: list[str], compress: bool = False) -> Path:
    data = "".join(json.dumps({"text": text, "n": i}) + "\n" for i, text in enumerate(texts))
    path.write_bytes(gzip.compress(data.encode()) if compress else data.encode())
    return path


def numbers(result: dict) -> dict:
    return {key: result[key] for key in COUNTS + NUMBERS}


# --- reading documents -----------------------------------------------------------------------

def test_every_format_local_or_remote_reads_the_same_documents(tmp_path):
    import fsspec

    texts = short_documents(6)
    table = pa.table({"id": [f"d{i}" for i in range(6)], "text": texts})
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    pq.write_table(table.slice(0, 4), run / "data" / "part-0.parquet")
    pq.write_table(table.slice(4), run / "data" / "part-1.parquet")
    (tmp_path / "docs.txt").write_text("\n".join(texts[:3]) + "\n\n  \n" + "\n".join(texts[3:])
                                       + "\r\n", encoding="utf-8-sig")  # BOM, blank lines, CRLF
    memory = fsspec.filesystem("memory")
    memory.pipe("/evaluate-test/docs.jsonl.gz",
                write_jsonl(tmp_path / "docs.jsonl.gz", texts, compress=True).read_bytes())
    memory.pipe("/evaluate-test/data/part-0.parquet",
                (run / "data" / "part-0.parquet").read_bytes())
    memory.pipe("/evaluate-test/data/part-1.parquet",
                (run / "data" / "part-1.parquet").read_bytes())
    for location in (tmp_path / "docs.txt", write_jsonl(tmp_path / "docs.jsonl", texts),
                     tmp_path / "docs.jsonl.gz", run / "data" / "part-0.parquet",
                     run / "data", run, f"file://{run / 'data'}",
                     "memory://evaluate-test/docs.jsonl.gz", "memory://evaluate-test/data"):
        read = [text for _, text in read_documents(str(location))]
        expected = texts[:4] if str(location).endswith("part-0.parquet") else texts
        assert read == expected, location
    assert [t for _, t in read_documents(str(run / "data"), max_docs=5)] == texts[:5]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("missing.jsonl", None, "does not exist"),
    ("empty.txt", b"\n\n", "no documents in"),
    ("empty-dir", "dir", "no *.parquet in"),
    ("bad.jsonl", b'{"text": "fine"}\n{"text": broken\n', "bad.jsonl:2: not a JSON object"),
    ("notext.jsonl", b'{"body": "x"}\n', '"text" missing or not a string'),
    ("latin1.txt", "café".encode("latin-1") + b"\n", "not UTF-8"),
    ("notext.parquet", "parquet-without-text", "has no 'text' column"),
    ("broken.parquet", b"PAR1 not really", "is not a readable Parquet file"),
    ("broken.jsonl.gz", gzip.compress(b'{"text": "x"}\n' * 500)[:40], "cannot read on"),
])
def test_bad_data_fails_with_a_clear_message(export, tmp_path, name, content, message):
    path = tmp_path / name
    if content == "dir":
        path.mkdir()
    elif content == "parquet-without-text":
        pq.write_table(pa.table({"body": ["x"]}), path)
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(DataError, match=re.escape(message)):
        evaluate(export, str(path))
    if "bad.jsonl" not in name:  # no first document: found before the model is loaded
        with pytest.raises(DataError, match=re.escape(message)):
            evaluate(tmp_path / "no-model-here", str(path))


# --- the numbers -----------------------------------------------------------------------------

def test_numbers_equal_transformers_loss_on_each_document(export, tmp_path):
    """An independent computation: LlamaForCausalLM's mean loss on EOS + each document's ids
    (every document fits one window), summed over documents."""
    texts = short_documents()
    result = evaluate(export, str(write_jsonl(tmp_path / "docs.jsonl", texts)))
    tokenizer = LosslessTokenizer.load(export)
    hf = transformers.LlamaForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    nats, tokens = 0.0, 0
    for text in texts:
        ids = torch.tensor([[EOS_ID, *tokenizer.encode(text)]])
        assert ids.shape[1] <= 128
        with torch.no_grad():
            nats += hf(ids, labels=ids).loss.item() * (ids.shape[1] - 1)
        tokens += ids.shape[1] - 1
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert result["documents"] == len(texts) and result["tokens"] == tokens
    assert result["bytes"] == text_bytes > sum(map(len, texts))
    assert result["loss"] == pytest.approx(nats / tokens, rel=1e-5)
    assert result["perplexity"] == pytest.approx(math.exp(nats / tokens), rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(nats / math.log(2) / text_bytes, rel=1e-5)
    assert 0 < result["bits_per_byte"] < math.log2(512) * tokens / text_bytes  # it learnt
    assert result["model_kind"] == "export" and result["seq_len"] == result["stride"] == 128


def test_cli_writes_the_json_it_prints_and_windows_change_little(export, tmp_path, capsys):
    texts = [" ".join(news_lines()[:4])] + short_documents(3)  # one of ~900 tokens: windows
    data = str(write_jsonl(tmp_path / "docs.jsonl", texts))
    out = tmp_path / "results" / "eval.json"
    assert main([str(export), "--data", data, "--out", str(out), "--quiet"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text()) and printed["documents"] == 4
    assert main([str(export), "--data", data, "--max-docs", "2", "--stride", "64",
                 "--seq-len", "96", "--quiet"]) == 0
    overlapping = json.loads(capsys.readouterr().out)
    assert overlapping["documents"] == 2 and (overlapping["seq_len"], overlapping["stride"]) \
        == (96, 64)
    assert abs(overlapping["bits_per_byte"] - printed["bits_per_byte"]) < 0.5


def test_bad_model_and_options_fail_with_a_clear_message(export, tmp_path, capsys):
    data = str(write_jsonl(tmp_path / "docs.jsonl", short_documents(2)))
    classifier = tmp_path / "classifier"
    classifier.mkdir()
    config = json.loads((export / "config.json").read_text())
    (classifier / "config.json").write_text(json.dumps(
        config | {"architectures": ["LlamaForSequenceClassification"]}))
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    cases = [([str(tmp_path / "missing")], "MODEL .*missing does not exist"),
             ([str(tmp_path / "file")], "is not a directory"),
             ([str(tmp_path / "empty")], "holds neither config.json"),
             ([str(classifier)], "LlamaForSequenceClassification, not a causal language"),
             ([str(export), "--seq-len", "129"], "max_position_embeddings 128"),
             ([str(export), "--seq-len", "64", "--stride", "65"], r"--stride 65 must be in"),
             ([str(export), "--max-docs", "0"], "--max-docs must be at least 1")]
    for flags, message in cases:
        assert main([*flags, "--data", data, "--quiet"]) == 2, flags
        last_line = capsys.readouterr().err.strip().split("\n")[-1]
        assert last_line.startswith("error: ") and re.search(message, last_line), last_line
    with pytest.raises(ModelError, match="dtype"):
        evaluate(export, data, dtype="float8")


def test_help_explains_the_cli(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for words in ("bits_per_byte", "perplexity", "--max-docs", "--out", "JSONL", "Parquet",
                  "data/", "checkpoint", "lm-evaluation-harness"):
        assert words in text


# --- a real pretraining run: checkpoint, export, refine run data, lm-evaluation-harness ------

@pytest.fixture(scope="module")
def pretrained(tokens_dir, tokenizer_dir, tmp_path_factory) -> tuple[Path, Path]:
    """(CKPT, exported directory) of an 8-step single-process tiny pretrain.train run."""
    pytest.importorskip("deepspeed")
    from pretrain.export import export_checkpoint

    ckpt = tmp_path_factory.mktemp("eval-pretrain") / "ckpt"
    command = [sys.executable, "pretrain/train.py", "--config", str(TINY), "--deepspeed_config",
               str(ZERO1), "--data", str(tokens_dir), "--output", str(ckpt), "--tokenizer",
               str(tokenizer_dir), "--max_steps", "8", "--warmup_steps", "2", "--lr", "3e-3",
               "--min_lr", "3e-4", "--micro_batch_size", "4", "--grad_accum", "1",
               "--eval_every", "8", "--eval_steps", "1", "--checkpoint_every", "8"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-5000:]
    return ckpt, export_checkpoint(ckpt, ckpt.parent / "hf", tokenizer_dir=tokenizer_dir)


def long_documents() -> list[str]:
    """Real news paragraphs, some joined so that they need several windows of 256 tokens."""
    lines = news_lines()
    return [" ".join(lines[i:i + 1 + k % 4]) for k, i in enumerate(range(0, 40, 4))]


@pytest.mark.slow
def test_a_checkpoint_and_its_export_give_the_same_numbers(pretrained, tmp_path):
    ckpt, hf = pretrained
    data = str(write_jsonl(tmp_path / "docs.jsonl", long_documents()))
    out = tmp_path / "ckpt.json"
    done = subprocess.run([sys.executable, "-m", "pretrain.evaluate", str(ckpt), "--data", data,
                           "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    from_checkpoint = json.loads(out.read_text())
    assert json.loads(done.stdout) == from_checkpoint
    from_export = evaluate(hf, data)
    assert (from_checkpoint["model_kind"], from_export["model_kind"]) == ("checkpoint", "export")
    assert {k: from_checkpoint[k] for k in COUNTS} == {k: from_export[k] for k in COUNTS}
    for key in NUMBERS:
        assert from_checkpoint[key] == pytest.approx(from_export[key], rel=1e-4, abs=1e-4), key
    assert from_export["tokens"] > 256 * 3  # several windows per long document


@pytest.mark.slow
def test_a_refine_runs_data_directory_scores_as_its_documents(pretrained, refine_run, tmp_path):
    _, hf = pretrained
    texts = [row["text"] for row in kept_documents(refine_run)[:6]]
    as_jsonl = evaluate(hf, str(write_jsonl(tmp_path / "docs.jsonl", texts)))
    for location in (refine_run / "data", refine_run):
        from_run = evaluate(hf, str(location), max_docs=6)
        assert numbers(from_run) == numbers(as_jsonl)


LM_EVAL_TASK = """\
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: text
metric_list:
  - metric: bits_per_byte
    aggregation: bits_per_byte
    higher_is_better: false
  - metric: byte_perplexity
    aggregation: weighted_perplexity
    higher_is_better: false
metadata:
  version: 1
"""


@pytest.mark.slow
def test_lm_eval_rolling_loglikelihood_agrees_with_evaluate(pretrained, tmp_path):
    """The README's recipe: `lm_eval --model hf` on the export with a local task file, offline;
    its bits per byte (loglikelihood_rolling) within 2% of pretrain.evaluate's."""
    pytest.importorskip("lm_eval")
    _, hf = pretrained
    data = write_jsonl(tmp_path / "docs.jsonl", long_documents())
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "local_text.yaml").write_text(LM_EVAL_TASK.format(name="local_text", data=data))
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                        "HF_HOME": str(tmp_path / "hf-home"), "TOKENIZERS_PARALLELISM": "false"}
    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args",
               f"pretrained={hf},dtype=float32,prefix_token_id={EOS_ID}", "--tasks",
               "local_text", "--include_path", str(tasks), "--device", "cpu", "--batch_size",
               "4", "--output_path", str(tmp_path / "lm-eval")]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stderr[-5000:]
    results_file, = (tmp_path / "lm-eval").rglob("results_*.json")
    results = json.loads(results_file.read_text())
    lm_eval_bpb = results["results"]["local_text"]["bits_per_byte,none"]
    ours = evaluate(hf, str(data))
    assert results["n-samples"]["local_text"]["effective"] == ours["documents"] == 10
    print(f"bits per byte: lm-eval {lm_eval_bpb:.8f}, pretrain.evaluate "
          f"{ours['bits_per_byte']:.8f}")
    assert lm_eval_bpb == pytest.approx(ours["bits_per_byte"], rel=0.02)

"""Mistakes people make with the pretraining commands, through the real command lines: --data or
--tokens that are missing, a refine run instead of token shards, a damaged token manifest, and
fine-tuning files in the wrong format. Each is one `error:` line naming the thing and what to
do, exit code 2, never a traceback; a UTF-8 BOM in a fine-tuning file simply works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pretrain.config import ConfigError
from pretrain.encode import FORMAT, MANIFEST
from pretrain.export import EOS_ID
from pretrain.finetune_data import Example, read_classify, read_labelled, read_sft, read_text

from .pretrain_data import news_sft

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
MRPC = DATA / "finetune" / "msr_paraphrase_train.txt"
NEWS = DATA / "text" / "lee-news-background.txt"
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"
ZERO1 = ROOT / "configs" / "deepspeed" / "zero1.json"
BOM = b"\xef\xbb\xbf"
MAKE_TOKENS = "python -m pretrain.encode --data"


def run(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600, env=os.environ | {"OMP_NUM_THREADS": "1"})


def assert_refused(done: subprocess.CompletedProcess, *named: str) -> str:
    """Exit code 2, no traceback, an `error:` line that names each of `named`; that line."""
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, done.stderr[-3000:]
    for name in named:
        assert name in done.stderr, (name, done.stderr[-3000:])
    return errors[0]


def train(data: Path, output: Path) -> subprocess.CompletedProcess:
    return run("pretrain/train.py", "--config", TINY, "--deepspeed_config", ZERO1,
               "--data", data, "--output", output, "--max_steps", "2", "--warmup_steps", "1")


def summarise(tokens: Path) -> subprocess.CompletedProcess:
    return run("-m", "pretrain.dataset", "--tokens", tokens, "--seq-len", "16")


# --- TOKENS directories ----------------------------------------------------------------------

def refine_run_dir(path: Path) -> Path:
    """What `refine run` leaves: manifest.json of kind refine-run, data/ with Parquet."""
    from refine.run import KIND

    (path / "data").mkdir(parents=True)
    (path / MANIFEST).write_text(json.dumps({"kind": KIND, "config_hash": "0" * 16,
                                             "inputs": [], "status": "complete"}))
    return path


def token_dir(path: Path, count: int = 1000, vocab: int = 300) -> Path:
    """A TOKENS directory in pretrain.encode's layout: one shard, train and val."""
    manifest = {"format": FORMAT, "dtype": "uint16", "byte_order": "little", "eos_id": 2,
                "vocab_size": vocab, "shards": []}
    tokens = np.random.default_rng(0).integers(3, vocab, size=count).astype("<u2")
    name = "shard-00000"
    for split, part in (("train", tokens[:count * 3 // 4]), ("val", tokens[count * 3 // 4:])):
        (path / split).mkdir(parents=True)
        part.tofile(path / split / f"{name}.bin")
    manifest["shards"] = [{"name": name, "train": {"documents": 3, "tokens": count * 3 // 4},
                           "val": {"documents": 1, "tokens": count - count * 3 // 4}}]
    (path / MANIFEST).write_text(json.dumps(manifest))
    return path


def test_train_refuses_a_missing_data_directory_before_creating_the_output(tmp_path):
    done = train(tmp_path / "no-such-tokens", tmp_path / "ckpt")
    assert_refused(done, str(tmp_path / "no-such-tokens"), "does not exist", MAKE_TOKENS)
    assert not (tmp_path / "ckpt").exists()


def test_train_refuses_a_refine_run_as_data_and_names_the_tokenize_command(tmp_path):
    run_dir = refine_run_dir(tmp_path / "run")
    done = train(run_dir, tmp_path / "ckpt")
    assert_refused(done, "refine run", f"{MAKE_TOKENS} {run_dir / 'data'} --tokenizer TOK")
    assert not (tmp_path / "ckpt").exists()


def test_train_refuses_a_directory_of_text_as_data(tmp_path):
    done = train(DATA / "text", tmp_path / "ckpt")
    assert_refused(done, str(DATA / "text"), MANIFEST, MAKE_TOKENS)
    assert not (tmp_path / "ckpt").exists()


def test_dataset_refuses_a_refine_run_directory(tmp_path):
    run_dir = refine_run_dir(tmp_path / "run")
    line = assert_refused(summarise(run_dir), "refine run directory, not token shards",
                          f"{MAKE_TOKENS} {run_dir / 'data'} --tokenizer TOK --out TOKENS")
    assert line.startswith(f"error: {run_dir} ")


def test_dataset_refuses_a_missing_directory(tmp_path):
    assert_refused(summarise(tmp_path / "missing"), str(tmp_path / "missing"), "does not exist")


def damage_truncate_manifest(tokens: Path) -> None:
    text = (tokens / MANIFEST).read_text()
    (tokens / MANIFEST).write_text(text[:len(text) // 2])


def damage_drop_dtype(tokens: Path) -> None:
    manifest = json.loads((tokens / MANIFEST).read_text())
    del manifest["dtype"]
    (tokens / MANIFEST).write_text(json.dumps(manifest))


def damage_shard_entry(tokens: Path) -> None:
    manifest = json.loads((tokens / MANIFEST).read_text())
    del manifest["shards"][0]["train"]
    (tokens / MANIFEST).write_text(json.dumps(manifest))


def damage_lose_a_shard(tokens: Path) -> None:
    (tokens / "train" / "shard-00000.bin").unlink()


def damage_truncate_a_shard(tokens: Path) -> None:
    path = tokens / "val" / "shard-00000.bin"
    path.write_bytes(path.read_bytes()[:100])


@pytest.mark.parametrize(("damage", "named"), [
    (damage_truncate_manifest, [MANIFEST, "not JSON"]),
    (damage_drop_dtype, [MANIFEST, "'dtype'"]),
    (damage_shard_entry, [MANIFEST, "'train'"]),
    (damage_lose_a_shard, ["shard-00000.bin", "missing"]),
    (damage_truncate_a_shard, ["shard-00000.bin", "100 bytes"]),
])
def test_dataset_refuses_damaged_tokens(tmp_path, damage: Callable[[Path], None],
                                        named: list[str]):
    tokens = token_dir(tmp_path / "tokens")
    intact = summarise(tokens)
    assert intact.returncode == 0, intact.stderr
    assert json.loads(intact.stdout)["train"]["tokens"] == 750
    damage(tokens)
    assert_refused(summarise(tokens), str(tokens), *named, MAKE_TOKENS)


# --- fine-tuning files -----------------------------------------------------------------------

def encode(text: str) -> list[int]:
    """A deterministic stand-in tokenizer: UTF-8 bytes (a BOM left in would show)."""
    return list(text.encode("utf-8"))


def news_jsonl(path: Path, count: int = 20) -> Path:
    lines = NEWS.read_text().splitlines()[:count]
    path.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    return path


def news_text(path: Path) -> Path:
    path.write_bytes(NEWS.read_bytes())
    return path


def mrpc_jsonl(path: Path) -> Path:
    """MRPC's rows as classify JSONL (text, text_pair, label), non-ASCII kept as UTF-8."""
    rows = [{"text": texts[0], "text_pair": texts[1], "label": label}
            for texts, label in read_labelled(MRPC)]
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")
    return path


Reader = Callable[[Path, Callable[[str], list[int]], int], list[Example]]


@pytest.mark.parametrize(("reader", "make", "name"), [
    (read_sft, news_sft, "pairs.jsonl"),
    (read_text, news_jsonl, "news.jsonl"),
    (read_text, news_text, "news.txt"),
    (read_classify, mrpc_jsonl, "mrpc.jsonl"),
])
def test_a_utf8_bom_reads_like_the_file_without_it(tmp_path, reader: Reader,
                                                   make: Callable[[Path], Path], name: str):
    plain = make(tmp_path / name)
    with_bom = tmp_path / "bom" / name
    with_bom.parent.mkdir()
    with_bom.write_bytes(BOM + plain.read_bytes())
    expected = reader(plain, encode, 512)
    assert expected and reader(with_bom, encode, 512) == expected


def test_a_jsonl_string_may_hold_line_separators(tmp_path):
    """U+2028 and U+0085 are text inside a JSON string, not line ends (json.dumps writes them
    raw with ensure_ascii=False)."""
    rows = [{"prompt": "first\u2028line", "response": "next\x85line and more"},
            {"prompt": "plain", "response": "answer"}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows),
                    encoding="utf-8")
    examples = read_sft(path, encode, 512)
    assert [e.input_ids for e in examples] == [
        encode(row["prompt"]) + encode(row["response"]) + [EOS_ID] for row in rows]


def jsonl_as_txt(path: Path) -> tuple[Path, int]:
    """MRPC as JSONL, saved under the TSV's .txt name: the classify reader expects TSV."""
    target = path / "mrpc.txt"
    mrpc_jsonl(path / "mrpc.jsonl").rename(target)
    return target, 1


def tsv_as_jsonl(path: Path) -> tuple[Path, int]:
    """MRPC's TSV named .jsonl."""
    target = path / "mrpc.jsonl"
    target.write_bytes(MRPC.read_bytes())
    return target, 1


def sft_line_without_keys(path: Path) -> tuple[Path, int]:
    """Line 3 of a prompt/response file holds a classify row."""
    target = news_sft(path / "pairs.jsonl", count=20)
    lines = target.read_text().splitlines()
    lines[2] = json.dumps({"text": "a", "label": 1})
    target.write_text("\n".join(lines) + "\n")
    return target, 3


def sft_not_an_object(path: Path) -> tuple[Path, int]:
    target = news_sft(path / "pairs.jsonl", count=20)
    target.write_text(target.read_text() + '["prompt", "response"]\n')
    return target, 21


def cp1252(path: Path, name: str) -> tuple[Path, int]:
    """MRPC saved as Windows-1252: its first curly quote (line 58) is no UTF-8."""
    target = path / name
    text = MRPC.read_text(encoding="utf-8-sig")
    if name.endswith(".jsonl"):
        text = mrpc_jsonl(path / "utf8.jsonl").read_text(encoding="utf-8")
    target.write_bytes(text.encode("cp1252"))
    return target, 58 - name.endswith(".jsonl")  # the JSONL has no header line


def mrpc_short_row(path: Path) -> tuple[Path, int]:
    target = path / "mrpc.txt"
    lines = MRPC.read_text(encoding="utf-8-sig").splitlines()
    lines[4] = "\t".join(lines[4].split("\t")[:3])
    target.write_text("\n".join(lines) + "\n")
    return target, 5


def mrpc_bad_label(path: Path) -> tuple[Path, int]:
    target = path / "mrpc.txt"
    lines = MRPC.read_text(encoding="utf-8-sig").splitlines()
    lines[9] = "yes" + lines[9][1:]
    target.write_text("\n".join(lines) + "\n")
    return target, 10


def classify_jsonl_without_label(path: Path) -> tuple[Path, int]:
    target = mrpc_jsonl(path / "mrpc.jsonl")
    lines = target.read_text().splitlines()
    lines[6] = json.dumps({"text": "no label here"})
    target.write_text("\n".join(lines) + "\n")
    return target, 7


def text_jsonl_without_text(path: Path) -> tuple[Path, int]:
    target = news_sft(path / "news.jsonl", count=20)  # prompt/response rows given to the text task
    return target, 1


@pytest.mark.parametrize(("reader", "make", "expected"), [
    (read_classify, jsonl_as_txt, "MRPC"),
    (read_classify, tsv_as_jsonl, "JSON"),
    (read_sft, tsv_as_jsonl, '"prompt"'),
    (read_sft, sft_line_without_keys, '"response"'),
    (read_sft, sft_not_an_object, '"prompt"'),
    (read_sft, lambda p: cp1252(p, "pairs.jsonl"), "UTF-8"),
    (read_text, lambda p: cp1252(p, "news.txt"), "UTF-8"),
    (read_classify, lambda p: cp1252(p, "mrpc.txt"), "UTF-8"),
    (read_classify, mrpc_short_row, "5 tab-separated fields"),
    (read_classify, mrpc_bad_label, "label"),
    (read_classify, classify_jsonl_without_label, '"label"'),
    (read_text, text_jsonl_without_text, '"text"'),
], ids=["classify-jsonl-as-tsv", "classify-tsv-as-jsonl", "sft-tsv", "sft-missing-keys",
        "sft-not-an-object", "sft-cp1252", "text-cp1252", "classify-cp1252",
        "classify-short-row", "classify-bad-label", "classify-no-label", "text-no-text"])
def test_a_file_in_the_wrong_format_is_a_config_error_naming_file_and_line(
        tmp_path, reader: Reader, make: Callable[[Path], tuple[Path, int]], expected: str):
    path, line = make(tmp_path)
    with pytest.raises(ConfigError) as caught:
        reader(path, encode, 64)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: "), message
    assert expected in message, message


def test_a_missing_finetuning_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        read_sft(tmp_path / "pairs.jsonl", encode, 64)


# --- slow: the fine-tuning command (starts DeepSpeed's process group before reading) ---------

@pytest.fixture(scope="module")
def tiny_init(tmp_path_factory) -> tuple[Path, Path]:
    """(an exported, untrained tiny model, its TOK directory): SentencePiece trained on news."""
    import sentencepiece as spm

    from pretrain.config import load_config
    from pretrain.export import save_hf_model
    from pretrain.model import CausalLM
    from pretrain.tokenizer import MODEL_FILE, TrainerOptions

    tok = tmp_path_factory.mktemp("misuse-tok")
    options = TrainerOptions(vocab_size=400, num_threads=1)
    spm.SentencePieceTrainer.train(sentence_iterator=iter(NEWS.read_text().splitlines()),
                                   model_prefix=str(tok / "tokenizer"), **options.spm_kwargs())
    vocab = spm.SentencePieceProcessor(model_file=str(tok / MODEL_FILE)).get_piece_size()
    config = load_config(TINY).model_for(vocab)
    init = save_hf_model(CausalLM(config), config, tmp_path_factory.mktemp("misuse-hf"))
    return init, tok


@pytest.mark.slow
@pytest.mark.parametrize(("task", "make", "expected"), [
    ("classify", jsonl_as_txt, "MRPC"),
    ("sft", sft_line_without_keys, '"response"'),
])
def test_finetune_reports_a_file_in_the_wrong_format(tiny_init, tmp_path, task: str,
                                                     make: Callable[[Path], tuple[Path, int]],
                                                     expected: str):
    init, tok = tiny_init
    path, line = make(tmp_path)
    done = run("pretrain/finetune.py", "--init", init, "--tokenizer", tok, "--task", task,
               "--data", path, "--output", tmp_path / "out", "--steps", "1", "--seq_len", "64")
    assert_refused(done, f"{path}:{line}: ", expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("overwrite", [False, True])
def test_finetune_refuses_an_existing_output(tmp_path, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    flags = ["--overwrite"] if overwrite else []
    done = subprocess.run([sys.executable, "pretrain/finetune.py", "--init", str(tmp_path),
                           "--data", str(tmp_path / "x.jsonl"), "--task", "sft", "--output",
                           str(out), *flags], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 2, done.stderr
    assert "error:" in done.stderr and "Traceback" not in done.stderr
    assert ("not an earlier fine-tuning export" if overwrite else "--overwrite") in done.stderr
    assert (out / "keep.txt").read_text() == "mine"

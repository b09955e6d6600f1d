"""Pretraining from a run in a bucket: `pretrain.tokenizer` and `pretrain.encode` read the run's
data/ (and its manifest) from a real S3-compatible HTTP server (moto's, on 127.0.0.1) and write
local or remote outputs that are byte for byte what the same commands make from a local run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pretrain.encode import MANIFEST, SPLITS
from pretrain.tokenizer import META_FILE, MODEL_FILE, VOCAB_FILE

from .pretrain_data import VAL_FRACTION, VOCAB_SIZE
from .s3server import BUCKET, SECRET, moto_server

ROOT = Path(__file__).resolve().parent.parent
RUN = f"s3://{BUCKET}/runs/r1"
DATA = f"{RUN}/data"
TOKENIZER_ARGS = ["--vocab-size", str(VOCAB_SIZE), "--seed", "0", "--threads", "1", "--quiet"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def s3(refine_run):
    """The moto server, with the session's refine run (data/ and manifest.json) in the bucket."""
    pytest.importorskip("s3fs")
    import fsspec

    with moto_server() as env:
        fs = fsspec.filesystem("s3", use_listings_cache=False)
        fs.put_file(str(refine_run / "manifest.json"), f"{RUN}/manifest.json")
        for path in sorted((refine_run / "data").glob("*.parquet")):
            fs.put_file(str(path), f"{DATA}/{path.name}")
        yield env


def pretrain(env: dict[str, str], cwd: Path, module: str, *args: str | Path,
             ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", f"pretrain.{module}", *map(str, args)],
                          cwd=cwd, env=env | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
                          capture_output=True, text=True, timeout=600)
    if ok:
        assert done.returncode == 0, done.stderr[-4000:]
    return done


def local_files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def bucket_files(url: str) -> dict[str, bytes]:
    import fsspec

    fs = fsspec.filesystem("s3", use_listings_cache=False)
    root = url.removeprefix("s3://")
    return {path.removeprefix(root + "/"): fs.cat_file(path) for path in sorted(fs.find(root))}


def comparable(manifest: dict) -> dict:
    """A manifest less where the data and the tokenizer were (they differ by design)."""
    manifest = json.loads(json.dumps(manifest))
    del manifest["source"]["data"], manifest["tokenizer"]["path"]
    return manifest


@pytest.fixture(scope="module")
def bucket_tokenizer(s3, refine_run, tmp_path_factory):
    """The tokenizer trained from the bucket into the bucket, and from local data/ locally."""
    cwd = tmp_path_factory.mktemp("cwd")
    local = tmp_path_factory.mktemp("tok-local")
    pretrain(s3, cwd, "tokenizer", "--data", refine_run / "data", "--out", local,
             *TOKENIZER_ARGS, "--overwrite")
    remote = f"s3://{BUCKET}/tok"
    pretrain(s3, cwd, "tokenizer", "--data", DATA, "--out", remote, *TOKENIZER_ARGS)
    return local, remote, cwd


def test_tokenizer_from_a_bucket_is_the_one_from_local_data(s3, refine_run, bucket_tokenizer):
    local, remote, cwd = bucket_tokenizer
    assert list(cwd.iterdir()) == []  # nothing written where the command ran
    in_bucket = bucket_files(remote)
    assert sorted(in_bucket) == [META_FILE, MODEL_FILE, VOCAB_FILE]
    assert in_bucket[MODEL_FILE] == (local / MODEL_FILE).read_bytes()
    assert in_bucket[VOCAB_FILE] == (local / VOCAB_FILE).read_bytes()
    remote_meta = json.loads(in_bucket[META_FILE])
    local_meta = json.loads((local / META_FILE).read_text())
    assert remote_meta["source"]["data"] == DATA
    run_manifest = (refine_run / "manifest.json").read_text()
    assert remote_meta["source"]["run_config_hash"] == json.loads(run_manifest)["config_hash"]
    for meta in (remote_meta, local_meta):
        del meta["source"]["data"]
    assert remote_meta == local_meta  # same files, sample, run hash and manifest sha256
    assert SECRET not in in_bucket[META_FILE].decode()
    again = pretrain(s3, cwd, "tokenizer", "--data", DATA, "--out", remote, *TOKENIZER_ARGS,
                     ok=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr


def test_tokenize_from_a_bucket_to_a_local_and_a_remote_out(s3, bucket_tokenizer, tokens_dir,
                                                           tmp_path):
    """Byte-identical shards to the session's local TOKENS (same data, same tokenizer model)."""
    local_tok, remote_tok, cwd = bucket_tokenizer
    expected = local_files(tokens_dir)
    expected_manifest = comparable(json.loads(expected.pop(MANIFEST)))
    assert expected and all(name.split("/")[0] in SPLITS for name in expected)

    out = tmp_path / "tokens"
    pretrain(s3, cwd, "encode", "--data", DATA, "--tokenizer", local_tok, "--out", out,
             "--val-fraction", VAL_FRACTION, "--workers", "1", "--quiet")
    got = local_files(out)
    manifest = json.loads(got.pop(MANIFEST))
    assert got == expected
    assert comparable(manifest) == expected_manifest
    assert manifest["source"]["data"] == DATA

    remote_out = f"s3://{BUCKET}/tokens"
    pretrain(s3, cwd, "encode", "--data", DATA, "--tokenizer", remote_tok, "--out",
             remote_out, "--val-fraction", VAL_FRACTION, "--workers", "1", "--quiet")
    in_bucket = bucket_files(remote_out)
    manifest = json.loads(in_bucket.pop(MANIFEST))
    assert in_bucket == expected
    assert comparable(manifest) == expected_manifest
    assert manifest["tokenizer"]["path"] == remote_tok
    assert SECRET not in json.dumps(manifest)
    assert list(cwd.iterdir()) == []

    again = pretrain(s3, cwd, "encode", "--data", DATA, "--tokenizer", remote_tok, "--out",
                     remote_out, "--quiet", ok=False)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    assert bucket_files(remote_out).keys() == {MANIFEST, *expected}  # nothing removed


def test_tokenize_refuses_to_overwrite_a_bucket_prefix_that_is_not_tokens(s3, bucket_tokenizer):
    import fsspec

    local_tok, _, cwd = bucket_tokenizer
    fsspec.filesystem("s3").pipe_file(f"{BUCKET}/mine/train/notes.txt", b"not a shard")
    for out in (RUN, f"s3://{BUCKET}/mine"):  # a refine run; a train/ that is not token shards
        before = bucket_files(f"s3://{BUCKET}")
        done = pretrain(s3, cwd, "encode", "--data", DATA, "--tokenizer", local_tok, "--out",
                        out, "--overwrite", "--quiet", ok=False)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
        assert done.stderr.splitlines()[-1].startswith(f"error: {out}")
        assert "choose another --out" in done.stderr.splitlines()[-1]
        assert bucket_files(f"s3://{BUCKET}") == before  # nothing removed


@pytest.mark.parametrize("module", ["tokenizer", "encode"])
def test_a_missing_remote_data_directory_is_an_error_line(s3, bucket_tokenizer, module):
    local_tok, _, cwd = bucket_tokenizer
    missing = f"s3://{BUCKET}/runs/no-such-run/data"
    extra = ["--tokenizer", local_tok] if module == "encode" else []
    done = pretrain(s3, cwd, module, "--data", missing, *extra, "--out",
                    f"s3://{BUCKET}/out-{module}", "--quiet", ok=False)
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and missing in errors[0] and "does not exist" in errors[0]
    assert not bucket_files(f"s3://{BUCKET}/out-{module}")

"""python -m pretrain.ablate: bits per byte against hand computations, equal training
budgets, the held-out exclusion, the same evaluation bytes for every model; one end-to-end
quick run on the bundled WARC sample."""

from __future__ import annotations

import io
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from pretrain.ablate import AblationError, plan_budget
from pretrain.ablate.bpb import EvalText, bits_per_byte, encode_texts, text_sha256, windows
from pretrain.ablate.curated import load_curated, strip_wikitext
from pretrain.ablate.variants import (
    check_second_pass,
    duplicates_of,
    heldout_split,
    raw_config,
    second_pass_config,
    training_rows,
)
from pretrain.codec import LosslessTokenizer
from pretrain.encode import is_validation
from pretrain.model import CausalLM, ModelConfig
from refine.config import load_config
from refine.report.ablation import html_section, markdown_table, svg_plot
from refine.rundir import RunDir

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
EOS = 2


# --- bits per byte -------------------------------------------------------------------------

@pytest.mark.parametrize("n", [0, 1, 5, 63, 64, 65, 200])
@pytest.mark.parametrize(("seq_len", "stride"), [(64, 64), (64, 32), (16, 5), (1, 1)])
def test_windows_score_every_target_once_with_enough_context(n, seq_len, stride):
    scored = []
    for begin, end, first in windows(n, seq_len, stride):
        assert 0 <= begin < end <= n and end - begin <= seq_len  # inputs fit the model
        assert begin < first <= end
        for p in range(first, end + 1):
            scored.append(p)
            assert p - begin >= min(p, seq_len - stride + 1)  # context: the window before p
    assert scored == list(range(1, n + 1))


def eval_text(tokens: list[list[int]], texts: list[str] | None = None) -> EvalText:
    texts = texts or [f"document {i} é" * (1 + len(t) // 4) for i, t in enumerate(tokens)]
    return EvalText("t", [str(i) for i in range(len(tokens))], texts, tokens)


def random_tokens(vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(3, vocab, size=n).tolist() for n in lengths]


@pytest.mark.parametrize(("seq_len", "stride", "batch"), [(8, 8, 1), (8, 3, 4), (50, 25, 16)])
def test_bpb_of_a_unigram_model_equals_the_hand_computation(seq_len, stride, batch):
    vocab = 11
    probs = np.arange(1, vocab + 1, dtype=np.float64)
    probs /= probs.sum()  # token k has probability (k + 1) / 66 wherever it is
    table = torch.tensor(np.log(probs))

    def logits(ids: torch.Tensor) -> torch.Tensor:
        return table.expand(*ids.shape, vocab).clone()

    data = eval_text(random_tokens(vocab, [1, 7, 8, 9, 40]))
    expected_bits = sum(-math.log2(probs[t]) for doc in data.tokens for t in doc)
    expected_bytes = sum(len(t.encode("utf-8")) for t in data.texts)
    result = bits_per_byte(logits, data, EOS, seq_len, stride, batch)
    assert result.bytes == expected_bytes and result.tokens == 65 and result.documents == 5
    assert result.bpb == pytest.approx(expected_bits / expected_bytes, rel=1e-12)


def test_bpb_of_a_bigram_model_starts_each_document_after_eos():
    """p(next | previous) from a table: checks that targets line up with their inputs, and that
    a document's first token is predicted from EOS, never from the previous document."""
    vocab = 7
    rng = np.random.default_rng(3)
    table = rng.dirichlet(np.ones(vocab), size=vocab)  # table[prev][next]
    log_table = torch.tensor(np.log(table))

    def logits(ids: torch.Tensor) -> torch.Tensor:
        return log_table[ids]

    data = eval_text(random_tokens(vocab, [3, 12, 30], seed=1))
    expected = 0.0
    for doc in data.tokens:
        for prev, nxt in zip([EOS, *doc[:-1]], doc, strict=True):
            expected -= math.log2(table[prev][nxt])
    for seq_len, stride in ((4, 4), (4, 1), (64, 64)):
        result = bits_per_byte(logits, data, EOS, seq_len, stride, batch_size=3)
        assert result.bits == pytest.approx(expected, rel=1e-12)


def test_bpb_of_a_uniform_causal_lm_is_log2_vocab_per_token_over_bytes():
    """A real CausalLM whose output layer is zero: every token has probability 1/V, so
    bpb = (number of SentencePiece tokens) * log2(V) / UTF-8 bytes."""
    import sentencepiece as spm

    lines = [line for line in (DATA / "text" / "lee-news-background.txt")
             .read_text(encoding="utf-8").split("\n") if line.strip()]
    model_bytes = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines[:100]), model_writer=model_bytes,
                                   vocab_size=500, model_type="bpe", byte_fallback=True,
                                   minloglevel=2)
    processor = LosslessTokenizer(model_bytes.getvalue())
    texts = lines[100:103] + ["Ünïcode — bytes ≠ characters: 日本語 ▁literal▁."]
    data = encode_texts("news", ["a", "b", "c", "d"], texts, processor)
    config = ModelConfig(vocab_size=processor.piece_size(), hidden_size=32,
                         intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=32)
    model = CausalLM(config).eval()
    torch.nn.init.zeros_(model.lm_head.weight)
    result = bits_per_byte(lambda ids: model(ids).logits, data, processor.eos_id(), 32, 16)
    tokens = sum(len(processor.encode(t)) for t in texts)
    text_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert result.tokens == tokens and result.bytes == text_bytes
    assert text_bytes > sum(map(len, texts))  # multi-byte characters count as bytes
    assert result.bpb == pytest.approx(tokens * math.log2(config.vocab_size) / text_bytes)


def test_bpb_of_a_random_causal_lm_equals_cross_entropy_over_its_windows():
    """An independent computation with torch's cross_entropy: a short document in one forward
    from EOS, a long one in windows of seq_len inputs (stride == seq_len, the last window
    right-aligned so that its new targets get the most context)."""
    import torch.nn.functional as F

    config = ModelConfig(vocab_size=40, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4,
                         max_position_embeddings=16)
    torch.manual_seed(0)
    model = CausalLM(config).eval()
    short, long = random_tokens(40, [9, 37], seed=5)
    expected_nats = 0.0
    with torch.no_grad():
        for doc in (short, long):
            sequence = torch.tensor([EOS, *doc])
            for end in range(16, len(doc) + 16, 16):  # targets end-15..end, each once
                end = min(end, len(doc))
                begin = max(0, end - 16)  # the last window is right-aligned: more context
                logits = model(sequence[begin:end].unsqueeze(0)).logits[0]
                new = (end - 1) % 16 + 1  # targets not scored by the previous window
                expected_nats += float(F.cross_entropy(logits[-new:].double(),
                                                       sequence[end - new + 1:end + 1],
                                                       reduction="sum"))
    data = eval_text([short, long])
    result = bits_per_byte(lambda ids: model(ids).logits, data, EOS, 16, 16, batch_size=2)
    assert result.bpb == pytest.approx(expected_nats / math.log(2) / data.bytes, rel=1e-9)


def test_eval_text_hash_identifies_documents_and_their_boundaries():
    assert text_sha256(["ab", "c"]) == text_sha256(["ab", "c"])
    assert text_sha256(["ab", "c"]) != text_sha256(["a", "bc"])
    assert eval_text([[5]], ["é"]).summary() == {"documents": 1, "bytes": 2, "tokens": 1,
                                                 "sha256": text_sha256(["é"])}


# --- equal training budgets --------------------------------------------------------------------

def test_budget_is_one_epoch_of_the_smallest_variant_the_same_for_all():
    budget = plan_budget({"raw": 10_001, "filtered": 5_001, "refined": 4_097}, seq_len=64,
                         samples_per_step=4, tokens=None, max_steps=None)
    assert budget["steps"] == (4096 // 64) // 4 == 16
    assert budget["train_tokens"] == 16 * 4 * 64
    assert budget["epochs"]["refined"] == 1.0 and budget["epochs"]["raw"] < 1
    capped = plan_budget({"a": 100_000, "b": 90_000}, 64, 4, None, max_steps=10)
    assert capped["steps"] == 10 and capped["capped"]


def test_budget_from_tokens_repeats_small_variants():
    budget = plan_budget({"raw": 10_001, "refined": 1_025}, 64, 2, tokens=8192, max_steps=5)
    assert budget["steps"] == 64 and budget["train_tokens"] == 8192  # --tokens is not capped
    assert budget["epochs"]["refined"] == 128 / 16
    with pytest.raises(AblationError):
        plan_budget({"raw": 100}, 64, 2, tokens=None, max_steps=None)


def write_tokens(directory: Path, count: int, vocab: int, seed: int) -> Path:
    """A TOKENS directory (pretrain.encode's layout) with one train shard."""
    tokens = np.random.default_rng(seed).integers(3, vocab, size=count).astype("<u2")
    (directory / "train").mkdir(parents=True)
    tokens.tofile(directory / "train" / "s.bin")
    np.save(directory / "train" / "s.idx.npy", np.array([0, count], dtype="<i8"))
    manifest = {"dtype": "uint16", "vocab_size": vocab, "eos_id": EOS,
                "shards": [{"name": "s", "train": {"tokens": count, "documents": 1},
                            "val": {"tokens": 0, "documents": 0}}]}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


def test_variants_of_different_sizes_train_on_exactly_the_same_number_of_tokens(tmp_path):
    from pretrain.ablate import QUICK
    from pretrain.ablate.trainer import train_variant
    from pretrain.config import TrainingConfig, parse

    vocab = 50
    sizes = {"big": 5000, "small": 700}
    dirs = {name: write_tokens(tmp_path / name, n, vocab, i)
            for i, (name, n) in enumerate(sizes.items())}
    budget = plan_budget(sizes, 16, 4, tokens=None, max_steps=None)
    training = parse(TrainingConfig, {**QUICK.training, "seq_len": 16, "micro_batch_size": 2,
                                      "grad_accum": 2, "warmup_steps": 1,
                                      "max_steps": budget["steps"]}, "test")
    config = ModelConfig(vocab_size=vocab, **(QUICK.model | {"hidden_size": 16,
                                                             "intermediate_size": 32}))
    results = {name: train_variant(path, config, training, 0, tmp_path / f"m-{name}")
               for name, path in dirs.items()}
    assert {r.train_tokens for r in results.values()} == {budget["train_tokens"]}
    assert results["small"].epochs == pytest.approx(budget["epochs"]["small"]) == 40 / 43
    assert results["big"].epochs == pytest.approx(budget["epochs"]["big"])
    rows = (tmp_path / "m-small" / "metrics.csv").read_text().strip().split("\n")
    assert len(rows) == 1 + budget["steps"]
    assert rows[-1].split(",")[5] == str(budget["train_tokens"])  # the tokens column


def test_same_seed_same_initial_weights_whatever_the_data():
    from pretrain.training.loop import seed_everything

    config = ModelConfig(vocab_size=40, hidden_size=16, intermediate_size=32,
                         num_hidden_layers=1, num_attention_heads=2)
    seed_everything(1)
    first = CausalLM(config).state_dict()
    seed_everything(1)
    second = CausalLM(config).state_dict()
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    seed_everything(2)  # and the seed is what decides them
    third = CausalLM(config).state_dict()
    assert not any(torch.equal(first[k], third[k]) for k in first if first[k].std() > 0)


# --- variants and the held-out split -----------------------------------------------------------

def test_raw_config_keeps_stages_1_to_4_and_the_second_pass_skips_the_url_filter():
    config = load_config(ROOT / "configs" / "refinedweb.yaml")
    raw = raw_config(config)
    assert raw.url.enabled and raw.language.enabled and not raw.dedup.enabled
    assert not (raw.repetition.enabled or raw.quality.enabled or raw.lines.enabled)
    second = second_pass_config(config)
    assert not second.url.enabled
    assert second.model_dump()["dedup"] == config.model_dump()["dedup"]
    assert second.quality == config.quality and second.language == config.language
    stats = {"stages": {"language": {"rejected": {"language_not_kept": 1}},
                        "quality": {"rejected": {"gopher_short": 5}}}}
    assert len(check_second_pass(stats)) == 1


def rows(prefix: str, count: int) -> list[dict]:
    return [{"id": f"{prefix}{i}", "url": f"https://site{i}.example/page", "text": f"text {i}"}
            for i in range(count)]


def test_heldout_documents_and_their_copies_are_excluded_from_every_variant(tmp_path):
    refined = rows("doc", 200)
    split = heldout_split(refined, set(), 0.2)
    heldout = {r["id"] for r in split.heldout}
    assert heldout == {r["id"] for r in refined if is_validation(r["id"], 0.2)}
    assert 10 < len(heldout) < 80
    one = next(r for r in split.heldout)
    dup_of_heldout = {"id": "dup-x", "url": "https://other.example/", "text": "near copy"}
    rejected = pa.table({"id": ["dup-x", "dup-y"], "duplicate_of": [one["id"], "doc-none"]})
    (tmp_path / "rejected").mkdir()
    pq.write_table(rejected, tmp_path / "rejected" / "r.parquet")
    duplicates = duplicates_of(RunDir(tmp_path), heldout)
    assert duplicates == {"dup-x"}
    split = heldout_split(refined, duplicates, 0.2)
    same_url = {"id": "other-id", "url": one["url"].replace("https://", "http://www."),
                "text": "same page, other capture"}
    raw = [*refined, dup_of_heldout, same_url, {"id": "new", "url": "https://n.example/",
                                                "text": "only in raw"}]
    kept, counts = training_rows(raw, split)
    kept_ids = {r["id"] for r in kept}
    assert not kept_ids & (heldout | {"dup-x", "other-id"})
    assert kept_ids == {r["id"] for r in refined} - heldout | {"new"}
    assert counts["excluded_by_id"] == len(heldout) + 1 and counts["excluded_by_url"] == 1
    assert counts["train_documents"] == len(kept)


# --- results -----------------------------------------------------------------------------------

def fake_result() -> dict:
    variants = {}
    for k, name in enumerate(("raw", "filtered", "refined")):
        runs = [{"seed": s, "train_tokens": 4096,
                 "eval": {e: {"bpb": 2.0 - 0.1 * k + 0.01 * s + 0.5 * j}
                          for j, e in enumerate(("curated", "heldout"))}} for s in range(2)]
        summary = {e: {"mean": sum(r["eval"][e]["bpb"] for r in runs) / 2,
                       "spread": 0.01} for e in ("curated", "heldout")}
        variants[name] = {"train_documents": 10 - k, "epochs": 1.0, "runs": runs,
                          "summary": summary}
    evals = {e: {"documents": 3, "bytes": 999, "sha256": "ab" * 32}
             for e in ("heldout", "curated")}
    return {"mode": "quick", "variants": dict(sorted(variants.items())), "eval_sets": evals,
            "variant_order": ["raw", "filtered", "refined"],
            "eval_order": ["curated", "heldout"], "budget": {"steps": 2, "tokens_per_step": 2048}}


def test_table_plot_and_report_section_show_every_variant_in_order():
    result = fake_result()
    table = markdown_table(result)
    lines = table.split("\n")
    assert [line.split("|")[1].strip() for line in lines[2:5]] == ["raw", "filtered", "refined"]
    assert "1.8050 ± 0.0050" in lines[4] and "999 bytes" in table
    svg = svg_plot(result)
    root = ET.fromstring(svg)  # well-formed
    assert len(root.findall(".//{http://www.w3.org/2000/svg}circle")) == 12
    section = html_section(result)
    assert section.count("<tr>") == 4 and "<svg" in section


def test_curated_set_is_shipped_clean_text():
    docs = load_curated()
    sources = {d["source"] for d in docs}
    assert sources == {"wikipedia", "news"}
    text = "\n".join(d["text"] for d in docs)
    assert 200_000 < len(text.encode("utf-8")) < 1_000_000
    for markup in ("{{", "}}", "[[", "]]", "<ref", "'''", "{|"):
        assert markup not in text, markup
    assert strip_wikitext("'''Bold''' [[Link|label]] {{cite|x}}<ref>r</ref> [[File:a.png|b]]"
                          "\n== Head ==") == "Bold label\nHead"


# --- end to end --------------------------------------------------------------------------------

@pytest.mark.slow
def test_quick_ablation_end_to_end(local_ray, tmp_path):
    from pretrain.ablate import ablate
    from refine.cli import main as cli

    out = tmp_path / "ablate"
    inputs = sorted(str(p) for p in (DATA / "warc").glob("*.gz"))
    result = ablate(load_config(ROOT / "configs" / "demo.yaml"), inputs, out, quick=True,
                    seeds=2, workers=2)
    saved = json.loads((out / "ablation.json").read_text())
    assert saved["budget"] == json.loads(json.dumps(result["budget"]))
    runs = [r for v in saved["variants"].values() for r in v["runs"]]
    assert len(runs) == 6 and {r["seed"] for r in runs} == {0, 1}
    # the same number of training tokens for every model
    assert {r["train_tokens"] for r in runs} == {saved["budget"]["train_tokens"]}
    # evaluated on the same bytes: the same texts (hash), bytes and token count everywhere
    for name, eval_set in saved["eval_sets"].items():
        seen = {(r["eval"][name]["bytes"], r["eval"][name]["sha256"],
                 r["eval"][name]["tokens"]) for r in runs}
        assert seen == {(eval_set["bytes"], eval_set["sha256"], eval_set["tokens"])}
        assert all(0 < r["eval"][name]["bpb"] < 16 for r in runs)
    # held-out refined documents are in no variant's training set
    heldout = [r for r in pq.read_table(out / "run" / "data", columns=["id"]).to_pylist()
               if is_validation(r["id"], 0.1)]
    assert len(heldout) == saved["eval_sets"]["heldout"]["documents"] > 0
    for variant in ("raw", "filtered", "refined"):
        train = pq.read_table(out / "variants" / variant / "train.parquet").to_pylist()
        assert not {r["id"] for r in train} & {r["id"] for r in heldout}
    # one tokenizer for all
    shas = {json.loads((out / "tokens" / v / "manifest.json").read_text())["tokenizer"]
            ["model_sha256"] for v in ("raw", "filtered", "refined")}
    assert shas == {saved["tokenizer"]["model_sha256"]}
    assert saved["problems"] == []
    table = (out / "ablation.md").read_text()
    assert sum(line.startswith("| ") for line in table.split("\n")) == 4  # header + 3
    svg = ET.fromstring((out / "ablation.svg").read_text())
    ns = "{http://www.w3.org/2000/svg}"
    assert svg.tag == f"{ns}svg"
    # a dot per model and evaluation set, titled with that run's saved bits per byte
    dots = sorted(circle.find(f"{ns}title").text for circle in svg.iter(f"{ns}circle"))
    assert dots == sorted(f"{variant} seed {run['seed']}: {run['eval'][name]['bpb']:.4f}"
                          for name in saved["eval_sets"]
                          for variant, value in saved["variants"].items()
                          for run in value["runs"])
    page = (out / "run" / "report.html").read_text()
    assert 'id="ablation"' in page and "<svg" in page
    # `refine report RUN --ablation DIR` (another output)
    assert cli(["report", str(out / "raw-run"), "--ablation", str(out),
                "--output", str(tmp_path / "r.html")]) == 0
    assert 'id="ablation"' in (tmp_path / "r.html").read_text()


# --- its own command line ----------------------------------------------------------------------

def test_the_command_is_pretrain_ablate_and_a_bad_config_fails_before_any_work(tmp_path, capsys):
    import subprocess
    import sys

    from pretrain.ablate.__main__ import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("quality:\n  max_n_words: -3\n")
    out = tmp_path / "out"
    assert main([str(bad), "--input", str(DATA / "warc" / "*.gz"), "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "max_n_words" in err, err
    assert not out.exists()  # nothing written
    helped = subprocess.run([sys.executable, "-m", "pretrain.ablate", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert helped.returncode == 0 and "--quick" in helped.stdout
    listed = subprocess.run([sys.executable, "-m", "refine.cli", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0 and "ablate" not in listed.stdout.split("positional")[1]

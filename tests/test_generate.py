"""pretrain.generate and the model's KV cache: cached decoding equals full forwards, greedy equals
transformers' generate on the export, sampling is reproducible for a seed, the text streams
intact, and bad input is refused with a message."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pretrain.codec import LosslessTokenizer
from pretrain.export import EOS_ID, load_hf_model
from pretrain.generate import (
    Sampling,
    TextStream,
    filter_logits,
    generate_batch,
    generate_text,
    generate_tokens,
    main,
    next_token,
    next_tokens,
)
from pretrain.model import CausalLM, KVCache, ModelConfig, PaddedKVCache

from .tiny_lm import news_lines, news_tokenizer, tiny_export

transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["The prime minister", "Australian troops", "", "  leading spaces and a number 1997"]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    """A tiny model trained for 40 steps on news text, exported (model + tokenizer)."""
    root = tmp_path_factory.mktemp("generate")
    return tiny_export(root / "hf", news_tokenizer(root / "tok"), steps=40)


@pytest.fixture(scope="module")
def model(export) -> CausalLM:
    return load_hf_model(export)


@pytest.fixture(scope="module")
def tokenizer(export) -> LosslessTokenizer:
    return LosslessTokenizer.load(export)


def run_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain.generate", *args], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=300)


# --- the KV cache --------------------------------------------------------------------------

@pytest.mark.parametrize("kv_heads", [4, 2, 1])
def test_cached_decoding_equals_full_forwards(kv_heads):
    config = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
                         max_position_embeddings=40)
    torch.manual_seed(0)
    model = CausalLM(config).eval()
    ids = torch.randint(0, 50, (2, 30))
    with torch.no_grad():
        full = model(ids).logits
        cache = KVCache(config, 2, 32)
        prompt = model(ids[:, :10], cache=cache).logits
        assert torch.equal(prompt, model(ids[:, :10]).logits)  # as without a cache, exactly
        chunk = model(ids[:, 10:17], cache=cache).logits  # several new positions at once
        steps = [model(ids[:, i:i + 1], cache=cache).logits for i in range(17, 30)]
    assert cache.length == 30
    assert (torch.cat([chunk, *steps], dim=1) - full[:, 10:]).abs().max() < 1e-5
    with pytest.raises(ValueError, match="capacity"):
        model(ids[:, :3], cache=cache)  # 33 positions > 32
    with pytest.raises(ValueError, match="max_position_embeddings"):
        KVCache(config, 1, 41)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_padded_batch_logits_equal_single_sequence_logits(kv_heads):
    """Left-padded rows of different lengths in one PaddedKVCache: each row's logits (prompt,
    then one token per step, then after rows leave) equal its own single-sequence forward."""
    config = ModelConfig(vocab_size=50, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=kv_heads,
                         max_position_embeddings=40)
    torch.manual_seed(0)
    model = CausalLM(config).eval()
    lengths = [5, 12, 1, 9]
    contexts = [torch.randint(0, 50, (n,)) for n in lengths]
    steps = torch.randint(0, 50, (4, 10))
    width = max(lengths)
    ids = torch.zeros((4, width), dtype=torch.long)
    for row, context in enumerate(contexts):
        ids[row, width - len(context):] = context
    worst = 0.0
    with torch.no_grad():
        cache = PaddedKVCache(config, [width - n for n in lengths], width + 10)
        prompt = model(ids, cache=cache).logits
        for row, context in enumerate(contexts):
            alone = model(context[None]).logits[0]
            worst = max(worst, (prompt[row, width - len(context):] - alone).abs().max().item())
            assert torch.isfinite(prompt[row]).all()  # padding queries see themselves: no nan
        live = [0, 1, 2, 3]
        for step in range(10):
            if step == 4:  # the longest row leaves: the slots only its prompt used go too
                cache.keep([0, 2, 3])
                live = [0, 2, 3]
                assert cache.pad.tolist() == [4, 8, 0]  # were 7, 11, 3: 3 slots cut
            logits = model(steps[live, step:step + 1], cache=cache).logits[:, 0]
            for index, row in enumerate(live):
                full = torch.cat([contexts[row], steps[row, :step + 1]])
                alone = model(full[None]).logits[0, -1]
                worst = max(worst, (logits[index] - alone).abs().max().item())
    assert worst < 1e-5
    with pytest.raises(ValueError, match="capacity"):
        model(steps[[0, 2, 3], :1], cache=cache)  # the slots are used up


def test_generate_batch_equals_generate_tokens_row_by_row(model):
    """Rows of different lengths, budgets, greedy or sampled with their own seeds, decoded
    together: each row's tokens are generate_tokens' for that row alone, whatever its
    neighbours; a row that on_token ends stops there."""
    contexts = [[EOS_ID, *range(3, 3 + n)] for n in (0, 7, 3, 20, 1, 11)]
    samplings = [Sampling(12, 0.0), Sampling(30, 1.0, 0, 0.9, 5), Sampling(5, 0.8, 10, 1.0, 1),
                 Sampling(500, 0.0), Sampling(20, 1.2, 0, 1.0, 9), Sampling(1, 1.0, seed=2)]
    batched = generate_batch(model, contexts, samplings, EOS_ID)
    for context, sampling, tokens in zip(contexts, samplings, batched, strict=True):
        assert tokens == list(generate_tokens(model, context, sampling, EOS_ID)), sampling
    assert len(batched[3]) == 128 - 21 or batched[3][-1] == EOS_ID  # the context's room
    # the same row beside other rows (or alone) samples the same: its own generator
    assert generate_batch(model, contexts[1:3], samplings[1:3], EOS_ID)[0] == batched[1]
    seen: list[tuple[int, int]] = []
    cut = generate_batch(model, contexts, samplings, EOS_ID,
                         lambda row, token: seen.append((row, token)) or row != 1)
    assert cut[1] == batched[1][:1] and cut[0] == batched[0]
    assert sorted(seen) == sorted((row, t) for row, tokens in enumerate(cut) for t in tokens)
    with pytest.raises(ValueError, match="one of each per row"):
        generate_batch(model, contexts, samplings[:2], EOS_ID)


# --- greedy and sampling -------------------------------------------------------------------

def test_greedy_equals_transformers_generate_on_the_export(export, model, tokenizer):
    hf = transformers.LlamaForCausalLM.from_pretrained(export, dtype=torch.float32).eval()
    for prompt in PROMPTS:
        context = [EOS_ID, *tokenizer.encode(prompt)]
        ours = list(generate_tokens(model, context, Sampling(24, temperature=0.0), EOS_ID))
        inputs = torch.tensor([context])
        expected = hf.generate(inputs, attention_mask=torch.ones_like(inputs),
                               max_new_tokens=24, do_sample=False, pad_token_id=EOS_ID)
        assert ours == expected[0, len(context):].tolist(), prompt
        assert len(ours) == 24 or ours[-1] == EOS_ID


def test_greedy_cli_prints_the_decoded_greedy_continuation(export, model, tokenizer, capsys):
    prompt = "The prime minister"
    ids = list(generate_tokens(model, [EOS_ID, *tokenizer.encode(prompt)],
                               Sampling(16, temperature=0.0), EOS_ID))
    expected = tokenizer.decode(tokenizer.encode(prompt) + [i for i in ids if i != EOS_ID])
    assert main([str(export), "--prompt", prompt, "--greedy", "--max-new-tokens", "16"]) == 0
    printed = capsys.readouterr()
    assert prompt + printed.out.removesuffix("\n") == expected
    assert "greedy" in printed.err and "tokens in" in printed.err
    piped = run_cli(str(export), "--temperature", "0", "--max-new-tokens", "16",
                    stdin=prompt + "\n")  # the prompt from stdin, its newline dropped
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == printed.out


def test_sampling_is_deterministic_for_a_seed(export, model, tokenizer, capsys):
    context = [EOS_ID, *tokenizer.encode("The prime minister")]

    def sample(seed: int, **options) -> list[int]:
        sampling = Sampling(32, temperature=options.pop("temperature", 1.0), seed=seed,
                            **options)
        return list(generate_tokens(model, context, sampling, EOS_ID))

    assert sample(7) == sample(7)
    assert len({tuple(sample(seed)) for seed in range(4)}) > 1  # the seed matters
    greedy = list(generate_tokens(model, context, Sampling(32, temperature=0.0), EOS_ID))
    assert sample(3, top_k=1) == greedy  # top-1 sampling is greedy whatever the seed
    assert sample(4, top_p=1e-6) == greedy
    assert sample(5, temperature=1e-4) == greedy
    flags = [str(export), "--prompt", "The", "--seed", "11", "--max-new-tokens", "20",
             "--top-p", "0.9"]
    assert main(flags) == 0
    first = capsys.readouterr().out
    assert main(flags) == 0
    assert capsys.readouterr().out == first and first.strip()


def test_generation_stops_after_the_stop_token_and_at_the_token_budget(model, tokenizer):
    context = [EOS_ID, *tokenizer.encode("Australian troops")]
    free = list(generate_tokens(model, context, Sampling(12, temperature=0.0), None))
    assert len(free) == 12
    stop = free[5]
    stopped = list(generate_tokens(model, context, Sampling(12, temperature=0.0), stop))
    assert stopped == free[:free.index(stop) + 1]
    # the context limits the budget: 128 positions, so 128 - len(context) new tokens at most
    assert len(list(generate_tokens(model, context, Sampling(500, temperature=0.0), None))) \
        == model.config.max_position_embeddings - len(context)


def test_next_tokens_of_a_batch_equal_next_token_row_by_row():
    """The batched choice (greedy rows, sampled rows with their own temperature, top-k, top-p
    and generator) picks exactly what next_token picks for each row alone."""
    torch.manual_seed(0)
    logits = torch.randn(12, 500) * 4
    samplings = [Sampling(4, temperature, top_k, top_p, seed)
                 for seed, (temperature, top_k, top_p) in enumerate(
                     [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.7, 0, 0.9), (1.3, 10, 1.0),
                      (1.0, 50, 0.95), (0.8, 0, 0.5), (1.0, 0, 1e-6), (0.0, 5, 0.5)] * 2)][:12]

    def generators():
        return [None if s.greedy else torch.Generator().manual_seed(s.seed) for s in samplings]

    batched, alone = generators(), generators()
    for _ in range(5):  # the generators move on: each draw equals the single row's draw
        assert next_tokens(logits, samplings, batched) == [
            next_token(logits[row], sampling, alone[row])
            for row, sampling in enumerate(samplings)]


def test_filter_logits_keeps_the_top_k_then_the_top_p_mass():
    logits = torch.log(torch.tensor([0.05, 0.4, 0.1, 0.3, 0.15]))
    assert torch.isfinite(filter_logits(logits, 2, 1.0)).tolist() == [False, True, False,
                                                                      True, False]
    # 0.4 + 0.3 = 0.7 < 0.75, so the third most likely (0.15) is needed too
    assert torch.isfinite(filter_logits(logits, 0, 0.75)).tolist() == [False, True, False,
                                                                       True, True]
    assert torch.isfinite(filter_logits(logits, 0, 0.7)).tolist() == [False, True, False,
                                                                      True, False]
    assert torch.isfinite(filter_logits(logits, 0, 1e-9)).sum() == 1  # never nothing
    kept = filter_logits(logits, 0, 0.75)
    assert torch.equal(kept[torch.isfinite(kept)], logits[[1, 3, 4]])  # values untouched


# --- the text stream -------------------------------------------------------------------------

def test_streamed_pieces_add_up_to_the_decoded_text(tokenizer):
    text = news_lines()[0][:300] + " Ünïcode — 日本語 ✓ and a literal \u2581 mark."
    ids = tokenizer.encode(text)
    for cut in (0, 1, 5, len(ids) // 2):
        prompt, generated = ids[:cut], ids[cut:]
        stream = TextStream(tokenizer, prompt)
        pieces = [stream.push(token) for token in generated] + [stream.flush()]
        assert not any("\ufffd" in piece for piece in pieces)  # no half characters shown
        assert "".join(pieces) == tokenizer.decode(ids)[len(tokenizer.decode(prompt)):]
    # a continuation that starts a word keeps its space ("▁world" after "Hello" is " world")
    cut = next(i for i in range(1, len(ids))
               if tokenizer.processor.id_to_piece(ids[i]).startswith("\u2581"))
    stream = TextStream(tokenizer, ids[:cut])
    assert stream.push(ids[cut]).startswith(" ")


def test_generate_text_yields_the_continuation_token_by_token(model, tokenizer):
    pairs = list(generate_text(model, tokenizer, "The prime minister", Sampling(40, 0.0)))
    tokens = [t for t, _ in pairs if t is not None]
    assert len(tokens) == 40 or tokens[-1] == EOS_ID
    prompt_ids = tokenizer.encode("The prime minister")
    body = [t for t in tokens if t != EOS_ID]
    expected = tokenizer.decode(prompt_ids + body)[len("The prime minister"):]
    assert "".join(piece for _, piece in pairs) == expected


# --- bad input -------------------------------------------------------------------------------

def test_bad_input_is_refused_with_a_message(export, tmp_path, capsys, monkeypatch):
    assert main([str(tmp_path / "missing"), "--prompt", "x"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main([str(tmp_path), "--prompt", "x"]) == 2  # a directory that holds no model
    assert "neither config.json" in capsys.readouterr().err
    long_prompt = " ".join(news_lines()[:20])
    assert main([str(export), "--prompt", long_prompt]) == 2
    assert "the model's context is 128" in capsys.readouterr().err
    for flags, message in ((["--top-p", "0"], "top-p must be in (0, 1]"),
                           (["--temperature", "-1"], "temperature must be >= 0"),
                           (["--max-new-tokens", "0"], "max-new-tokens must be at least 1"),
                           (["--top-k", "-2"], "top-k must be >= 0")):
        with pytest.raises(SystemExit) as exit_info:
            main([str(export), "--prompt", "x", *flags])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # an empty prompt: a document from
    assert main([str(export), "--max-new-tokens", "8"]) == 0  # scratch


def test_help_explains_the_cli(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for words in ("KVCache", "--greedy", "--top-p", "--seed", "stdin", "EOS"):
        assert words in text

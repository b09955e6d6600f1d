"""pretrain.export: our CausalLM as a transformers LlamaForCausalLM directory, and back."""

import io
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from safetensors import safe_open

from pretrain.export import (
    export_checkpoint,
    hf_config,
    hf_state_dict,
    llama_shapes,
    load_hf_model,
    load_state_dict_safely,
    save_hf_model,
)
from pretrain.model import CausalLM, ModelConfig

transformers = pytest.importorskip("transformers")

TEXT = Path(__file__).parent / "data" / "text" / "lee-news-background.txt"
SEQ = 192
ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "configs" / "pretrain" / "tiny.yaml"
ZERO1 = ROOT / "configs" / "deepspeed" / "zero1.json"


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory) -> Path:
    """A TOK-like directory: a 512-piece Llama-style SentencePiece BPE model of the news text."""
    out = tmp_path_factory.mktemp("tok")
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(TEXT.read_text().splitlines()), model_writer=model,
        model_type="bpe", vocab_size=512, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    (out / "tokenizer.model").write_bytes(model.getvalue())
    return out


@pytest.fixture(scope="module")
def vocab_size(tok_dir) -> int:
    return spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model")).get_piece_size()


def config(vocab_size: int, **overrides) -> ModelConfig:
    fields = {"vocab_size": vocab_size, "hidden_size": 64, "intermediate_size": 176,
              "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 256,
              "rope_theta": 50000.0}
    return ModelConfig(**(fields | overrides))


@pytest.mark.parametrize(("tied", "kv_heads"), [(True, 4), (False, 4), (False, 2), (True, 1)])
def test_exported_model_loads_in_transformers_with_equal_logits(tok_dir, vocab_size, tmp_path,
                                                                tied, kv_heads):
    model_config = config(vocab_size, tie_word_embeddings=tied, num_key_value_heads=kv_heads)
    torch.manual_seed(0)
    ours = CausalLM(model_config).eval()
    out = save_hf_model(ours, model_config, tmp_path / "hf", tokenizer_dir=tok_dir)

    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = TEXT.read_text()[:1000]
    ids = tokenizer(text).input_ids[:SEQ]
    sp = spm.SentencePieceProcessor(model_file=str(tok_dir / "tokenizer.model"))
    assert ids == sp.encode(text)[:SEQ] and len(ids) == SEQ
    input_ids = torch.tensor([ids])

    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert (hf.lm_head.weight is hf.model.embed_tokens.weight) == tied
    assert hf.config.num_key_value_heads == kv_heads
    with torch.no_grad():
        expected = ours(input_ids, labels=input_ids)
        got = hf(input_ids, labels=input_ids)
    assert (got.logits - expected.logits).abs().max().item() <= 1e-4
    assert abs(got.loss.item() - expected.loss.item()) <= 1e-5

    generated = hf.generate(input_ids[:, :16], max_new_tokens=8, do_sample=False,
                            attention_mask=torch.ones(1, 16, dtype=torch.long))
    assert generated.shape == (1, 24) and torch.equal(generated[:, :16], input_ids[:, :16])
    with torch.no_grad():  # greedy: the first new token is our argmax
        assert generated[0, 16].item() == ours(input_ids[:, :16]).logits[0, -1].argmax().item()
    assert isinstance(tokenizer.decode(generated[0]), str)


def test_config_json_and_weights_file(vocab_size, tmp_path):
    for tied in (True, False):
        model_config = config(vocab_size, tie_word_embeddings=tied, num_key_value_heads=2)
        out = save_hf_model(CausalLM(model_config), model_config, tmp_path / str(tied))
        written = json.loads((out / "config.json").read_text())
        assert written["rope_theta"] == 50000.0
        assert written["rope_parameters"] == {"rope_type": "default", "rope_theta": 50000.0}
        assert written["architectures"] == ["LlamaForCausalLM"]
        assert written["model_type"] == "llama" and written["tie_word_embeddings"] is tied
        assert written["torch_dtype"] == written["dtype"] == "float32"
        assert (written["bos_token_id"], written["eos_token_id"]) == (1, 2)
        loaded = transformers.AutoConfig.from_pretrained(out)
        theta = getattr(loaded, "rope_parameters", None) or {"rope_theta": loaded.rope_theta}
        assert theta["rope_theta"] == 50000.0 and loaded.num_key_value_heads == 2
        with safe_open(out / "model.safetensors", "pt") as weights:
            names = list(weights.keys())
            assert ("lm_head.weight" in names) is not tied
            assert weights.metadata() == {"format": "pt"}
            assert all(weights.get_tensor(name).dtype == torch.float32 for name in names)


@pytest.mark.parametrize("tied", [True, False])
def test_our_state_dict_is_exactly_llamas(vocab_size, tied):
    model_config = config(vocab_size, tie_word_embeddings=tied, num_key_value_heads=2)
    ours = {k: tuple(v.shape) for k, v in CausalLM(model_config).state_dict().items()}
    theirs = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**hf_config(model_config))).state_dict()
    assert ours == llama_shapes(model_config) == {k: tuple(v.shape) for k, v in theirs.items()}


def test_round_trip_and_state_dict_checks(vocab_size, tok_dir, tmp_path):
    model_config = config(vocab_size, tie_word_embeddings=True)
    model = CausalLM(model_config)
    bf16 = {f"module.{k}": v.to(torch.bfloat16) for k, v in model.state_dict().items()}
    out = save_hf_model(bf16, model_config, tmp_path / "hf")  # wrapper prefix, cast to fp32
    back = load_hf_model(out)
    assert back.config == model_config
    assert back.lm_head.weight is back.model.embed_tokens.weight
    for name, tensor in back.state_dict().items():
        assert torch.equal(tensor, model.state_dict()[name].to(torch.bfloat16).float()), name

    state = model.state_dict()
    with pytest.raises(ValueError, match="missing.*model.norm.weight"):
        hf_state_dict({k: v for k, v in state.items() if k != "model.norm.weight"}, model_config)
    with pytest.raises(ValueError, match="unexpected.*extra"):
        hf_state_dict(state | {"extra": torch.zeros(1)}, model_config)
    bad = state | {"model.norm.weight": torch.ones(3)}
    with pytest.raises(ValueError, match=r"model\.norm\.weight: shape \(3,\)"):
        hf_state_dict(bad, model_config)
    untied_head = state | {"lm_head.weight": torch.zeros_like(state["lm_head.weight"])}
    with pytest.raises(ValueError, match="tie_word_embeddings"):
        hf_state_dict(untied_head, model_config)
    with pytest.raises(ValueError, match="pieces > model vocab_size"):
        smaller = config(vocab_size - 1)
        save_hf_model(CausalLM(smaller), smaller, tmp_path / "small", tokenizer_dir=tok_dir)


def test_tokenizer_files_are_copied_from_an_hf_tokenizer_dir(vocab_size, tok_dir, tmp_path):
    model_config = config(vocab_size)
    first = save_hf_model(CausalLM(model_config), model_config, tmp_path / "a", tok_dir)
    second = save_hf_model(CausalLM(model_config), model_config, tmp_path / "b", first)
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json"):
        assert (second / name).read_bytes() == (first / name).read_bytes(), name
    with pytest.raises(FileNotFoundError, match="neither"):
        save_hf_model(CausalLM(model_config), model_config, tmp_path / "c", tmp_path)


class _Exploit:
    def __reduce__(self):
        return (print, ("unpickled!",))


def test_load_state_dict_safely_never_unpickles_objects(tmp_path):
    tensors = {"a": torch.arange(3.0)}
    torch.save(tensors, tmp_path / "ok.pt")
    assert torch.equal(load_state_dict_safely(tmp_path / "ok.pt")["a"], tensors["a"])
    torch.save({"a": torch.zeros(1), "evil": _Exploit()}, tmp_path / "evil.pt")
    with pytest.raises(pickle.UnpicklingError):
        load_state_dict_safely(tmp_path / "evil.pt")
    torch.save({"a": torch.zeros(1), "step": 3}, tmp_path / "mixed.pt")
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        load_state_dict_safely(tmp_path / "mixed.pt")


# --- a real pretrain.train checkpoint: export finds the tokenizer that training recorded -------

def export_cli(checkpoint: Path, out: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pretrain.export", str(checkpoint), str(out),
                           *flags], cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def trained(tokens_dir, tokenizer_dir, tmp_path_factory) -> Path:
    """CKPT of a 2-step single-process pretrain.train run with --tokenizer, started from another
    working directory with relative paths (export runs from the repository root)."""
    pytest.importorskip("deepspeed")
    cwd = tmp_path_factory.mktemp("train-cwd")
    command = [sys.executable, str(ROOT / "pretrain" / "train.py"), "--config", str(TINY),
               "--deepspeed_config", str(ZERO1), "--data", os.path.relpath(tokens_dir, cwd),
               "--tokenizer", os.path.relpath(tokenizer_dir, cwd), "--output", "ckpt",
               "--max_steps", "2", "--warmup_steps", "1", "--micro_batch_size", "2",
               "--grad_accum", "1", "--eval_every", "2", "--eval_steps", "1",
               "--checkpoint_every", "2"]
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600,
                          env=os.environ | {"OMP_NUM_THREADS": "2"})
    assert done.returncode == 0, done.stderr[-5000:]
    return cwd / "ckpt"


def edit_state(checkpoint: Path, dest: Path, **changes) -> Path:
    """A copy of the checkpoint whose train_state.json has `changes`."""
    copy = shutil.copytree(checkpoint, dest)
    state_file = copy / (copy / "latest").read_text().strip() / "train_state.json"
    state_file.write_text(json.dumps(json.loads(state_file.read_text()) | changes))
    return copy


@pytest.mark.slow
def test_export_without_tokenizer_uses_the_one_training_recorded(trained, tokenizer_dir,
                                                                 tmp_path):
    state = json.loads((trained / "global_step2" / "train_state.json").read_text())
    assert state["tokenizer"] == str(tokenizer_dir.resolve())  # absolute, not as typed
    assert Path(state["tokens"]).is_absolute()
    done = export_cli(trained, tmp_path / "hf")
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "hf"
    assert f"tokenizer: {tokenizer_dir.resolve()} (recorded by the checkpoint)" in done.stderr
    model_file = (tokenizer_dir / "tokenizer.model").read_bytes()
    assert (out / "tokenizer.model").read_bytes() == model_file
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    text = TEXT.read_text()[:2000]
    sp = spm.SentencePieceProcessor(model_file=str(tokenizer_dir / "tokenizer.model"))
    assert tokenizer(text).input_ids == sp.encode(text)
    assert tokenizer.eos_token_id == 2
    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.float32)
    assert hf.config.vocab_size == sp.get_piece_size()
    explicit = export_cli(trained, tmp_path / "explicit", "--tokenizer", str(tokenizer_dir))
    assert explicit.returncode == 0, explicit.stderr[-3000:]
    for name in ("tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "model.safetensors"):
        assert (out / name).read_bytes() == (tmp_path / "explicit" / name).read_bytes(), name


@pytest.mark.slow
def test_export_falls_back_to_the_tokenizer_of_the_token_manifest(trained, tokens_dir,
                                                                  tokenizer_dir, tmp_path):
    """A run trained without --tokenizer records none; the token shards name theirs."""
    manifest = json.loads((tokens_dir / "manifest.json").read_text())
    assert manifest["tokenizer"]["path"] == str(tokenizer_dir.resolve())
    copy = edit_state(trained, tmp_path / "ckpt", tokenizer=None)
    out = export_checkpoint(copy, tmp_path / "hf")
    assert (out / "tokenizer.model").read_bytes() == (
        tokenizer_dir / "tokenizer.model").read_bytes()
    assert transformers.AutoTokenizer.from_pretrained(out).eos_token_id == 2


@pytest.mark.slow
def test_export_without_a_recorded_tokenizer_fails_naming_the_flag(trained, tokens_dir,
                                                                   tok_dir, tmp_path):
    old_tokens = tmp_path / "old-tokens"  # a manifest from before tokenizer paths were recorded
    old_tokens.mkdir()
    manifest = json.loads((tokens_dir / "manifest.json").read_text())
    del manifest["tokenizer"]["path"]
    (old_tokens / "manifest.json").write_text(json.dumps(manifest))
    synthetic = tmp_path / "synthetic-tokens"  # write_synthetic_tokens: "tokenizer": null
    synthetic.mkdir()
    (synthetic / "manifest.json").write_text(json.dumps(manifest | {"tokenizer": None}))
    cases = {"recorded no tokenizer": {"tokenizer": None, "tokens": str(old_tokens)},
             "no tokenizer path in the token manifest": {"tokenizer": None,
                                                         "tokens": str(synthetic)},
             "holds no tokenizer.model": {"tokenizer": str(tmp_path / "gone"),
                                          "tokens": str(old_tokens)},
             "sha256 differs": {"tokenizer": str(tok_dir)}}  # another tokenizer
    for number, (message, changes) in enumerate(cases.items()):
        copy = edit_state(trained, tmp_path / f"ckpt{number}", **changes)
        done = export_cli(copy, tmp_path / f"hf{number}")
        assert done.returncode == 2, done.stderr[-3000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith("error: ") and "Traceback" not in done.stderr
        assert message in last and "pass --tokenizer" in last
        assert not (tmp_path / f"hf{number}").exists()  # fails before writing anything


def test_bf16_optimizer_checkpoints_are_consolidated_from_every_ranks_fragments(tmp_path):
    """DeepSpeed's BF16_Optimizer (ZeRO-1, bf16, fp32 gradient accumulation) saves per rank a
    flat fp32 partition per group and name -> (numel, start) of each parameter's fragment in
    it; a parameter may straddle ranks. Made by hand here (two ranks, two groups, a tied
    lm_head); the real files are tested in tests/test_train.py (bf16 under ZeRO 1-3)."""
    pytest.importorskip("deepspeed")
    from collections import OrderedDict

    from deepspeed.utils.tensor_fragment import fragment_address

    from pretrain.training.engine import consolidated_state_dict, is_bf16_optimizer_checkpoint

    torch.manual_seed(0)
    groups = [OrderedDict([("model.embed_tokens.weight", torch.randn(5, 3)),
                           ("model.layers.0.mlp.up_proj.weight", torch.randn(2, 3))]),
              OrderedDict([("model.norm.weight", torch.randn(3))])]
    tag = tmp_path / "global_step7"
    tag.mkdir()
    torch.save({"module": {}, "param_shapes": [OrderedDict((n, t.shape) for n, t in g.items())
                                               for g in groups],
                "shared_params": {"lm_head.weight": "model.embed_tokens.weight"}},
               tag / "mp_rank_00_model_states.pt")
    partitions: list[list[torch.Tensor]] = [[], []]
    mappings: list[list[OrderedDict]] = [[], []]
    for group in groups:
        flat = torch.cat([t.reshape(-1) for t in group.values()])
        flat = torch.cat([flat, torch.zeros(-len(flat) % 2)])  # padded to 2 equal partitions
        size = len(flat) // 2
        offset = 0
        for rank in range(2):
            partitions[rank].append(flat[rank * size:(rank + 1) * size].clone())
            mappings[rank].append(OrderedDict())
        for name, tensor in group.items():
            for rank in range(2):
                lo, hi = max(offset, rank * size), min(offset + tensor.numel(), (rank + 1) * size)
                if lo < hi:
                    mappings[rank][-1][name] = fragment_address(numel=hi - lo,
                                                                start=lo - rank * size)
            offset += tensor.numel()
    for rank in range(2):
        torch.save({"optimizer_state_dict": {
            "single_partition_of_fp32_groups": partitions[rank], "group_paddings": [0, 0],
            "partition_count": [2, 2], "param_slice_mappings": mappings[rank],
            "base_optimizer_state": {}, "clip_grad": 1.0}},
            tag / f"bf16_zero_pp_rank_{rank}_mp_rank_00_optim_states.pt")
    assert is_bf16_optimizer_checkpoint(tag)
    weights = consolidated_state_dict(tmp_path, "global_step7")
    expected = {name: t for group in groups for name, t in group.items()}
    assert sorted(weights) == sorted([*expected, "lm_head.weight"])
    for name, tensor in expected.items():
        assert torch.equal(weights[name], tensor), name
    assert torch.equal(weights["lm_head.weight"], expected["model.embed_tokens.weight"])
    (tag / "bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt").unlink()
    with pytest.raises(ValueError, match="one of 2 ranks.*holds 1 BF16_Optimizer files"):
        consolidated_state_dict(tmp_path, "global_step7")

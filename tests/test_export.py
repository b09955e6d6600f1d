"""pretrain.export: our CausalLM as a transformers LlamaForCausalLM directory, and back."""

import io
import json
import pickle
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
from safetensors import safe_open

from pretrain.export import (
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

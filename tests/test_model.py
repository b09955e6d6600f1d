"""pretrain.model (the Llama-style decoder) and pretrain.config (configs/pretrain/*.yaml)."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from pretrain.config import ConfigError, load_config, parse_config
from pretrain.model import (
    CausalLM,
    ModelConfig,
    compile_layers,
    next_token_loss,
    rope_cos_sin,
)
from pretrain.training.loop import language_modelling

CONFIGS = Path(__file__).resolve().parent.parent / "configs" / "pretrain"
VOCAB = 96


def tiny(**overrides) -> ModelConfig:
    fields = {"vocab_size": VOCAB, "hidden_size": 32, "intermediate_size": 64,
              "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 64}
    return ModelConfig(**(fields | overrides))


def build(seed: int = 0, **overrides) -> CausalLM:
    torch.manual_seed(seed)
    return CausalLM(tiny(**overrides)).eval()


def ids(batch: int = 2, seq: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


def test_shapes_and_loss_at_init_is_near_uniform():
    model = build()
    tokens = ids()
    out = model(tokens, labels=tokens)
    assert out.logits.shape == (2, 24, VOCAB) and out.logits.dtype == torch.float32
    assert out.loss.shape == () and abs(out.loss.item() - math.log(VOCAB)) < 0.1
    assert model(tokens).loss is None


def test_causal_a_future_token_changes_no_earlier_logits():
    model = build()
    tokens = ids(batch=1, seq=32)
    changed = tokens.clone()
    changed[0, 20] = (changed[0, 20] + 1) % VOCAB
    with torch.no_grad():
        before, after = model(tokens).logits, model(changed).logits
    assert torch.equal(before[:, :20], after[:, :20])
    assert not torch.allclose(before[:, 20:], after[:, 20:])


def test_loss_is_shifted_mean_cross_entropy_ignoring_minus_100():
    model = build()
    tokens = ids()
    labels = tokens.clone()
    labels[0, 5:9] = -100
    labels[1, -1] = -100
    with torch.no_grad():
        out = model(tokens, labels=labels)
    logp = torch.log_softmax(out.logits.double(), dim=-1)
    terms = [-logp[b, t, labels[b, t + 1]] for b in range(2) for t in range(23)
             if labels[b, t + 1] != -100]
    expected = torch.stack(terms).mean()
    assert len(terms) == 2 * 23 - 5
    assert abs(out.loss.item() - expected.item()) < 1e-5
    reference = F.cross_entropy(out.logits[:, :-1].reshape(-1, VOCAB), labels[:, 1:].reshape(-1))
    assert torch.allclose(out.loss, reference)
    assert torch.allclose(next_token_loss(out.logits[:, :-1], labels[:, 1:]), out.loss)


@pytest.mark.parametrize("kv_heads", [1, 2])
def test_gqa_equals_attention_with_repeated_kv_heads(kv_heads):
    gqa = build(num_key_value_heads=kv_heads)
    assert gqa.model.layers[0].self_attn.k_proj.weight.shape == (kv_heads * 8, 32)
    mha = build(seed=5)  # same shapes otherwise: copy GQA's weights, kv heads repeated
    state = gqa.state_dict()
    group = 4 // kv_heads
    for name, tensor in state.items():
        if name.endswith(("k_proj.weight", "v_proj.weight")):
            state[name] = tensor.view(kv_heads, 8, 32).repeat_interleave(group, 0).reshape(32, 32)
    mha.load_state_dict(state)
    tokens = ids()
    with torch.no_grad():
        assert torch.allclose(gqa(tokens).logits, mha(tokens).logits, atol=1e-5)


def test_gqa_kv_heads_reach_attention_unrepeated_also_compiled_and_cached(monkeypatch):
    """SDPA's enable_gqa, not K and V repeated in memory; compiled and with a KV cache the
    logits are the eager ones."""
    from pretrain.model import KVCache

    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(q, k, v, **kwargs):
        seen.append((q.shape[1], k.shape[1], v.shape[1], kwargs.get("enable_gqa")))
        return sdpa(q, k, v, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    model, tokens = build(num_key_value_heads=1), ids()
    with torch.no_grad():
        eager = model(tokens).logits
        cache = KVCache(model.config, batch=2, capacity=24)
        cached = torch.cat([model(tokens[:, :20], cache=cache).logits,
                            *(model(tokens[:, t:t + 1], cache=cache).logits
                              for t in range(20, 24))], dim=1)
    assert set(seen) == {(4, 1, 1, True)}
    assert torch.allclose(cached, eager, atol=1e-5)
    monkeypatch.undo()
    compile_layers(model)
    with torch.no_grad():
        assert torch.allclose(model(tokens).logits, eager, atol=1e-5)


def test_rope_scores_depend_only_on_relative_position():
    config = tiny()
    cos, sin = rope_cos_sin(config, 40, torch.device("cpu"), torch.float32)
    q, k = torch.randn(8), torch.randn(8)

    def score(m: int, n: int) -> float:
        from pretrain.model import apply_rope

        return float(apply_rope(q, cos[m], sin[m]) @ apply_rope(k, cos[n], sin[n]))

    assert abs(score(10, 3) - score(30, 23)) < 1e-4
    assert abs(score(10, 3) - score(10, 4)) > 1e-4


def test_backward_matches_finite_differences_and_too_long_input():
    """Every parameter's gradient is the loss's slope: along the unit gradient direction a
    central difference (step 1e-2, fp32) gives its norm within 10% (measured: 4% at worst, the
    query projections' curvature); a parameter cut off the graph, a detached path or a wrong
    backward gives no gradient or another slope."""
    model = build().train()
    tokens = ids(seq=64)
    model(tokens, labels=tokens).loss.backward()
    step = 1e-2
    for name, param in model.named_parameters():
        norm = param.grad.norm().item()
        direction = param.grad / norm
        with torch.no_grad():
            param += step * direction
            up = model(tokens, labels=tokens).loss.item()
            param -= 2 * step * direction
            down = model(tokens, labels=tokens).loss.item()
            param += step * direction
        assert norm > 0 and (up - down) / (2 * step) == pytest.approx(norm, rel=0.1), name
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(ids(seq=65))


def test_init_tied_weights_and_param_counts():
    tied, untied = build(tie_word_embeddings=True), build()
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert "lm_head.weight" in tied.state_dict()  # as in transformers: same tensor, two names
    layer = untied.model.layers[0]
    assert abs(layer.self_attn.q_proj.weight.std().item() - 0.02) < 0.004
    assert abs(layer.mlp.down_proj.weight.std().item() - 0.02 / math.sqrt(4)) < 0.002
    assert torch.equal(layer.input_layernorm.weight, torch.ones(32))
    per_layer = 4 * 32 * 32 + 3 * 32 * 64 + 2 * 32
    body = 2 * per_layer + 32 + VOCAB * 32  # layers, final norm, embeddings
    assert tied.num_params() == body and untied.num_params() == body + VOCAB * 32
    assert tied.num_params(exclude_embeddings=True) == body  # the tied matrix is lm_head's
    assert untied.num_params(exclude_embeddings=True) == body
    attention = 12 * 2 * 4 * 8 * 128
    assert untied.flops_per_token(128) == 6 * body + attention


def test_model_config_checks_heads():
    assert tiny().num_key_value_heads == 4 and tiny().head_dim == 8
    with pytest.raises(ValueError, match="num_attention_heads"):
        tiny(hidden_size=30)
    with pytest.raises(ValueError, match="num_key_value_heads 3"):
        tiny(num_key_value_heads=3)
    with pytest.raises(ValueError, match="vocab_size"):
        tiny(vocab_size=0)


@pytest.mark.parametrize("size", ["tiny", "125m", "350m", "1b"])
def test_every_pretrain_config_loads(size):
    config = load_config(CONFIGS / f"{size}.yaml")
    assert config.model.vocab_size == "auto"
    assert config.training.seq_len <= config.model.max_position_embeddings
    model_config = config.model_for(32000)
    assert model_config.vocab_size == 32000
    with torch.device("meta"):
        params = CausalLM(model_config).num_params()
    nominal = {"tiny": 4.5e6, "125m": 125e6, "350m": 350e6, "1b": 1.1e9}[size]
    assert 0.8 * nominal < params < 1.1 * nominal


@pytest.mark.parametrize("size", ["tiny", "125m", "350m", "1b"])
def test_every_pretrain_configs_training_window_goes_through_the_model(size):
    """A TokenDataset window is seq_len + 1 tokens, and 125m/350m/1b have seq_len ==
    max_position_embeddings: training reads seq_len of them and scores all seq_len (shapes only,
    on the meta device)."""
    config = load_config(CONFIGS / f"{size}.yaml")
    seq_len = config.training.seq_len
    with torch.device("meta"):
        model = CausalLM(config.model_for(32000))
        window = torch.zeros(2, seq_len + 1, dtype=torch.long)
        inputs, labels = next(language_modelling([window]))
        out = model(inputs, labels=labels)
    assert out.logits.shape == (2, seq_len, 32000) and out.loss.shape == ()


def test_labels_one_token_longer_score_every_input_position():
    model = build()
    window = ids(seq=65)  # max_position_embeddings + 1
    with torch.no_grad():
        out = model(window[:, :-1], labels=window)
        reference = model(window[:, :-1], labels=window[:, :-1])
        logp = torch.log_softmax(out.logits.double(), dim=-1)
    expected = -logp.gather(-1, window[:, 1:, None]).mean()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert out.loss.item() != pytest.approx(reference.loss.item(), abs=1e-6)  # one target more
    shorter = ids(seq=25)
    with torch.no_grad():
        assert model(shorter[:, :-1], labels=shorter).loss.item() == pytest.approx(
            model(shorter, labels=shorter).loss.item(), abs=1e-5)  # the same targets
        with pytest.raises(ValueError, match="max_position_embeddings 64"):
            model(window, labels=window)
        with pytest.raises(ValueError, match="as long, or one token longer"):
            model(window[:, :-2], labels=window)


def _raw(size: str = "tiny") -> dict:
    import yaml

    return yaml.safe_load((CONFIGS / f"{size}.yaml").read_text())


@pytest.mark.parametrize(("section", "key", "value", "message"), [
    ("training", "lrr", 1.0, "training.lrr: Extra inputs are not permitted"),
    ("model", "hidden_size", "big", "model.hidden_size: Input should be a valid integer"),
    ("model", "vocab_size", "automatic", "model.vocab_size"),
    ("training", "min_lr", 1.0, "min_lr 1.0 > lr"),
    ("training", "seq_len", 4096, "training.seq_len 4096 > model.max_position_embeddings"),
])
def test_config_errors_name_the_key(section, key, value, message):
    data = _raw()
    data[section][key] = value
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(data, "tiny.yaml")


def test_config_missing_key_and_vocab_resolution(tmp_path):
    data = _raw()
    del data["training"]["max_steps"]
    with pytest.raises(ConfigError, match=r"training\.max_steps: Field required"):
        parse_config(data)
    config = parse_config(_raw())
    with pytest.raises(ConfigError, match="auto"):
        config.model_for()
    data = _raw()
    data["model"]["vocab_size"] = 500
    fixed = parse_config(data)
    assert fixed.model_for().vocab_size == 500 and fixed.model_for(400).vocab_size == 500
    with pytest.raises(ConfigError, match="vocab_size 500 < the tokenizer's 600"):
        fixed.model_for(600)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_compiled_layers_keep_names_loss_and_gradients():
    eager, compiled = build(seed=3).train(), build(seed=3).train()
    compile_layers(compiled)
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints unchanged
    batch = ids(batch=4, seq=32)
    for model in (eager, compiled):
        model(batch, labels=batch).loss.backward()
    assert compiled(batch, labels=batch).loss.item() == pytest.approx(
        eager(batch, labels=batch).loss.item(), abs=1e-5)
    for (name, a), b in zip(eager.named_parameters(), compiled.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, atol=1e-5, rtol=1e-4, msg=name)
    shorter = ids(batch=2, seq=16)  # another shape recompiles instead of failing
    assert compiled(shorter).logits.shape == (2, 16, VOCAB)

"""A tiny causal LM trained for a few steps on real news text, exported as transformers loads it:
for the evaluate and generate tests that need a model but not a whole pretraining run."""

from __future__ import annotations

import io
from pathlib import Path

import sentencepiece as spm
import torch

from pretrain.codec import LosslessTokenizer
from pretrain.export import save_hf_model
from pretrain.model import CausalLM, ModelConfig

NEWS = Path(__file__).parent / "data" / "text" / "lee-news-background.txt"


def news_lines() -> list[str]:
    return [line for line in NEWS.read_text(encoding="utf-8").split("\n") if line.strip()]


def news_tokenizer(out: Path, vocab_size: int = 512) -> Path:
    """A Llama-style SentencePiece BPE model (pretrain.tokenizer's settings) of the news text."""
    out.mkdir(parents=True, exist_ok=True)
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(news_lines()), model_writer=model, model_type="bpe",
        vocab_size=vocab_size, byte_fallback=True, split_digits=True,
        normalization_rule_name="identity", remove_extra_whitespaces=False, unk_id=0, bos_id=1,
        eos_id=2, pad_id=-1, hard_vocab_limit=False, num_threads=1, minloglevel=2)
    (out / "tokenizer.model").write_bytes(model.getvalue())
    return out


def train_tiny(tokenizer: LosslessTokenizer, steps: int = 40, seq_len: int = 64,
               max_positions: int = 128, seed: int = 0) -> tuple[CausalLM, ModelConfig]:
    """`steps` AdamW steps on windows of the news stream (each line followed by EOS, as the
    token shards are), GQA and tied embeddings as configs/pretrain/tiny.yaml."""
    config = ModelConfig(vocab_size=tokenizer.piece_size(), hidden_size=64,
                         intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=max_positions,
                         tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = CausalLM(config).train()
    stream = torch.tensor([i for line in news_lines()
                           for i in tokenizer.encode(line, add_eos=True)])
    windows = stream[:len(stream) // (seq_len + 1) * (seq_len + 1)].view(-1, seq_len + 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = windows[torch.randint(len(windows), (8,), generator=generator)]
        model(batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return model.eval(), config


def tiny_export(out: Path, tok_dir: Path, steps: int = 40) -> Path:
    """OUT/: the trained tiny model as pretrain.export writes it, with its tokenizer."""
    model, config = train_tiny(LosslessTokenizer.load(tok_dir), steps)
    return save_hf_model(model, config, out, tokenizer_dir=tok_dir)

"""Generate text from a trained model, streamed to the terminal as it is produced.

    python -m pretrain.generate MODEL --prompt TEXT [--max-new-tokens 128] [--greedy]
        [--temperature 1.0] [--top-k 50] [--top-p 1.0] [--seed 0]
    echo TEXT | python -m pretrain.generate MODEL ...        (the prompt from stdin)

MODEL is an exported transformers directory or a pretrain.train checkpoint directory (see
pretrain.inference). The prompt is encoded as the training shards are and preceded by EOS (the
document separator: the prompt starts a document, as in pretrain.evaluate), so an empty prompt
samples a document from scratch. One trailing newline of a prompt read from stdin is dropped.

Each step feeds only the new token: the keys and values of earlier positions are kept in a
`pretrain.model.KVCache`. The next token is the most likely one (--greedy, or --temperature 0,
which equals transformers' `generate(do_sample=False)` on the export) or is sampled from the
logits divided by the temperature, restricted to the top-k tokens and then to the smallest set
whose probability reaches top-p, with a torch generator seeded by --seed: the same seed, model
and prompt give the same text. Generation stops at EOS or after --max-new-tokens (at most what
the context has left). The continuation goes to stdout; a summary line to stderr.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from pretrain.codec import LosslessTokenizer
from pretrain.inference import add_model_arguments, load_model
from pretrain.model import CausalLM, KVCache, PaddedKVCache
from refine import LOG_FORMAT

log = logging.getLogger("pretrain.generate")


@dataclass(frozen=True)
class Sampling:
    max_new_tokens: int = 128
    temperature: float = 1.0  # 0: greedy
    top_k: int = 50  # 0: no limit
    top_p: float = 1.0  # 1: no limit
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, not {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0: greedy), not {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0: no limit), not {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], not {self.top_p}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


GREEDY = Sampling(temperature=0.0)


def filter_logits(logits: Tensor, top_k: int, top_p: float) -> Tensor:
    """`logits` (..., vocab) with -inf outside the top-k tokens and then outside the smallest
    set of most likely tokens whose probability reaches top_p (always at least one token)."""
    if 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        logits = nucleus(logits, top_p)
    return logits


def nucleus(logits: Tensor, top_p: float | Tensor) -> Tensor:
    """The top-p step of filter_logits; top_p may be a tensor (rows, 1) of one per row."""
    ordered, order = logits.sort(dim=-1, descending=True)
    probs = ordered.softmax(dim=-1)
    before = probs.cumsum(dim=-1) - probs  # the mass of the tokens ranked above
    ordered = ordered.masked_fill(before >= top_p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, ordered)


def next_token(logits: Tensor, sampling: Sampling, generator: torch.Generator | None) -> int:
    """The next token id from one position's logits (vocab,)."""
    if sampling.greedy:
        return int(logits.argmax())
    logits = filter_logits(logits.float() / sampling.temperature, sampling.top_k,
                           sampling.top_p)
    return int(torch.multinomial(logits.softmax(dim=-1), 1, generator=generator))


def next_tokens(logits: Tensor, samplings: Sequence[Sampling],
                generators: Sequence[torch.Generator | None]) -> list[int]:
    """next_token for every row of `logits` (rows, vocab), each with its own sampling and
    generator: the same ids, with the top-p sort and the softmax of the sampled rows done as
    one batch (row by row, these ops give the same bits as on a single row)."""
    tokens = [0] * len(samplings)
    sampled = []
    for row, sampling in enumerate(samplings):
        if sampling.greedy:
            tokens[row] = int(logits[row].argmax())
        else:
            sampled.append(row)
    if not sampled:
        return tokens
    scaled = torch.stack([filter_logits(logits[row].float() / samplings[row].temperature,
                                        samplings[row].top_k, 1.0) for row in sampled])
    top_p = [samplings[row].top_p for row in sampled]
    cut = [index for index, p in enumerate(top_p) if p < 1]
    if cut:
        threshold = torch.tensor([top_p[index] for index in cut], dtype=scaled.dtype,
                                 device=scaled.device)[:, None]
        scaled[cut] = nucleus(scaled[cut], threshold)
    probs = scaled.softmax(dim=-1)
    for index, row in enumerate(sampled):
        tokens[row] = int(torch.multinomial(probs[index], 1, generator=generators[row]))
    return tokens


def new_token_budget(model: CausalLM, prompt_len: int, max_new_tokens: int) -> int:
    """max_new_tokens, or fewer when the context has less room; ValueError when it has none."""
    room = model.config.max_position_embeddings - prompt_len
    if room < 1:
        raise ValueError(f"the prompt is {prompt_len} tokens (with the EOS before it): the "
                         f"model's context is {model.config.max_position_embeddings}")
    return min(max_new_tokens, room)


@torch.inference_mode()
def generate_tokens(model: CausalLM, context: Sequence[int], sampling: Sampling,
                    stop_id: int | None) -> Iterator[int]:
    """Yield each new token id as it is chosen, after `context` (the ids the model reads
    first); the last is `stop_id` when it was chosen (then generation stops)."""
    device, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
    budget = new_token_budget(model, len(context), sampling.max_new_tokens)
    generator = None
    if not sampling.greedy:
        generator = torch.Generator(device=device).manual_seed(sampling.seed)
    cache = KVCache(model.config, 1, len(context) + budget, device, dtype)
    logits = model(torch.tensor([list(context)], device=device), cache=cache).logits[0, -1]
    for step in range(budget):
        token = next_token(logits, sampling, generator)
        yield token
        if token == stop_id or step == budget - 1:
            return
        logits = model(torch.tensor([[token]], device=device), cache=cache).logits[0, -1]


@torch.inference_mode()
def generate_batch(model: CausalLM, contexts: Sequence[Sequence[int]],
                   samplings: Sequence[Sampling], stop_id: int | None,
                   on_token: Callable[[int, int], bool] | None = None) -> list[list[int]]:
    """The new token ids of every row: `generate_tokens` for each (context, sampling) pair, all
    rows decoded together, one forward pass per step. The contexts are left-padded into one
    `PaddedKVCache` (each row at its own positions, its padding masked); each row samples with
    its own generator seeded from its sampling's seed, so what a row generates does not depend
    on the rows beside it (up to the float rounding of batched matmuls, ~1e-6 in the logits).
    A row ends at `stop_id`, at its max_new_tokens (or what the context has left), or when
    `on_token(row, token)`, called for each token as it is chosen, returns False (a stop
    string); it then leaves the batch."""
    if len(contexts) != len(samplings) or not contexts:
        raise ValueError(f"{len(contexts)} contexts and {len(samplings)} samplings: one of "
                         "each per row, at least one row")
    if not all(contexts):
        raise ValueError("every context needs at least one token")
    device, dtype = model.lm_head.weight.device, model.lm_head.weight.dtype
    budgets = [new_token_budget(model, len(context), sampling.max_new_tokens)
               for context, sampling in zip(contexts, samplings, strict=True)]
    generators = [None if sampling.greedy else
                  torch.Generator(device=device).manual_seed(sampling.seed)
                  for sampling in samplings]
    width = max(len(context) for context in contexts)
    ids = torch.zeros((len(contexts), width), dtype=torch.long)  # padding: any id, masked
    for row, context in enumerate(contexts):
        ids[row, width - len(context):] = torch.tensor(list(context))
    cache = PaddedKVCache(model.config, [width - len(context) for context in contexts],
                          width + max(budgets) - 1, device, dtype)
    logits = model.lm_head(model.model(ids.to(device), cache)[:, -1])  # (rows, vocab)
    live = list(range(len(contexts)))  # the row of each cache row
    outputs: list[list[int]] = [[] for _ in contexts]
    while True:
        kept, tokens = [], []
        chosen = next_tokens(logits, [samplings[row] for row in live],
                             [generators[row] for row in live])
        for index, (row, token) in enumerate(zip(live, chosen, strict=True)):
            outputs[row].append(token)
            going = on_token(row, token) if on_token is not None else True
            if going and token != stop_id and len(outputs[row]) < budgets[row]:
                kept.append(index)
                tokens.append(token)
        if not kept:
            return outputs
        if len(kept) < len(live):
            cache.keep(kept)
            live = [live[index] for index in kept]
        step = torch.tensor(tokens, device=device)[:, None]
        logits = model.lm_head(model.model(step, cache)[:, -1])


class TextStream:
    """The text of generated ids, piece by piece as they come: each piece is what decoding
    prompt + generated ids adds to the prompt's text (so a leading space survives), held back
    while it ends in an incomplete UTF-8 character (byte-fallback pieces)."""

    def __init__(self, tokenizer: LosslessTokenizer, prompt_ids: Sequence[int]):
        self.tokenizer, self.ids = tokenizer, list(prompt_ids)
        self.shown = len(tokenizer.decode(self.ids))

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        if text.endswith("\ufffd"):
            return ""
        piece, self.shown = text[self.shown:], len(text)
        return piece

    def flush(self) -> str:
        text = self.tokenizer.decode(self.ids)
        piece, self.shown = text[self.shown:], len(text)
        return piece


def generate_text(model: CausalLM, tokenizer: LosslessTokenizer, prompt: str,
                  sampling: Sampling) -> Iterator[tuple[int | None, str]]:
    """(token id, the text it adds) for each new token after `prompt` (see the module doc), as
    it is generated; EOS, the last token if chosen, adds nothing, and text held back at the
    end (an unfinished character) comes last with no token."""
    prompt_ids = tokenizer.encode(prompt)
    stream = TextStream(tokenizer, prompt_ids)
    eos = tokenizer.eos_id()
    for token in generate_tokens(model, [eos, *prompt_ids], sampling, eos):
        yield token, "" if token == eos else stream.push(token)
    if rest := stream.flush():
        yield None, rest


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.generate", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="exported transformers directory or pretrain.train "
                                      "checkpoint directory")
    parser.add_argument("--prompt", default=None,
                        help="text to continue (default: read from stdin)")
    parser.add_argument("--max-new-tokens", type=int, default=128,
                        help="stop after this many new tokens (default: 128)")
    parser.add_argument("--greedy", action="store_true",
                        help="always the most likely token (= --temperature 0)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="divides the logits before sampling; 0: greedy (default: 1.0)")
    parser.add_argument("--top-k", type=int, default=50,
                        help="sample among the k most likely tokens; 0: all (default: 50)")
    parser.add_argument("--top-p", type=float, default=1.0,
                        help="then among the fewest whose probability reaches p; 1: all "
                             "(default: 1.0)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    try:
        args.sampling = Sampling(args.max_new_tokens, 0.0 if args.greedy else args.temperature,
                                 args.top_k, args.top_p, args.seed)
    except ValueError as error:
        parser.error(str(error).replace("_", "-"))
    return args


def read_prompt(prompt: str | None) -> str:
    if prompt is not None:
        return prompt
    if sys.stdin is None or sys.stdin.isatty():
        raise ValueError("give the prompt with --prompt TEXT or on stdin")
    return sys.stdin.read().removesuffix("\n")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:
        prompt = read_prompt(args.prompt)
        loaded = load_model(args.model, args.tokenizer, args.tag, args.device, args.dtype)
        prompt_len = len(loaded.tokenizer.encode(prompt)) + 1
        budget = new_token_budget(loaded.model, prompt_len, args.sampling.max_new_tokens)
    except ValueError as error:  # ModelError too
        print(f"error: {error}", file=sys.stderr)
        return 2
    if budget < args.sampling.max_new_tokens:
        print(f"note: the context leaves room for {budget} new tokens", file=sys.stderr)
    started, tokens, last = time.perf_counter(), 0, None
    for token, piece in generate_text(loaded.model, loaded.tokenizer, prompt, args.sampling):
        sys.stdout.write(piece)
        sys.stdout.flush()
        if token is not None:
            tokens, last = tokens + 1, token
    sys.stdout.write("\n")
    elapsed = time.perf_counter() - started
    why = "EOS" if last == loaded.tokenizer.eos_id() else f"{budget} tokens"
    print(f"[{tokens} tokens in {elapsed:.2f} s ({tokens / elapsed:.1f}/s), stopped at {why}; "
          f"{'greedy' if args.sampling.greedy else f'seed {args.sampling.seed}'}]",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Serve a trained model over HTTP with Ray Serve: an OpenAI-compatible completions endpoint.

    python -m pretrain.serve MODEL [--host 127.0.0.1] [--port 8000] [--replicas 1]
        [--max-batch-size 8] [--batch-wait-ms 10] [--cpus-per-replica 1] [--address ADDR]

MODEL is an exported transformers directory or a pretrain.train checkpoint directory (see
pretrain.inference); every replica loads it. Endpoints:

  POST /v1/completions  a JSON object as OpenAI's completions API takes it:
        prompt (string, required), max_tokens (default 16), temperature (default 1.0; 0:
        greedy), top_p (default 1.0), stop (a string or a list of strings; the text ends before
        the first one), n (completions, default 1), seed (default: a random one); also top_k
        (default 0: no limit; not OpenAI's). Other fields (model, user, ...) are ignored.
        Answer: {id, object: "text_completion", created, model, choices: [{index, text,
        finish_reason: "stop" (EOS or a stop string) or "length" (max_tokens, or what the
        context has left)}], usage: {prompt_tokens, completion_tokens, total_tokens}}.
        Choice i is sampled with seed + i, so a request with a seed is reproducible, and each
        choice equals `python -m pretrain.generate` with the same settings (the prompt is read
        after EOS, as there; prompt_tokens counts that EOS).
  GET /health           {"status": "ok", "model": NAME}.

A bad request (malformed JSON, a missing prompt, a wrong type, max_tokens or n below 1, a prompt
longer than the context, ...) gets a 4xx with an OpenAI-style JSON error {"error": {"message",
"type", "param"}}; the server goes on.

Requests are batched by `ray.serve.batch` (up to --max-batch-size, waiting at most
--batch-wait-ms for a batch to fill), and a batch is decoded together on the replica: every
choice of every request is a row of one batched forward pass per step (the prompts left-padded
into one KV cache, each row at its own positions with its padding masked; a row leaves the batch
at EOS, a stop string or its max_tokens), sampled with its own generator (seed + index), so each
result equals generating it alone (up to float rounding of the batched matmuls, ~1e-6 in the
logits), while more requests queue for the next batch. --replicas copies of the model serve in
parallel, each reserving --cpus-per-replica Ray CPUs.

Ray: a new local Ray that listens on 127.0.0.1 only (or the cluster at --address). The HTTP
proxy binds --host:--port (127.0.0.1 unless told otherwise: --host 0.0.0.0 exposes the server).
Ctrl-C (or SIGTERM) shuts Serve and Ray down.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import secrets
import signal
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from pretrain.codec import LosslessTokenizer
from pretrain.generate import (
    Sampling,
    TextStream,
    generate_batch,
    generate_tokens,
    new_token_budget,
)
from pretrain.inference import add_model_arguments, load_model
from pretrain.model import CausalLM
from refine import LOG_FORMAT

log = logging.getLogger("pretrain.serve")

APP_NAME = "pretrain"
MAX_N = 16  # completions per request
DEFAULT_MAX_TOKENS = 16  # OpenAI's default
MIN_TEMPERATURE = 1e-6  # above 0; far below it, logits / temperature overflow float32
MAX_SEED = 2**63 - 1 - MAX_N  # seed + choice index seeds a torch.Generator


class RequestError(ValueError):
    """A request the server refuses (HTTP `status`), naming the field at fault (`param`)."""

    def __init__(self, message: str, param: str | None = None, status: int = 400):
        super().__init__(message)
        self.param, self.status = param, status


@dataclass(frozen=True)
class CompletionRequest:
    prompt: str
    prompt_ids: list[int] = field(repr=False)
    max_tokens: int
    temperature: float
    top_p: float
    top_k: int
    stop: tuple[str, ...]
    n: int
    seed: int

    def sampling(self, index: int) -> Sampling:
        """The settings of choice `index` (seed + index)."""
        return Sampling(self.max_tokens, self.temperature, self.top_k, self.top_p,
                        self.seed + index)


def _integer(body: dict, name: str, default: int | None, minimum: int | None) -> int:
    value = body.get(name, default)
    if value is None and default is not None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{name} must be an integer, not {json.dumps(value)}", name)
    if minimum is not None and value < minimum:
        raise RequestError(f"{name} must be at least {minimum}, not {value}", name)
    return value


def _number(body: dict, name: str, default: float) -> float:
    value = body.get(name, default)
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RequestError(f"{name} must be a number, not {json.dumps(value)}", name)
    return float(value)


def _stop(body: dict) -> tuple[str, ...]:
    value = body.get("stop")
    if value is None:
        return ()
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise RequestError("stop must be a non-empty string or a list of them, not "
                           f"{json.dumps(value)}", "stop")
    return tuple(stops)


def parse_request(body: Any, tokenizer: LosslessTokenizer, model: CausalLM) -> CompletionRequest:
    """The checked request of a decoded JSON body; RequestError saying what is wrong."""
    if not isinstance(body, dict):
        raise RequestError(f"the body must be a JSON object, not {type(body).__name__}")
    if "prompt" not in body:
        raise RequestError("prompt is required", "prompt")
    prompt = body["prompt"]
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # OpenAI's list form, one prompt
    if not isinstance(prompt, str):
        raise RequestError(f"prompt must be a string, not {json.dumps(prompt)[:80]}", "prompt")
    max_tokens = _integer(body, "max_tokens", DEFAULT_MAX_TOKENS, 1)
    temperature = _number(body, "temperature", 1.0)
    top_p = _number(body, "top_p", 1.0)
    top_k = _integer(body, "top_k", 0, 0)
    n = _integer(body, "n", 1, 1)
    if n > MAX_N:
        raise RequestError(f"n must be at most {MAX_N}, not {n}", "n")
    seed = body.get("seed")
    seed = secrets.randbits(31) if seed is None else _integer(body, "seed", None, 0)
    if seed > MAX_SEED:
        raise RequestError(f"seed must be at most {MAX_SEED}, not {seed}", "seed")
    stop = _stop(body)
    if temperature < 0 or 0 < temperature < MIN_TEMPERATURE:  # logits / t would overflow
        raise RequestError(f"temperature must be 0 (greedy) or >= {MIN_TEMPERATURE}, not "
                           f"{temperature}", "temperature")
    if not 0 < top_p <= 1:
        raise RequestError(f"top_p must be in (0, 1], not {top_p}", "top_p")
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as error:  # a lone surrogate ("\ud800") in the JSON string
        raise RequestError(f"prompt is not valid Unicode: {error}", "prompt") from None
    prompt_ids = tokenizer.encode(prompt)
    try:
        new_token_budget(model, len(prompt_ids) + 1, max_tokens)
    except ValueError as error:
        raise RequestError(str(error), "prompt") from None
    return CompletionRequest(prompt, prompt_ids, max_tokens, temperature, top_p, top_k, stop, n,
                             seed)


class ChoiceText:
    """One choice's text as its tokens come: pieces as pretrain.generate streams them, cut
    before the first stop string (then finish_reason is "stop", and the choice takes no more
    tokens); EOS also ends it with "stop", max_tokens with "length"."""

    def __init__(self, tokenizer: LosslessTokenizer, prompt_ids: list[int],
                 stop: tuple[str, ...]):
        self.stream, self.eos = TextStream(tokenizer, prompt_ids), tokenizer.eos_id()
        self.stop, self.longest = stop, max((len(s) for s in stop), default=0)
        self.text, self.reason, self.tokens, self.cut = "", "length", 0, False

    def push(self, token: int) -> bool:
        """Take the next token; False once the choice is finished (EOS or a stop string)."""
        self.tokens += 1
        if token == self.eos:
            self.reason = "stop"
            return False
        return self._add(self.stream.push(token))

    def finish(self) -> None:
        """The text held back at the end (an unfinished character), unless a stop string cut
        the text before it."""
        if not self.cut:
            self._add(self.stream.flush())

    def _add(self, piece: str) -> bool:
        if not piece or not self.stop:
            self.text += piece
            return True
        start = max(0, len(self.text) - self.longest + 1)
        self.text += piece
        hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
        if hits:
            self.text, self.reason, self.cut = self.text[:min(hits)], "stop", True
            return False
        return True


def complete_one(model: CausalLM, tokenizer: LosslessTokenizer, prompt: str,
                 sampling: Sampling, stop: tuple[str, ...] = ()) -> tuple[str, str, int]:
    """(text, finish_reason, new tokens) of one completion of `prompt` decoded alone, with
    pretrain.generate's decoding (the server decodes a batch together: `complete_batch`)."""
    prompt_ids = tokenizer.encode(prompt)
    choice = ChoiceText(tokenizer, prompt_ids, stop)
    eos = tokenizer.eos_id()
    for token in generate_tokens(model, [eos, *prompt_ids], sampling, eos):
        if not choice.push(token):
            break
    choice.finish()
    return choice.text, choice.reason, choice.tokens


def answer(request: CompletionRequest, choices: list[ChoiceText], model_name: str) -> dict:
    """The OpenAI-shaped answer to a request whose choices are finished."""
    generated = sum(choice.tokens for choice in choices)
    prompt_tokens = len(request.prompt_ids) + 1  # the EOS the prompt follows
    return {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion",
            "created": int(time.time()), "model": model_name,
            "choices": [{"index": index, "text": choice.text, "logprobs": None,
                         "finish_reason": choice.reason}
                        for index, choice in enumerate(choices)],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                      "total_tokens": prompt_tokens + generated}}


def complete_batch(model: CausalLM, tokenizer: LosslessTokenizer,
                   requests: list[CompletionRequest], model_name: str) -> list[dict]:
    """The answers to checked requests, decoded together: every choice of every request is a
    row of one `pretrain.generate.generate_batch` (one forward pass per step; a row leaves at
    EOS, a stop string or its max_tokens), sampled with its own generator (seed + index)."""
    eos = tokenizer.eos_id()
    rows = [(request, index) for request in requests for index in range(request.n)]
    choices = [ChoiceText(tokenizer, request.prompt_ids, request.stop) for request, _ in rows]
    generate_batch(model, [[eos, *request.prompt_ids] for request, _ in rows],
                   [request.sampling(index) for request, index in rows], eos,
                   lambda row, token: choices[row].push(token))
    answers, first = [], 0
    for request in requests:
        mine = choices[first:first + request.n]
        for choice in mine:
            choice.finish()
        answers.append(answer(request, mine, model_name))
        first += request.n
    return answers


def complete(model: CausalLM, tokenizer: LosslessTokenizer, request: CompletionRequest,
             model_name: str) -> dict:
    """The answer to one checked request, its choices decoded together."""
    return complete_batch(model, tokenizer, [request], model_name)[0]


def error_response(status: int, message: str, param: str | None = None) -> JSONResponse:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "param": param,
                                   "code": None}}, status_code=status)


class Completions:
    """One replica: the model, its tokenizer and the HTTP routes. Deployed by `build_app`,
    which batches `complete_batch`: there each call with one request joins a batch."""

    def __init__(self, model_path: str, model_name: str, tokenizer: str | None,
                 tag: str | None, dtype: str):
        self.loaded = load_model(model_path, tokenizer, tag, "cpu", dtype)
        self.model_name = model_name

    async def __call__(self, request: Request) -> JSONResponse:
        path, method = request.url.path.rstrip("/") or "/", request.method
        routes = {"/health": "GET", "/v1/completions": "POST"}
        if path not in routes:
            return error_response(404, f"no route {path}: POST /v1/completions or GET /health")
        if method != routes[path]:
            return error_response(405, f"{path} takes {routes[path]}, not {method}")
        if path == "/health":
            return JSONResponse({"status": "ok", "model": self.model_name})
        try:
            raw = await request.body()
            try:
                body = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as error:
                raise RequestError(f"the body is not valid JSON: {error}") from None
            parsed = parse_request(body, self.loaded.tokenizer, self.loaded.model)
            return JSONResponse(await self.complete_batch(parsed))
        except RequestError as error:
            return error_response(error.status, str(error), error.param)
        except Exception as error:  # a bug, not the client's fault: say so, stay up
            log.exception("completion failed")
            return error_response(500, f"completion failed: {error}")

    async def complete_batch(self, requests: list[CompletionRequest]) -> list[dict]:
        """A batch of checked requests, decoded together off the event loop (health checks
        and new requests are answered and queued meanwhile)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._complete_all, requests)

    def _complete_all(self, requests: list[CompletionRequest]) -> list[dict]:
        return complete_batch(self.loaded.model, self.loaded.tokenizer, requests,
                              self.model_name)


def build_app(model: str | Path, *, name: str | None = None, tokenizer: str | None = None,
              tag: str | None = None, dtype: str = "float32", replicas: int = 1,
              max_batch_size: int = 8, batch_wait_ms: float = 10.0,
              cpus_per_replica: float = 1.0):
    """The Serve application (not yet running)."""
    from refine.dag import serve_app

    path = Path(model).resolve()
    return serve_app(Completions, str(path), name or path.name, tokenizer, tag, dtype,
                     batched="complete_batch", max_batch_size=max_batch_size,
                     batch_wait_s=batch_wait_ms / 1000, replicas=replicas,
                     cpus_per_replica=cpus_per_replica,
                     max_ongoing_requests=max(2 * max_batch_size, 8))


def start(model: str | Path, host: str = "127.0.0.1", port: int = 8000, **options) -> None:
    """Serve `model` on http://host:port on the Ray this process is connected to; returns once
    every replica is up (build_app's options)."""
    from refine.dag import serve_run

    serve_run(build_app(model, **options), name=APP_NAME, host=host, port=port, route_prefix="/")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m pretrain.serve", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="exported transformers directory or pretrain.train "
                                      "checkpoint directory")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address the HTTP proxy binds (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="HTTP port (default: 8000)")
    parser.add_argument("--replicas", type=int, default=1,
                        help="copies of the model serving in parallel (default: 1)")
    parser.add_argument("--max-batch-size", type=int, default=8,
                        help="requests a replica takes into one batch (default: 8)")
    parser.add_argument("--batch-wait-ms", type=float, default=10.0,
                        help="how long a batch waits to fill, in ms (default: 10)")
    parser.add_argument("--cpus-per-replica", type=float, default=1.0,
                        help="Ray CPUs each replica reserves (default: 1)")
    parser.add_argument("--name", default=None,
                        help="model name in answers (default: MODEL's directory name)")
    add_model_arguments(parser, device=False)  # replicas run on CPU
    parser.add_argument("--address", default=None,
                        help="Ray cluster to serve on (default: a new local Ray on 127.0.0.1)")
    args = parser.parse_args(argv)
    for name in ("replicas", "max_batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_wait_ms < 0 or args.cpus_per_replica <= 0:
        parser.error("--batch-wait-ms must be >= 0 and --cpus-per-replica > 0")
    if not 0 < args.port < 65536:
        parser.error(f"--port {args.port} is not a TCP port")
    return args


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT)
    try:  # refuse a bad MODEL here, with a message, before Ray starts
        loaded = load_model(args.model, args.tokenizer, args.tag, "cpu", args.dtype)
    except ValueError as error:  # ModelError too
        print(f"error: {error}", file=sys.stderr)
        return 2
    del loaded
    from refine.dag import init_ray, shutdown_serve

    url = f"http://{args.host}:{args.port}"
    try:
        init_ray(args.address)
        # Ctrl-C and SIGTERM end the loop below: set after ray.init (which installs its own
        # SIGTERM handler), SIGINT even when it was ignored at start (a script's `cmd &`)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
        start(args.model, args.host, args.port, name=args.name, tokenizer=args.tokenizer,
              tag=args.tag, dtype=args.dtype, replicas=args.replicas,
              max_batch_size=args.max_batch_size, batch_wait_ms=args.batch_wait_ms,
              cpus_per_replica=args.cpus_per_replica)
        print(f"serving {args.model} on {url} (POST /v1/completions, GET /health); "
              "Ctrl-C stops", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("shutting down", file=sys.stderr, flush=True)
    finally:
        shutdown_serve()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

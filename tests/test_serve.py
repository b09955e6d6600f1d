"""pretrain.serve: `python -m pretrain.serve` started as a user starts it (its own local Ray, 2
replicas, batching on) answers real HTTP on 127.0.0.1: each completion, alone or among 32
concurrent ones, equals pretrain.generate's for the same settings; every kind of bad request gets
a 4xx with a message and the server goes on; it binds loopback only; Ctrl-C stops it cleanly.

The server runs in a subprocess with a Ray of its own, so the Ray other tests share is never
touched, and its shutdown (Serve, then Ray) is what the last test checks."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest

from pretrain.codec import LosslessTokenizer
from pretrain.export import EOS_ID, load_hf_model
from pretrain.generate import Sampling, generate_text

from .tiny_lm import news_lines, news_tokenizer, tiny_export

pytest.importorskip("ray.serve")
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ["The prime minister", "Australian troops", "", "  leading spaces and a number 1997",
           "Police say"]
START_TIMEOUT_S = 240


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    return tiny_export(root / "hf", news_tokenizer(root / "tok"), steps=40)


@pytest.fixture(scope="module")
def model(export):
    return load_hf_model(export)


@pytest.fixture(scope="module")
def tokenizer(export) -> LosslessTokenizer:
    return LosslessTokenizer.load(export)


class Server:
    def __init__(self, process: subprocess.Popen, port: int, log: Path):
        self.process, self.port, self.log = process, port, log
        self.url = f"http://127.0.0.1:{port}"

    def request(self, path: str, body: bytes | dict | None = None,
                method: str | None = None) -> tuple[int, dict]:
        """(status, decoded JSON answer) of one HTTP request; 4xx/5xx answers too."""
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read())

    def complete(self, **body) -> dict:
        status, answer = self.request("/v1/completions", body)
        assert status == 200, answer
        return answer


@pytest.fixture(scope="module")
def server(export, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("serve-log") / "server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "pretrain.serve", str(export), "--port", str(port),
             "--replicas", "2", "--cpus-per-replica", "0.5", "--max-batch-size", "8",
             "--batch-wait-ms", "20"], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    running = Server(process, port, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "serving " not in log.read_text():  # printed once every replica is up
            assert process.poll() is None, f"the server exited:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no server after {START_TIMEOUT_S} s:\n" \
                                                f"{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield running
    finally:
        if process.poll() is None:  # the Ctrl-C test did not run (or failed): stop it anyway
            process.send_signal(signal.SIGINT)
            try:
                process.wait(90)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def alone(model, tokenizer, prompt: str, max_tokens: int, temperature: float = 0.0,
          top_p: float = 1.0, seed: int = 0) -> dict:
    """What pretrain.generate makes of the same request: text and finish reason."""
    tokens, text = [], ""
    for token, piece in generate_text(model, tokenizer, prompt,
                                      Sampling(max_tokens, temperature, 0, top_p, seed)):
        text += piece
        if token is not None:
            tokens.append(token)
    return {"text": text, "finish_reason": "stop" if tokens[-1] == EOS_ID else "length",
            "tokens": len(tokens)}


def test_a_batch_decoded_together_equals_each_request_alone(model, tokenizer):
    """complete_batch (what a replica runs on a batch) in-process: requests of different
    prompts, lengths, settings, stop strings and n, each choice equal to complete_one."""
    from pretrain.serve import complete_batch, complete_one, parse_request

    full = alone(model, tokenizer, "Australian troops", 24)["text"]
    bodies = [{"prompt": "The", "max_tokens": 16, "temperature": 1.0, "seed": 5, "n": 3},
              {"prompt": "Australian troops", "max_tokens": 24, "temperature": 0,
               "stop": [full[len(full) // 2:len(full) // 2 + 2]]},
              {"prompt": "", "max_tokens": 30, "temperature": 0.7, "top_p": 0.9, "seed": 1},
              {"prompt": PROMPTS[3], "max_tokens": 1, "temperature": 0},
              {"prompt": "Police say", "max_tokens": 12, "temperature": 1.2, "top_k": 20,
               "stop": ["e", "\n"], "seed": 8, "n": 2}]
    requests = [parse_request(body, tokenizer, model) for body in bodies]
    answers = complete_batch(model, tokenizer, requests, "hf")
    for request, answer in zip(requests, answers, strict=True):
        assert len(answer["choices"]) == request.n
        tokens = 0
        for index, choice in enumerate(answer["choices"]):
            text, reason, count = complete_one(model, tokenizer, request.prompt,
                                               request.sampling(index), request.stop)
            assert (choice["text"], choice["finish_reason"]) == (text, reason), request
            tokens += count
        assert answer["usage"]["completion_tokens"] == tokens
    assert answers[1]["choices"][0]["finish_reason"] == "stop"  # cut by its stop string


def test_health(server):
    assert server.request("/health") == (200, {"status": "ok", "model": "hf"})


def test_greedy_completion_equals_pretrain_generate(server, model, tokenizer):
    for prompt in PROMPTS[:3]:
        answer = server.complete(prompt=prompt, max_tokens=24, temperature=0)
        expected = alone(model, tokenizer, prompt, 24)
        assert answer["object"] == "text_completion" and answer["id"].startswith("cmpl-")
        assert answer["model"] == "hf"
        assert answer["choices"] == [{"index": 0, "text": expected["text"], "logprobs": None,
                                      "finish_reason": expected["finish_reason"]}]
        prompt_tokens = len(tokenizer.encode(prompt)) + 1  # after EOS, as generate reads it
        assert answer["usage"] == {"prompt_tokens": prompt_tokens,
                                   "completion_tokens": expected["tokens"],
                                   "total_tokens": prompt_tokens + expected["tokens"]}


def test_32_concurrent_requests_each_equal_generating_alone(server, model, tokenizer):
    requests = []
    for i in range(32):
        body = {"prompt": PROMPTS[i % len(PROMPTS)], "max_tokens": 8 + i % 17}
        if i % 2:
            body.update(temperature=0.8, top_p=0.9, seed=100 + i)
        else:
            body.update(temperature=0)
        requests.append(body)
    started = time.perf_counter()
    with ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(lambda body: server.request("/v1/completions", body),
                                requests))
    elapsed = time.perf_counter() - started
    for body, (status, answer) in zip(requests, answers, strict=True):
        assert status == 200, answer
        expected = alone(model, tokenizer, body["prompt"], body["max_tokens"],
                         body["temperature"], body.get("top_p", 1.0), body.get("seed", 0))
        choice = answer["choices"][0]
        assert (choice["text"], choice["finish_reason"]) == (expected["text"],
                                                             expected["finish_reason"]), body
    assert len({answer["id"] for _, answer in answers}) == 32
    print(f"32 concurrent requests answered in {elapsed:.2f} s")


def test_n_choices_use_seed_plus_index_and_stop_strings_cut_the_text(server, model, tokenizer):
    answer = server.complete(prompt="The", max_tokens=16, temperature=1.0, seed=5, n=3)
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    for index, choice in enumerate(answer["choices"]):
        assert choice["text"] == alone(model, tokenizer, "The", 16, 1.0, seed=5 + index)["text"]
    again = server.complete(prompt="The", max_tokens=16, temperature=1.0, seed=5, n=3)
    assert again["choices"] == answer["choices"]  # the same request again: the same text
    full = alone(model, tokenizer, "Australian troops", 24)["text"]
    stop = full[len(full) // 2:len(full) // 2 + 2]
    assert stop.strip(), full
    cut = server.complete(prompt="Australian troops", max_tokens=24, temperature=0,
                          stop=["\u2603 never", stop])["choices"][0]
    assert cut == {"index": 0, "text": full[:full.index(stop)], "logprobs": None,
                   "finish_reason": "stop"}
    one = server.complete(prompt="Australian troops", max_tokens=24, temperature=0, stop=stop)
    assert one["choices"][0]["text"] == full[:full.index(stop)]


def test_every_bad_request_gets_a_4xx_with_a_message(server):
    too_long = " ".join(news_lines()[:20])
    cases = [
        (b'{"max_tokens": 4}', 400, "prompt is required"),
        ({"prompt": "x", "max_tokens": -3}, 400, "max_tokens must be at least 1"),
        ({"prompt": "x", "max_tokens": 0}, 400, "max_tokens must be at least 1"),
        ({"prompt": too_long}, 400, "the model's context is 128"),
        (b'{"prompt": "x", ', 400, "not valid JSON"),
        (b"", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b'["x"]', 400, "must be a JSON object"),
        ({"prompt": 7}, 400, "prompt must be a string"),
        ({"prompt": None}, 400, "prompt must be a string"),
        (b'{"prompt": "a\\ud800b"}', 400, "prompt is not valid Unicode"),
        ({"prompt": "x", "max_tokens": "8"}, 400, "max_tokens must be an integer"),
        ({"prompt": "x", "max_tokens": 2.5}, 400, "max_tokens must be an integer"),
        ({"prompt": "x", "temperature": "hot"}, 400, "temperature must be a number"),
        (b'{"prompt": "x", "temperature": NaN}', 400, "temperature must be a number"),
        ({"prompt": "x", "temperature": -0.5}, 400, "temperature must be 0 (greedy) or >="),
        ({"prompt": "x", "temperature": 1e-300}, 400, "temperature must be 0 (greedy) or >="),
        ({"prompt": "x", "top_p": 0}, 400, "top_p must be in (0, 1]"),
        ({"prompt": "x", "top_p": 1.5}, 400, "top_p must be in (0, 1]"),
        ({"prompt": "x", "stop": [1]}, 400, "stop must be"),
        ({"prompt": "x", "stop": ""}, 400, "stop must be"),
        ({"prompt": "x", "n": 0}, 400, "n must be at least 1"),
        ({"prompt": "x", "n": True}, 400, "n must be an integer"),
        ({"prompt": "x", "n": 1000}, 400, "n must be at most"),
        ({"prompt": "x", "seed": "abc"}, 400, "seed must be an integer"),
        ({"prompt": "x", "seed": -1}, 400, "seed must be at least 0"),
        ({"prompt": "x", "seed": 2**64}, 400, "seed must be at most"),
    ]
    for body, status, message in cases:
        got, answer = server.request("/v1/completions", body, method="POST")
        assert got == status, (body, answer)
        assert message in answer["error"]["message"], (body, answer)
        assert answer["error"]["type"] == "invalid_request_error"
    status, answer = server.request("/v1/completions")  # GET
    assert status == 405 and "takes POST" in answer["error"]["message"]
    status, answer = server.request("/v2/nothing", {"prompt": "x"})
    assert status == 404 and "no route" in answer["error"]["message"]
    # still serving, and the server process is still the one we started
    assert server.complete(prompt="x", max_tokens=2)["choices"][0]["text"] is not None
    assert server.request("/health")[0] == 200 and server.process.poll() is None


def test_the_server_binds_loopback_only(server):
    listening = [c for c in psutil.net_connections(kind="tcp")
                 if c.status == psutil.CONN_LISTEN and c.laddr.port == server.port]
    assert listening and {c.laddr.ip for c in listening} == {"127.0.0.1"}
    others = [a.address for addresses in psutil.net_if_addrs().values() for a in addresses
              if a.family == socket.AF_INET and not a.address.startswith("127.")]
    for address in others:  # another address of this machine: nothing answers there
        with socket.socket() as sock:
            sock.settimeout(5)
            assert sock.connect_ex((address, server.port)) != 0, address


def test_help_and_a_bad_model_are_answered_without_starting_ray(tmp_path, capsys):
    from pretrain.serve import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for words in ("/v1/completions", "/health", "--replicas", "--max-batch-size",
                  "--batch-wait-ms", "127.0.0.1", "Ctrl-C", "ray.serve.batch"):
        assert words in text, words
    assert main([str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--replicas", "0"])
    assert "--replicas must be at least 1" in capsys.readouterr().err


def test_ctrl_c_shuts_the_server_down_cleanly(server):
    server.process.send_signal(signal.SIGINT)
    assert server.process.wait(90) == 0, server.log.read_text()[-3000:]
    assert "shutting down" in server.log.read_text()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", server.port)) != 0  # nothing listens any more

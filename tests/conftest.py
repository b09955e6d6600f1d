import gzip
import json
import os
from pathlib import Path

import pytest

from .pretrain_data import VAL_FRACTION, VOCAB_SIZE

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
SHARED = ROOT.parent / "shared" / "data"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


def cc_documents(count: int, min_words: int) -> list[dict]:
    """The first `count` documents of the Common Crawl text sample with `min_words` words or
    more, as {id, url, text} (the URL from Dolma's metadata)."""
    docs = []
    with gzip.open(DATA / "text" / "cc-main-2019-30-text-sample.jsonl.gz", "rt") as stream:
        for line in stream:
            row = json.loads(line)
            if len(row["text"].split()) >= min_words:
                docs.append({"id": row["id"], "url": row["metadata"]["warc_url"],
                             "text": row["text"]})
            if len(docs) == count:
                break
    return docs


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """One blocklist cache for the whole session, like a user's ~/.cache/refine."""
    if "REFINE_CACHE_DIR" not in os.environ:
        os.environ["REFINE_CACHE_DIR"] = str(tmp_path_factory.mktemp("refine-cache"))
    yield


@pytest.fixture(scope="session")
def local_ray():
    import ray

    from refine.dag import init_ray

    init_ray(None, num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def refine_run(local_ray, tmp_path_factory) -> Path:
    """A real refine run (configs/demo.yaml over tests/data/warc), made with the Python API."""
    from refine.config import load_config
    from refine.run import run

    inputs = sorted(str(p) for p in (DATA / "warc").glob("*.gz"))
    out = tmp_path_factory.mktemp("pretrain-run") / "run"
    run(load_config(ROOT / "configs" / "demo.yaml"), inputs, out, workers=2)
    return out


@pytest.fixture(scope="session")
def tokenizer_dir(refine_run, tmp_path_factory) -> Path:
    from pretrain.tokenizer import TrainerOptions, train_tokenizer

    out = tmp_path_factory.mktemp("pretrain-tok")
    train_tokenizer(refine_run / "data", out, vocab_size=VOCAB_SIZE, seed=0,
                    options=TrainerOptions(vocab_size=VOCAB_SIZE, num_threads=2))
    return out


@pytest.fixture(scope="session")
def tokens_dir(local_ray, refine_run, tokenizer_dir, tmp_path_factory) -> Path:
    from pretrain.encode import tokenize_run

    out = tmp_path_factory.mktemp("pretrain-tokens") / "tokens"
    tokenize_run(refine_run / "data", tokenizer_dir, out, val_fraction=VAL_FRACTION, workers=2)
    return out


@pytest.fixture(scope="module")
def url_filter():
    """URLFilter with its default config, loaded: the packaged UT1 lists (hashed into the
    session's cache dir the first time)."""
    from refine.filters.url import URLFilter, URLFilterConfig

    return URLFilter(URLFilterConfig()).load()


@pytest.fixture(scope="module")
def language_filter():
    """The language stage's filter with the real fastText lid.176 model, any language kept."""
    from refine.config import parse_config
    from refine.pipeline import build_text_filters

    return build_text_filters(parse_config({"language": {"languages": []}}))[0][1]


@pytest.fixture(scope="module")
def language_model(language_filter):
    """One fastText model for the module: chains share it (as a worker's chains do)."""
    return language_filter.model


# the page of `refine report` in a real headless Chromium (tests/chromium.py drives it)
@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.skip("chromium and chromium-driver are not installed (`make browser` does it)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,2400"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    yield driver
    driver.quit()

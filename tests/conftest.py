import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data"
SHARED = ROOT.parent / "shared" / "data"


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

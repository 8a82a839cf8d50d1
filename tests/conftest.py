import os

import pytest
import torch

# keep the suite's code books and caches out of the user's home
os.environ.setdefault("CAPSCALE_CACHE", os.path.join(os.path.dirname(__file__), ".cache"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

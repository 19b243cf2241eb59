import os

import pytest
import torch

os.environ.setdefault("HYDRA_FULL_ERROR", "0")
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# small and fast: 16x16 images (the small CNN gives 4x4 maps), a few hundred samples
SMALL_DATA = [
    "data.train_size=256",
    "data.val_size=64",
    "data.test_size=64",
    "data.image_size=16",
    "trainer.progress=false",
]


@pytest.fixture
def small_overrides():
    return list(SMALL_DATA)

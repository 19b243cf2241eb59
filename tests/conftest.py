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


def pytest_sessionfinish(session, exitstatus):
    """Nothing a test started may outlive the session: a child process left behind (holding the
    output pipe) or a non-daemon thread (joined at exit) would keep the test command from ending.
    Name them, so the test that leaks them can be found, and end the children."""
    import multiprocessing
    import sys
    import threading

    left = [t.name for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    children = multiprocessing.active_children()
    if left:
        print(f"\nnon-daemon threads left running: {left}", file=sys.stderr)
    for p in children:
        print(f"\nchild process left running: {p.name} (pid {p.pid}); killed", file=sys.stderr)
        p.kill()
        p.join(timeout=10)

"""What can be pinned of reproducibility across thread counts (README, "Reproducibility").

The protocol draws nothing from the thread count: loader order, augmentation and every sample come from generators
seeded by (seed, purpose, task). The tiny config's tensors are small enough that torch runs its kernels on one thread
whatever it is allowed, so this pins that part exactly; the Lite0 embedded runs use multi-threaded kernels whose
float sums depend on the thread count (measured in the README), which no test can pin.
"""
import torch

from imlca.config import load_config
from imlca.engine.protocol import run_protocol

from conftest import TINY


def test_tiny_run_gives_the_same_matrix_with_one_and_two_threads():
    cfg = load_config(TINY, ["train.epochs=2", "align.epochs=2"])
    before = torch.get_num_threads()
    try:
        matrices = []
        for threads in (1, 2):
            torch.set_num_threads(threads)
            matrices.append(run_protocol(cfg).acc)
    finally:
        torch.set_num_threads(before)
    assert matrices[0] == matrices[1]
    assert len(matrices[0]["im_lca"]) == 3

"""Freed large blocks go straight back to the system while a process aligns.

glibc's malloc serves a block of 128 KB or more with its own mmap, and on freeing one raises that threshold to the
block's size (up to 32 MB). After the first Cholesky factor is freed, every per-class D×D float64 temporary (2 MB at
512-d, 4.7 MB at 768-d) comes from the heap, where freed space stays resident and fragments, more so with several
arenas. A fixed threshold keeps such blocks mapped on their own, so the alignments' peak is what they hold. The
trial of tests/test_plan_memory_and_families.py (150 classes × 512-d, 12 λ variants, 1.64 GB planned): peak RSS
1.47-2.09 GB over runs without it (2-core machine, and CI's); 1.47-1.48 GB in four runs with it (2-core machine,
2026-12-07). Only where nothing is trained: a training step's many large temporaries would each cost fresh pages.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # malloc.h
THRESHOLD = 1 << 20  # bytes: a 512-d float64 row block of 256 rows; heads, batches and small tensors stay in the heap


def return_large_blocks(threshold: int = THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at `threshold` bytes for this process; False where the C library is not glibc
    (nothing changes there)."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name) if name else None
    mallopt = getattr(libc, "mallopt", None)
    return bool(mallopt and mallopt(M_MMAP_THRESHOLD, threshold) == 1)

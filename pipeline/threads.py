"""Stage two's DVC stages compute on one CPU thread, so their results do not depend on the core count.

A float sum split over threads adds up in another order: at the demo's size, the training loss on 1
and on 2 threads differs in the 8th digit after one epoch, and the runs drift apart from there.
Extraction needs no such care (its float16 features came out byte-identical on 1 and 2 threads).
The models are small: one thread was also the fastest on a shared 2-core machine.
"""

from __future__ import annotations


def one_thread() -> None:
    """Make torch compute on one CPU thread (intra-op; CUDA kernels are unaffected)."""
    import torch

    torch.set_num_threads(1)

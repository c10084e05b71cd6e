"""Which torch device a run uses: "auto" (CUDA when present), "cpu", "cuda" or "cuda:N".

Here, in the package both stages import, so that extraction and training choose alike; torch is
imported when a device is picked, never when `storage` is imported (readers of a cache need no torch).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICE_NAME = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class DeviceError(RuntimeError):
    """A device was asked for that torch cannot give."""


def is_device_name(name: object) -> bool:
    return isinstance(name, str) and bool(DEVICE_NAME.match(name))


def pick_device(name: str = "auto", rank: int | None = None) -> torch.device:
    """The torch device for `name`; DeviceError if it names a CUDA device torch does not see.

    `rank` (a dask worker's number) spreads workers over the GPUs when `name` is `auto` or `cuda`:
    worker k gets cuda:(k mod the GPU count); an explicit `cuda:N` is kept.
    """
    import torch

    if not is_device_name(name):
        raise DeviceError(f"device must be auto, cpu, cuda or cuda:N, got {name!r}")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name} asked for, but torch sees no CUDA device")
        if device.index is None and rank is not None:
            return torch.device("cuda", rank % torch.cuda.device_count())
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name} asked for, but torch sees {torch.cuda.device_count()} "
                              "CUDA device(s)")
    return device

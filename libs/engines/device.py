"""Turn a device setting (`auto`, `cpu`, `cuda`) into the torch device an engine places itself on.

For engines built on torch (torch is the optional extra `torch`; the -gpu images carry a
CUDA build). torch is imported only when this is called, so engines that never use it do
not pay for it. A GPU is "present" when torch sees one: the NVIDIA device plugin gives a
pod the GPU it requested and CUDA_VISIBLE_DEVICES narrows what torch sees.
"""

from __future__ import annotations

import os
from typing import Any

from libs.engines.protocol import CPU, DEVICES, DeviceInfo, EngineConfigError

# What a CUDA GPU leaves on a Linux machine (or in a container given one): the NVIDIA
# driver's control device and /proc entry, or WSL2's GPU device.
_DRIVER_TRACES = ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg")


def gpu_possible() -> bool:
    """Whether a CUDA GPU could be here at all: an NVIDIA driver (or WSL2's GPU) is visible.

    False means torch would see no GPU, so an engine choosing between a GPU and the CPU can
    skip importing torch to ask (1.4 s and 250 MB a process on this project's machines)."""
    return any(os.path.exists(p) for p in _DRIVER_TRACES)


def torch_device(requested: str) -> tuple[Any, DeviceInfo]:
    """(torch.device, DeviceInfo) for a device setting.

    `auto` takes the first CUDA GPU when torch sees one, else the CPU; `cuda` without a GPU
    is a configuration error (better a replica that never gets ready than one that asked
    for a GPU and quietly renders on the CPU).
    """
    if requested not in DEVICES:
        raise EngineConfigError(f"device must be one of {', '.join(DEVICES)}, not {requested!r}")
    try:
        import torch
    except ImportError as exc:
        raise EngineConfigError("this engine needs torch: pip install 'talkserve[torch]' "
                                "(or use a -gpu image)") from exc
    if requested == "cpu":
        return torch.device("cpu"), CPU
    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        return torch.device("cuda", index), DeviceInfo("cuda", torch.cuda.get_device_name(index))
    if requested == "cuda":
        raise EngineConfigError("device cuda was asked for but torch sees no CUDA GPU "
                                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
    return torch.device("cpu"), CPU

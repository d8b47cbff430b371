"""The gateway host's load for EchOfU's `/api/status`: CPU, memory, disk and NVIDIA GPUs (NVML)."""

from __future__ import annotations

import logging
from datetime import datetime

log = logging.getLogger(__name__)

MB = 1024 * 1024


def gpus() -> list[dict]:
    """Load, memory (MiB) and temperature of each NVIDIA GPU through NVML; [] without one."""
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return []
    gpus = []
    try:
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                load = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            except pynvml.NVMLError:
                load = None
            try:
                temp = int(pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU))
            except pynvml.NVMLError:
                temp = None
            model = pynvml.nvmlDeviceGetName(handle)
            gpus.append({"name": f"GPU{i}", "load": load, "memory_used": round(mem.used / MB),
                         "memory_total": round(mem.total / MB), "temperature": temp,
                         "model": model.decode() if isinstance(model, bytes) else model})
    except pynvml.NVMLError as exc:
        log.warning("NVML query failed: %s", exc)
    finally:
        pynvml.nvmlShutdown()
    return gpus


def system_status() -> dict:
    """CPU, memory and disk of this gateway host, and its GPUs."""
    import psutil

    memory = psutil.virtual_memory()
    return {
        "cpu_percent": psutil.cpu_percent(interval=0.2),
        "memory_percent": memory.percent,
        "memory_used": memory.used,
        "memory_total": memory.total,
        "disk_percent": psutil.disk_usage("/").percent,
        "gpus": gpus(),
        "timestamp": datetime.now().isoformat(timespec="seconds"),
    }

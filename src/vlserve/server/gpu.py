"""GPU status through NVML (nvidia-ml-py), graceful where there is no GPU.

Each per-GPU field is read on its own: a card that doesn't support one (fan speed on
an H200, for instance) reports that field as null and lists it under `unknown`, instead
of failing the whole answer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any, TypedDict

log = logging.getLogger("vlserve.gpu")


class GpuProcess(TypedDict):
    pid: int
    name: str | None
    used_memory_mib: int | None


class GpuDevice(TypedDict, total=False):
    index: int
    name: str | None
    uuid: str | None
    memory_total_mib: int | None
    memory_used_mib: int | None
    memory_free_mib: int | None
    utilization_gpu_pct: int | None
    utilization_memory_pct: int | None
    temperature_c: int | None
    power_w: float | None
    power_limit_w: float | None
    fan_speed_pct: int | None
    processes: list[GpuProcess] | None
    unknown: list[str]  # the fields this card did not report


class GpuStatus(TypedDict, total=False):
    available: bool
    reason: str
    count: int
    driver_version: str | None
    cuda_driver_version: str | None
    gpus: list[GpuDevice]


class GpuMonitor:
    """Owns the NVML session for the life of the app (init once, shut down at close)."""

    def __init__(self, nvml: Any = None) -> None:
        self._nvml: Any = nvml  # the pynvml module, or a stand-in with the same functions (untyped)
        self._ready = False
        self._reason = "not started"
        self._lock = threading.Lock()  # NVML handles are not documented as thread-safe

    def start(self) -> None:
        try:
            if self._nvml is None:
                import pynvml
                self._nvml = pynvml
            self._nvml.nvmlInit()
            self._ready = True
        except ImportError:
            self._reason = "nvidia-ml-py is not installed"
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            self._reason = f"NVML is not available on this machine ({_error_name(exc)})"

    def close(self) -> None:
        if self._ready:
            self._ready = False
            try:
                self._nvml.nvmlShutdown()
            except Exception:  # shutting down anyway
                pass

    def count(self) -> int:
        if not self._ready:
            return 0
        with self._lock:
            try:
                return int(self._nvml.nvmlDeviceGetCount())
            except Exception:
                return 0

    def status(self) -> GpuStatus:
        if not self._ready:
            return {"available": False, "reason": self._reason, "count": 0, "gpus": []}
        with self._lock:
            return self._read_all()

    def _read_all(self) -> GpuStatus:
        nv = self._nvml
        try:
            count = nv.nvmlDeviceGetCount()
        except Exception as exc:
            return {"available": False, "reason": f"NVML failed: {_error_name(exc)}", "count": 0, "gpus": []}
        driver = _field(nv.nvmlSystemGetDriverVersion)
        cuda = _field(nv.nvmlSystemGetCudaDriverVersion)
        return {
            "available": True, "count": count, "driver_version": _text(driver),
            "cuda_driver_version": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) else None,
            "gpus": [self._read_device(i) for i in range(count)],
        }

    def _read_device(self, index: int) -> GpuDevice:
        nv = self._nvml
        handle = nv.nvmlDeviceGetHandleByIndex(index)
        memory = _field(nv.nvmlDeviceGetMemoryInfo, handle)
        util = _field(nv.nvmlDeviceGetUtilizationRates, handle)
        power = _field(nv.nvmlDeviceGetPowerUsage, handle)
        limit = _field(nv.nvmlDeviceGetEnforcedPowerLimit, handle)
        temperature = _field(nv.nvmlDeviceGetTemperature, handle, getattr(nv, "NVML_TEMPERATURE_GPU", 0))
        fan = _field(nv.nvmlDeviceGetFanSpeed, handle)
        gpu: GpuDevice = {
            "index": index,
            "name": _text(_field(nv.nvmlDeviceGetName, handle)),
            "uuid": _text(_field(nv.nvmlDeviceGetUUID, handle)),
            "memory_total_mib": _mib(memory, "total"),
            "memory_used_mib": _mib(memory, "used"),
            "memory_free_mib": _mib(memory, "free"),
            "utilization_gpu_pct": _int(getattr(util, "gpu", None)),
            "utilization_memory_pct": _int(getattr(util, "memory", None)),
            "temperature_c": _int(temperature),
            "power_w": power / 1000 if isinstance(power, (int, float)) else None,
            "power_limit_w": limit / 1000 if isinstance(limit, (int, float)) else None,
            "fan_speed_pct": _int(fan),
            "processes": self._processes(handle),
        }
        gpu["unknown"] = [key for key, value in gpu.items() if value is None]
        return gpu

    def _processes(self, handle: object) -> list[GpuProcess] | None:
        procs = _field(self._nvml.nvmlDeviceGetComputeRunningProcesses, handle)
        if not isinstance(procs, list | tuple):
            return None
        out: list[GpuProcess] = []
        for proc in procs:
            used = getattr(proc, "usedGpuMemory", None)
            name = _text(_field(self._nvml.nvmlSystemGetProcessName, proc.pid))
            out.append({"pid": proc.pid, "name": name,
                        "used_memory_mib": round(used / 2**20) if isinstance(used, int) else None})
        return out


def _field(fn: Callable[..., object], *args: object) -> object:
    """One NVML call; None when the card doesn't support it or it fails."""
    try:
        return fn(*args)
    except Exception as exc:
        log.debug("NVML %s failed: %s", getattr(fn, "__name__", fn), _error_name(exc))
        return None


def _text(value: object) -> str | None:
    if isinstance(value, bytes):
        return value.decode()
    return value if isinstance(value, str) else None


def _int(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _mib(memory: object, attr: str) -> int | None:
    value = getattr(memory, attr, None)
    return round(value / 2**20) if isinstance(value, int) else None


def _error_name(exc: Exception) -> str:
    return type(exc).__name__

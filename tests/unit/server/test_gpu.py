"""GPU status from NVML: what a real H200 answered (tests/fixtures/nvml), and no GPU here."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from vlserve.server.gpu import GpuMonitor

pytestmark = pytest.mark.contract

FIXTURE = Path(__file__).parents[2] / "fixtures" / "nvml" / "h200-lmdeploy.json"


class NVMLError_NotSupported(Exception):
    pass


class RecordedNVML:
    """Answers pynvml's calls with one recorded snapshot; a recorded error is raised again."""

    NVML_TEMPERATURE_GPU = 0

    def __init__(self, snapshot: dict) -> None:
        self._system, self._devices = snapshot["system"], snapshot["devices"]

    @staticmethod
    def _value(field: dict):
        if "error" in field:
            raise NVMLError_NotSupported(field["error"])
        return field["value"]

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetCount(self): return self._value(self._system["device_count"])
    def nvmlSystemGetDriverVersion(self): return self._value(self._system["driver_version"])
    def nvmlSystemGetCudaDriverVersion(self): return self._value(self._system["cuda_driver_version"])["raw"]
    def nvmlDeviceGetHandleByIndex(self, i): return self._devices[i]
    def nvmlDeviceGetName(self, d): return self._value(d["name"])
    def nvmlDeviceGetUUID(self, d): return self._value(d["uuid"])
    def nvmlDeviceGetMemoryInfo(self, d): return SimpleNamespace(**self._value(d["memory"]))
    def nvmlDeviceGetTemperature(self, d, sensor): return self._value(d["temperature_gpu_c"])
    def nvmlDeviceGetPowerUsage(self, d): return self._value(d["power_usage_mw"])
    def nvmlDeviceGetEnforcedPowerLimit(self, d): return self._value(d["power_limit_enforced_mw"])
    def nvmlDeviceGetFanSpeed(self, d): return self._value(d["fan_speed_pct"])

    def nvmlDeviceGetUtilizationRates(self, d):
        util = self._value(d["utilization"])
        return SimpleNamespace(gpu=util["gpu_pct"], memory=util["memory_pct"])

    def nvmlDeviceGetComputeRunningProcesses(self, d):
        return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["used_gpu_memory"], name=p["name"])
                for p in self._value(d["compute_processes"])]

    def nvmlSystemGetProcessName(self, pid):
        procs = [p for d in self._devices for p in self._value(d["compute_processes"]) if p["pid"] == pid]
        return procs[0]["name"]


@pytest.fixture
def snapshots():
    return json.loads(FIXTURE.read_text())["snapshots"]


def test_h200_under_load(snapshots):
    monitor = GpuMonitor(RecordedNVML(snapshots[-1]["snapshot"]))
    monitor.start()
    status = monitor.status()
    assert status["available"] is True and status["count"] == 1 and monitor.count() == 1
    assert status["driver_version"] == "580.159.04" and status["cuda_driver_version"] == "13.0"
    gpu = status["gpus"][0]
    assert gpu["name"] == "NVIDIA H200" and gpu["uuid"].startswith("GPU-")
    assert gpu["memory_total_mib"] == round(150754820096 / 2**20)
    assert gpu["temperature_c"] == 44 and gpu["power_w"] == pytest.approx(164.54)
    # The H200 has no fan reading: unknown, not an error of the whole endpoint.
    assert gpu["fan_speed_pct"] is None and gpu["unknown"] == ["fan_speed_pct"]
    assert gpu["processes"] == [{"pid": 781, "name": "/opt/torch/.venv/bin/python3",
                                 "used_memory_mib": round(80874569728 / 2**20)}]


def test_no_gpu_on_this_machine():
    monitor = GpuMonitor()
    monitor.start()
    status = monitor.status()
    assert status["available"] is False and status["reason"] and monitor.count() == 0
    monitor.close()

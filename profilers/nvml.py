"""Device memory as the driver sees it: NVML "used", sampled by a background thread fast enough to catch peaks.

torch's counters see only its caching allocator. NVML sees the whole device: the CUDA context, cuBLAS and
kernel modules, the allocator's reserved segments, and the CUDA managed memory that bitsandbytes' paged
optimizers keep their state in (allocated with ``cudaMallocManaged`` outside torch, so only NVML counts it).
That device-level figure is what ``nvidia-smi`` shows and what decides whether a job fits.

``NvmlDevice`` opens one GPU (by torch's device UUID when it has one, so ``CUDA_VISIBLE_DEVICES`` cannot make
NVML and torch look at different cards); ``Sampler`` polls ``nvmlDeviceGetMemoryInfo(handle).used`` in a
daemon thread at ``hz`` samples per second (default 500; at least 100 is needed to catch a peak that lasts
a few tens of milliseconds) and keeps the maximum, the count of samples and the rate it reached.

The NVML module is injectable (``nvml=``): tests pass a fake one with the same functions.

Example usage::

    dev = NvmlDevice.open(0)
    with Sampler(dev, hz=500) as s:
        train_steps()
    s.peak_used_bytes, s.rate_hz

Known Limitations: "used" is for the whole device, other processes included (the profiler subtracts what
was used before it touched the GPU); a spike shorter than the sampling interval can be missed, which is why
the achieved rate is reported with the peak.
"""

from __future__ import annotations

import threading
import time

from vramplan.errors import MissingDependencyError, VramplanError

DEFAULT_HZ = 500
MIN_HZ = 100


class NvmlUnavailableError(VramplanError):
    """NVML (the NVIDIA driver's management library) cannot be loaded or cannot see the GPU."""


def load_nvml(nvml=None):
    """The NVML module (``pynvml`` from nvidia-ml-py), initialised; or raise one line saying what to do."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            raise MissingDependencyError(
                "nvidia-ml-py is not installed (needed to sample device memory): pip install 'vramplan[profile]', "
                "or add --no-nvml to record torch's counters only") from None
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        raise NvmlUnavailableError(
            f"NVML cannot be initialised ({exc}): the NVIDIA driver is not loaded or not visible here; check that "
            f"nvidia-smi lists the GPU, or add --no-nvml to record torch's counters only") from None
    return nvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlDevice:
    """One GPU as NVML sees it: name, driver, total memory and the current "used" bytes."""

    def __init__(self, nvml, handle):
        self.nvml = nvml
        self.handle = handle
        self.name = _text(nvml.nvmlDeviceGetName(handle))
        self.driver = _text(nvml.nvmlSystemGetDriverVersion())
        self.total_bytes = int(nvml.nvmlDeviceGetMemoryInfo(handle).total)

    @classmethod
    def open(cls, index: int = 0, *, uuid: str | None = None, nvml=None) -> "NvmlDevice":
        """Open GPU ``index`` (NVML's numbering), or the GPU with torch's device ``uuid`` when given."""
        nvml = load_nvml(nvml)
        try:
            if uuid:
                text = uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"
                handle = nvml.nvmlDeviceGetHandleByUUID(text)
            else:
                count = nvml.nvmlDeviceGetCount()
                if not 0 <= index < count:
                    raise NvmlUnavailableError(f"--gpu-index {index}: NVML sees {count} GPU(s); use 0 to {count - 1}")
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
            return cls(nvml, handle)
        except nvml.NVMLError as exc:
            what = f"UUID {uuid}" if uuid else f"index {index}"
            raise NvmlUnavailableError(f"NVML cannot open the GPU with {what} ({exc}); check nvidia-smi, or add "
                                       f"--no-nvml to record torch's counters only") from None

    def used_bytes(self) -> int:
        """Device memory in use now (all processes, the driver's share included), in bytes."""
        return int(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used)


class Sampler:
    """Poll a device's "used" memory in a background thread; keep the maximum (see the module docstring)."""

    def __init__(self, device: NvmlDevice, hz: float = DEFAULT_HZ):
        if not hz >= MIN_HZ:
            raise VramplanError(f"--sample-hz {hz:g}: sample at least {MIN_HZ} times a second to catch peaks, "
                                f"e.g. --sample-hz {DEFAULT_HZ}")
        self.device = device
        self.interval = 1.0 / hz
        self.peak_used_bytes = 0
        self.first_used_bytes = 0
        self.samples = 0
        self.seconds = 0.0
        self.error = ""
        self._stop = threading.Event()
        self._thread = None

    @property
    def rate_hz(self) -> float:
        """Samples per second actually taken."""
        return self.samples / self.seconds if self.seconds > 0 else 0.0

    def _sample(self) -> None:
        used = self.device.used_bytes()
        if used > self.peak_used_bytes:
            self.peak_used_bytes = used
        self.samples += 1

    def _run(self) -> None:
        t0 = time.perf_counter()
        next_at = t0
        try:
            while not self._stop.is_set():
                self._sample()
                next_at += self.interval
                delay = next_at - time.perf_counter()
                if delay > 0:
                    self._stop.wait(delay)
                else:
                    next_at = time.perf_counter()  # fell behind: do not burst to catch up
        except Exception as exc:  # NVML errors in the thread end sampling; reported with the result
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.seconds = time.perf_counter() - t0

    def start(self) -> "Sampler":
        """Take one sample now (so a short run still has one), then sample in the background."""
        self.first_used_bytes = self.device.used_bytes()
        self.peak_used_bytes = max(self.peak_used_bytes, self.first_used_bytes)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="vramplan-nvml-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop the thread and take a last sample."""
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._thread = None
        self._sample()

    def __enter__(self) -> "Sampler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

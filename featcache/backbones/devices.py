"""Where a backbone runs and in what precision: device names, the "mixed" policy of a device, and
the largest batch that fits (found by backing off on out-of-memory)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from ..errors import ParameterError

PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")  # Keras dtype policies
AUTO_CPU_BATCH = 32  # on a CPU a bigger batch is not faster, only bigger
AUTO_GPU_START = 1024  # the first batch size tried on a GPU; halved on out-of-memory


def visible_gpus() -> list[str]:
    import tensorflow as tf

    return [d.name for d in tf.config.list_physical_devices("GPU")]


def resolve_device(device: str | None) -> str | None:
    """"cpu", "gpu", "gpu:N" -> a TensorFlow device name; None stays None: TensorFlow's own choice,
    the first GPU if there is one (and TensorFlow is not even imported to say so)."""
    if device is None:
        return None
    m = re.fullmatch(r"(cpu|gpu)(?::(\d+))?", device.strip().lower())
    if not m or (m.group(1) == "cpu" and m.group(2) not in (None, "0")):
        raise ParameterError("device", f"expected cpu, gpu or gpu:N, got {device!r}")
    if m.group(1) == "cpu":
        return "/CPU:0"
    index, gpus = int(m.group(2) or 0), visible_gpus()
    if index >= len(gpus):
        seen = f"{len(gpus)} GPU(s) are visible" if gpus else "no GPU is visible to TensorFlow"
        raise ParameterError("device", f"{device}: {seen} (check CUDA_VISIBLE_DEVICES and the GPU build of "
                                       "TensorFlow), or use --device cpu")
    return f"/GPU:{index}"


def cpu_has_fast_bfloat16() -> bool:
    """AMX or AVX-512 BF16: bfloat16 arithmetic in hardware (elsewhere TensorFlow emulates it, slower)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))


def on_gpu(device: str | None) -> bool:
    return device.startswith("/GPU") if device else bool(visible_gpus())


def resolve_precision(precision: str, device: str | None) -> str:
    """"mixed" -> the device's fast mixed policy: float16 on a GPU, bfloat16 on a CPU that has it in
    hardware, else float16 (correct on any CPU, though not faster there)."""
    if precision == "mixed":
        return "mixed_float16" if on_gpu(device) or not cpu_has_fast_bfloat16() else "mixed_bfloat16"
    if precision not in PRECISIONS:
        raise ParameterError("precision", f"expected float32, mixed or one of {', '.join(PRECISIONS[1:])}, "
                                          f"got {precision!r}")
    return precision


def is_out_of_memory(exc: BaseException) -> bool:
    import tensorflow as tf

    return isinstance(exc, tf.errors.ResourceExhaustedError) or "out of memory" in str(exc).lower()


def largest_batch(fits: Callable[[int], None], device: str | None, start: int = AUTO_GPU_START) -> int:
    """The largest power-of-two batch size from ``start`` down for which ``fits(batch)`` (one
    forward pass) does not run out of memory. A CPU gets AUTO_CPU_BATCH: no faster beyond it."""
    if not on_gpu(device):
        return AUTO_CPU_BATCH
    batch = start
    while True:
        try:
            fits(batch)
            return batch
        except Exception as exc:
            if not is_out_of_memory(exc) or batch == 1:
                raise
            batch //= 2

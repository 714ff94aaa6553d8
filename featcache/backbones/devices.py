"""Where a backbone runs and in what precision: device names, what "mixed" means, and the largest
batch that fits (found by backing off on out-of-memory)."""

from __future__ import annotations

import re
from collections.abc import Callable

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
        raise ParameterError("device", f"{device}: {seen}", remedy="check CUDA_VISIBLE_DEVICES and the GPU build "
                             "of TensorFlow, or use device cpu", mentions=("device",))
    return f"/GPU:{index}"


def on_gpu(device: str | None) -> bool:
    return device.startswith("/GPU") if device else bool(visible_gpus())


def resolve_precision(precision: str) -> str:
    """"mixed" -> mixed_float16 on every device. Not bfloat16 even on a CPU that has it in hardware
    (AMX, AVX-512 BF16): its 8-bit mantissa puts EfficientNet-Lite0 features at a cosine of about
    0.997 to float32 on photos, against 0.9999 for float16, and what "mixed" gives must not depend on
    the CPU a run lands on. mixed_bfloat16 is only ever what a caller names."""
    if precision == "mixed":
        return "mixed_float16"
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

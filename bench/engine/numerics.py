"""What a run's floating-point results depend on besides the weights: the numerics fingerprint.

With equal weights, inputs and seed, an attack's per-sample results were
measured identical across runs; across torch thread counts the flags were
identical but iterative attacks' examples moved in the last bits; across CPU
instruction sets FGSM flipped a few samples: a gradient component near zero
can change sign when oneDNN/MKL sum in another order (AVX2 against AVX-512),
and FGSM moves every pixel by the sign. So the regression gate compares per-sample results exactly
only between runs with the same fingerprint (:mod:`bench.gate.exact`).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

# environment variables that choose other kernels (and so other rounding) in torch, oneDNN and MKL
KERNEL_ENV = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "MKL_CBWR")


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what :mod:`platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def fingerprint(device: torch.device) -> str:
    """One line naming torch, the device and the kernels it runs, e.g.
    ``torch 2.14.1+cu130; cpu Intel(R) Xeon(R) Processor; AVX512``."""
    parts = [f"torch {torch.__version__}"]
    if device.type == "cuda":
        parts.append(f"cuda {torch.version.cuda} {torch.cuda.get_device_name(device)}")
    else:
        # threads too: with another split of the work an iterative attack's examples move in the last bits
        parts += [f"cpu {cpu_model()}", torch.backends.cpu.get_cpu_capability(), f"{torch.get_num_threads()} threads"]
        parts += [f"{name}={os.environ[name]}" for name in KERNEL_ENV if os.environ.get(name)]
    return "; ".join(parts)

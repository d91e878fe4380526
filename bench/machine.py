"""What a bench ran on, printed beside its tables: speeds, and int8's most of all, depend
on the CPU's model and its integer dot-product extensions."""

from __future__ import annotations

import os
import platform
from pathlib import Path

DOT_PRODUCT_FLAGS = ("avx512_vnni", "avx_vnni", "avx512_bf16")


def cpu_name() -> str:
    """The CPU's model name and its dot-product extensions (from Linux's /proc/cpuinfo),
    else the platform's processor string."""
    try:
        info = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or "unknown"
    fields = dict(line.split(":", 1) for line in info if ":" in line)  # each CPU lists the same
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    name, flags = fields.get("model name", "?"), fields.get("flags", "").split()
    dot = [f for f in DOT_PRODUCT_FLAGS if f in flags]
    return f"{name} ({', '.join(dot) or 'no VNNI'})"


def describe() -> str:
    """One line: the CPU and how many of them this process may run on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpu_name()}, {usable} CPUs"

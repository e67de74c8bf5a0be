"""Stdlib-only helpers shared by the peer-package runs (each runs in its own venv, without mmlit)."""
import platform


def cpu_model() -> str:
    "The CPU's model name from /proc/cpuinfo (or what `platform` knows)."
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"

"""A process's resident memory, read from /proc (Linux, where kuiperd and the plugin run).

The bottom layer: the supervisor's memory cap and the model pool's memory bound both read it here.
"""


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory (VmRSS) of process `pid` ("self": this one) in MB; 0.0 if it is gone or unreadable."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):  # gone, or a zombie without memory
        return 0.0

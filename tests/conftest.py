"""Suite-wide: what one run of the suite wrote, printed at the end (it must stay small)."""

import resource
from pathlib import Path


def _written() -> tuple[float, float]:
    """(GB passed to write() by this process, GB of block output of it and its children)."""
    wchar = 0
    io = Path("/proc/self/io")
    if io.is_file():
        fields = dict(line.split(": ") for line in io.read_text().splitlines())
        wchar = int(fields["wchar"])
    who = (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)
    blocks = sum(resource.getrusage(w).ru_oublock for w in who)
    return wchar / 1e9, blocks * 512 / 1e9


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    calls, disk = _written()
    terminalreporter.write_line(
        f"written by this run: {calls:.2f} GB through write() in the test process (files, pipes, "
        f"sockets), {disk:.2f} GB to disk by it and its children"
    )

"""Suite-wide: what one run of the suite wrote to disk, printed at the end (it must stay small)."""

import resource
from pathlib import Path


def _written_bytes() -> int:
    """Bytes this process passed to write(), plus the block output of its finished children."""
    own = 0
    io = Path("/proc/self/io")
    if io.is_file():
        fields = dict(line.split(": ") for line in io.read_text().splitlines())
        own = int(fields["wchar"])
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_oublock * 512
    return own + children


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ANN001
    terminalreporter.write_line(f"disk written by this run: {_written_bytes() / 1e9:.2f} GB")

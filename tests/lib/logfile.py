"""Reading the log files of the private servers the tests start."""

import os


def read_text(path: str, offset: int = 0) -> str:
    """The file from offset on, as text ('' when it does not exist yet)."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


def size(path: str) -> int:
    """The file's size, 0 when it does not exist yet."""
    try:
        return os.path.getsize(path)
    except OSError:
        return 0

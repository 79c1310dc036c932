"""The one exception type smoothcert raises for bad input; the CLI prints its message on one line."""
import re

MAX_COUNT = 2 ** 62              # sample counts and sizes (numbers of samples, batch sizes): far inside int64


class SmoothcertError(ValueError):
    """Bad input or settings, with a message that names the problem."""


def check(condition: bool, message: str) -> None:
    """Raise SmoothcertError(message) unless condition holds."""
    if not condition:
        raise SmoothcertError(message)


def check_alpha(alpha: float) -> float:
    check(isinstance(alpha, (int, float)) and 0.0 < float(alpha) < 1.0,
          f"alpha must be in (0, 1), got {alpha!r}")
    return float(alpha)


def check_count(name: str, value: int, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """An integer in [minimum, maximum] (by default at most 2^62: a count numpy and torch can hold)."""
    check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
          f"{name} must be an integer >= {minimum}, got {value!r}")
    check(value <= maximum, f"{name} must be at most {maximum:,}, got {value:,}")
    return value


def first_line(exc: BaseException, empty: str | None = None) -> str:
    """The first line of an exception's message, without terminal escape codes (torch colours some), for a
    one-line error; `empty` (default: the exception's type name) when it has no message."""
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", str(exc)).strip()
    return text.splitlines()[0] if text else (type(exc).__name__ if empty is None else empty)

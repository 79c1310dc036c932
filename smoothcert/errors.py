"""The one exception type smoothcert raises for bad input; the CLI prints its message on one line."""


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


def check_count(name: str, value: int, minimum: int = 1) -> int:
    check(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
          f"{name} must be an integer >= {minimum}, got {value!r}")
    return value

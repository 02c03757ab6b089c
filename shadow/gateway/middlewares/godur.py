"""Go's time.Duration.String(), for headers Traefik writes with it (X-Retry-In)."""

from __future__ import annotations


def _fraction(value: int, precision: int) -> str:
    whole, frac = divmod(value, 10**precision)
    text = str(whole)
    if frac:
        text += "." + str(frac).rjust(precision, "0").rstrip("0")
    return text


def go_duration(nanoseconds: int) -> str:
    """`1.5s`, `2.5ms`, `333.333333ms`, `1m0s`, `1h2m3s` — exactly as Go prints a Duration."""
    if nanoseconds == 0:
        return "0s"
    sign = "-" if nanoseconds < 0 else ""
    u = abs(nanoseconds)
    if u < 1_000_000_000:
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_fraction(u, 3)}µs"
        return f"{sign}{_fraction(u, 6)}ms"
    seconds = _fraction(u % 60_000_000_000, 9) + "s"
    minutes_total = u // 60_000_000_000
    if minutes_total == 0:
        return sign + seconds
    hours = minutes_total // 60
    text = f"{minutes_total % 60}m{seconds}"
    return sign + (f"{hours}h{text}" if hours else text)

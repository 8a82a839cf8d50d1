"""How a duration is written, for the trainer's log and a sweep's progress line."""

from __future__ import annotations


def format_duration(seconds: float, *, whole_seconds: bool = False, days: bool = True) -> str:
    """45 -> '45s', 135 -> '2m15s', 7500 -> '2h05m', 200000 -> '2.3 days'; under 10 s with
    a tenth (4.3 -> '4.3s').

    ``whole_seconds``: rounded to the second first (4.3 -> '4s', 119.7 -> '2m00s'), as a
    sweep's progress line counts. ``days=False``: hours however many (200000 -> '55h33m')."""
    s = max(0.0, float(seconds))
    if whole_seconds:
        s = float(round(s))
    if s < 60:
        return f"{s:.1f}s" if s < 10 and not whole_seconds else f"{s:.0f}s"
    if s < 3600:
        return f"{int(s // 60)}m{int(s % 60):02d}s"
    if s < 48 * 3600 or not days:
        return f"{int(s // 3600)}h{int(s % 3600 // 60):02d}m"
    return f"{s / 86400:.1f} days"

"""Charts drawn on the server as SVG: no JavaScript, nothing to vendor, nothing a strict
Content-Security-Policy blocks (colours come from the stylesheet, through classes).

Every text put into the SVG is escaped; the numbers are formatted here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from markupsafe import Markup, escape

if TYPE_CHECKING:
    from collections.abc import Sequence
    from datetime import datetime

__all__ = ["Bucket", "failure_rate_chart", "throughput_chart", "wait_chart"]

WIDTH = 480
HEIGHT = 200
LEFT = 50  # room for the y axis labels
BOTTOM = 22  # room for the x axis labels
TOP = 10


@dataclass(frozen=True)
class Bucket:
    """Finished runs in one time bucket (an hour)."""

    start: datetime
    completed: int
    failed: int  # failed, cancelled and discarded: every finish that was not a success
    # How long the runs that started waited past their run_at, in seconds (None: no run).
    wait_p50: float | None = None
    wait_p95: float | None = None

    @property
    def total(self) -> int:
        return self.completed + self.failed


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1.0
    magnitude = 1.0
    while magnitude * 10 <= value:
        magnitude *= 10
    for step in (1, 2, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude  # pragma: no cover


def _frame(title: str, top_label: str, buckets: Sequence[Bucket], body: list[str]) -> Markup:
    plot_h = HEIGHT - TOP - BOTTOM
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'xmlns="http://www.w3.org/2000/svg" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{TOP + plot_h}"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH}" y2="{TOP + plot_h}"/>',
        f'<line class="grid" x1="{LEFT}" y1="{TOP}" x2="{WIDTH}" y2="{TOP}"/>',
        f'<text class="label" x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">'
        f"{escape(top_label)}</text>",
        f'<text class="label" x="{LEFT - 6}" y="{TOP + plot_h}" text-anchor="end">0</text>',
    ]
    step = (WIDTH - LEFT) / max(len(buckets), 1)
    for index, bucket in enumerate(buckets):
        if index % 6 == 0:
            x = LEFT + index * step + step / 2
            parts.append(
                f'<text class="label" x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="middle">'
                f"{bucket.start:%H:%M}</text>"
            )
    parts += body
    parts.append("</svg>")
    return Markup("".join(parts))


def throughput_chart(buckets: Sequence[Bucket], *, title: str = "Finished jobs per hour") -> Markup:
    """Stacked bars: completed runs, and on top the runs that did not complete."""
    plot_h = HEIGHT - TOP - BOTTOM
    ceiling = _nice_ceiling(max((b.total for b in buckets), default=0))
    step = (WIDTH - LEFT) / max(len(buckets), 1)
    bar_w = max(step - 3, 1)
    body = []
    for index, bucket in enumerate(buckets):
        x = LEFT + index * step + 1.5
        ok_h = plot_h * bucket.completed / ceiling
        bad_h = plot_h * bucket.failed / ceiling
        base = TOP + plot_h
        tip = escape(
            f"{bucket.start:%Y-%m-%d %H:%M}: {bucket.completed} completed, "
            f"{bucket.failed} not completed"
        )
        body.append(
            f'<g><title>{tip}</title><rect class="bar-ok" x="{x:.1f}" y="{base - ok_h:.1f}" '
            f'width="{bar_w:.1f}" height="{ok_h:.1f}"/>'
            f'<rect class="bar-bad" x="{x:.1f}" y="{base - ok_h - bad_h:.1f}" '
            f'width="{bar_w:.1f}" height="{bad_h:.1f}"/></g>'
        )
    return _frame(title, f"{ceiling:g}", buckets, body)


def failure_rate_chart(
    buckets: Sequence[Bucket], *, title: str = "Share of finished runs that did not complete"
) -> Markup:
    """One bar per hour: the percentage of its finished runs that did not complete (no bar
    for an hour without runs)."""
    plot_h = HEIGHT - TOP - BOTTOM
    step = (WIDTH - LEFT) / max(len(buckets), 1)
    bar_w = max(step - 3, 1)
    body = []
    for index, bucket in enumerate(buckets):
        if not bucket.total:
            continue
        rate = bucket.failed / bucket.total
        x = LEFT + index * step + 1.5
        h = plot_h * rate
        tip = escape(f"{bucket.start:%Y-%m-%d %H:%M}: {rate:.1%} of {bucket.total} runs")
        body.append(
            f'<g><title>{tip}</title><rect class="bar-rate" x="{x:.1f}" '
            f'y="{TOP + plot_h - h:.1f}" width="{bar_w:.1f}" height="{h:.1f}"/></g>'
        )
    return _frame(title, "100%", buckets, body)


def _seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.0f} min"


def wait_chart(
    buckets: Sequence[Bucket], *, title: str = "Wait past run_at before starting, per hour"
) -> Markup:
    """Per hour, how long runs waited for a worker past their run_at: a bar to the 95th
    percentile, the median marked on it (no bar for an hour without runs)."""
    plot_h = HEIGHT - TOP - BOTTOM
    ceiling = max((b.wait_p95 or 0.0 for b in buckets), default=0.0)
    ceiling = _nice_ceiling(ceiling * 1000) / 1000 if ceiling < 1 else _nice_ceiling(ceiling)
    step = (WIDTH - LEFT) / max(len(buckets), 1)
    bar_w = max(step - 3, 1)
    body = []
    for index, bucket in enumerate(buckets):
        if bucket.wait_p95 is None or bucket.wait_p50 is None:
            continue
        x = LEFT + index * step + 1.5
        high = plot_h * min(bucket.wait_p95 / ceiling, 1.0)
        middle = TOP + plot_h - plot_h * min(bucket.wait_p50 / ceiling, 1.0)
        tip = escape(
            f"{bucket.start:%Y-%m-%d %H:%M}: median {_seconds(bucket.wait_p50)}, "
            f"95th percentile {_seconds(bucket.wait_p95)}"
        )
        body.append(
            f'<g><title>{tip}</title><rect class="bar-wait" x="{x:.1f}" '
            f'y="{TOP + plot_h - high:.1f}" width="{bar_w:.1f}" height="{high:.1f}"/>'
            f'<line class="median" x1="{x:.1f}" x2="{x + bar_w:.1f}" y1="{middle:.1f}" '
            f'y2="{middle:.1f}"/></g>'
        )
    return _frame(title, _seconds(ceiling), buckets, body)

"""The dashboard's pieces without a database: CSRF tokens, the SVG charts, filter parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from sqla_pgjobs.dashboard import charts, queries
from sqla_pgjobs.dashboard.csrf import CsrfTokens


def test_csrf_tokens_are_signed_and_must_match_the_cookie() -> None:
    tokens = CsrfTokens("secret")
    token = tokens.new()
    assert tokens.valid(token) and tokens.accepts(token, token)
    assert not tokens.accepts(token, tokens.new())  # another token of the same app
    assert not tokens.accepts(None, token) and not tokens.accepts(token, None)
    assert not CsrfTokens("other").valid(token)  # another secret
    forged = token.split(".")[0] + "." + "0" * 64
    assert not tokens.accepts(forged, forged)
    assert not tokens.valid("no-dot") and not tokens.valid("a.b.c")


def test_charts_are_svg_with_a_bar_per_hour_and_escaped_titles() -> None:
    start = datetime(2026, 12, 7, tzinfo=UTC)
    buckets = [
        charts.Bucket(start + timedelta(hours=i), completed=i, failed=i % 3) for i in range(24)
    ]
    svg = charts.throughput_chart(buckets, title="<b>jobs</b>")
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert svg.count('class="bar-ok"') == 24
    assert "<b>" not in svg and "&lt;b&gt;jobs&lt;/b&gt;" in svg
    assert ">50<" in svg  # the axis: 23 + 2 runs at most, rounded up to 50
    rate = charts.failure_rate_chart(buckets)
    assert rate.count('class="bar-rate"') == 23  # hour 0 has no runs: no bar
    empty = charts.throughput_chart([charts.Bucket(start, 0, 0)])
    assert 'height="0.0"' in empty


@pytest.mark.parametrize(
    ("params", "argument"),
    [
        ({"state": "x"}, "state"),
        ({"payload": "{"}, "payload"),
        ({"tenant": "x"}, "tenant"),
        ({"since": "x"}, "since"),
        ({"until": "2026-13-01"}, "until"),
        ({"before": "0"}, "before"),
        ({"limit": "501"}, "limit"),
    ],
)
def test_a_bad_filter_names_its_argument(params: dict[str, str], argument: str) -> None:
    with pytest.raises(queries.BadInput) as info:
        queries.parse_filter(params)
    assert info.value.argument == argument


def test_a_filter_reads_back_as_the_same_query() -> None:
    f = queries.parse_filter(
        {
            "state": "due",
            "task": "mail",
            "payload": '{"a": 1}',
            "since": "2026-12-07T10:00",
            "x": "y",
        }
    )
    assert f.payload == {"a": 1} and f.since == datetime(2026, 12, 7, 10, tzinfo=UTC)
    assert queries.parse_filter(f.params()) == f
    assert f.narrowed and not queries.parse_filter({}).narrowed


def test_the_wait_chart_draws_the_95th_percentile_with_the_median() -> None:
    start = datetime(2026, 12, 7, tzinfo=UTC)
    buckets = [
        charts.Bucket(start, 1, 0, wait_p50=0.002, wait_p95=0.009),
        charts.Bucket(start + timedelta(hours=1), 0, 0),
        charts.Bucket(start + timedelta(hours=2), 5, 0, wait_p50=30.0, wait_p95=90.0),
    ]
    svg = charts.wait_chart(buckets)
    assert svg.count('class="bar-wait"') == 2 and svg.count('class="median"') == 2
    assert ">100.0 s<" in svg  # the axis: 90 s rounded up
    assert "median 30.0 s, 95th percentile 90.0 s" in svg
    small = charts.wait_chart(buckets[:1])
    assert ">10 ms<" in small

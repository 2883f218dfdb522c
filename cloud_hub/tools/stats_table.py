"""A readable table of ``/v1/stats`` for terminals: what ``cloud-hub stats`` and ``up`` print."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from typing import Any

from cloud_hub.schemas import AGE_BANDS, GENDERS, StatsResponse


def fetch_stats(
    base_url: str, timeout_s: float = 10.0, *, api_key: str | None = None, **params: str
) -> StatsResponse:
    """GET ``/v1/stats`` from a running hub (stdlib only, so the CLI needs no HTTP client)."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v})
    url = f"{base_url.rstrip('/')}/v1/stats" + (f"?{query}" if query else "")
    headers = {"X-API-Key": api_key} if api_key else {}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        data: dict[str, Any] = json.load(response)
    return StatsResponse.model_validate(data)


def format_stats(stats: StatsResponse, *, skip_empty: bool = True) -> str:
    """Totals, then one row per bucket (empty buckets left out unless asked for): people
    (passers-by), watchers, and the watchers by gender and age band."""
    columns = ["bucket", "total", "watchers", *GENDERS, *AGE_BANDS]
    rows = [
        [
            f"{b.start:%Y-%m-%d %H:%M}",
            b.total,
            b.watchers,
            *(b.gender[g] for g in GENDERS),
            *(b.age[a] for a in AGE_BANDS),
        ]
        for b in stats.buckets
        if b.total or not skip_empty
    ]
    t = stats.totals
    rows.append(
        ["TOTAL", t.total, t.watchers, *(t.gender[g] for g in GENDERS)]
        + [t.age[a] for a in AGE_BANDS]
    )
    cells = [columns, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]

    def line(row: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )

    scope = ", ".join(
        f"{k}={v}" for k, v in (("device", stats.device_id), ("camera", stats.camera_id)) if v
    )
    header = (
        f"People seen {stats.start:%Y-%m-%d %H:%M} to {stats.end:%Y-%m-%d %H:%M} UTC "
        f"by {stats.bucket}{f' ({scope})' if scope else ''}"
    )
    rule = "-" * len(line(cells[0]))
    body = [line(r) for r in cells[1:-1]]
    return "\n".join([header, line(cells[0]), rule, *body, rule, line(cells[-1])])

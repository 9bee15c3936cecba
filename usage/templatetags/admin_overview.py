"""The overview on the admin index, for the gateway's administrators (superusers) only."""

from __future__ import annotations

from decimal import Decimal

from django import template

from costs.money import micros_usd
from usage.overview import Overview, admin_overview

register = template.Library()


@register.simple_tag(takes_context=True)
def overview_for_admin(context: template.Context) -> Overview | None:
    """The overview when the viewer is a gateway administrator, else None (staff alone)."""
    request = context.get("request")
    if request is None or not request.user.is_superuser:
        return None
    return admin_overview()


@register.filter
def dollars(micros: int | None) -> str:
    """Micro-dollars as "$1.2345"."""
    return micros_usd(micros)


@register.filter
def chart_points(overview: Overview) -> list[dict]:
    """The daily spend chart's data, for `json_script` (dollars as exact decimal strings)."""
    return [
        {
            "day": f"{day:%Y-%m-%d}",
            "cost_usd": str(Decimal(totals.cost_micros).scaleb(-6).quantize(Decimal("0.000001"))),
            "requests": totals.requests,
        }
        for day, totals in overview.chart
    ]

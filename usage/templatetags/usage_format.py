"""Template filters for money and tokens on the dashboard pages."""

from django import template

from usage.views import usd as _usd

register = template.Library()


@register.filter
def usd(micros: int | None) -> str:
    """Micro-dollars as "$0.0123" (four decimals under a dollar) or "$12.34"; None: unknown."""
    return _usd(micros)

"""`{% demo_sign_in_on as demo_on %}`: whether the demo sign-in is on, for the page banner."""

from django import template
from django.conf import settings

register = template.Library()

DEMO_BANNER = "Demo sign-in is on: anyone who can reach this server can sign in as any e-mail"


@register.simple_tag
def demo_sign_in_on() -> bool:
    return bool(settings.GATEWAY.auth.demo_provider)


@register.simple_tag
def demo_banner_text() -> str:
    return DEMO_BANNER

"""HTML pages of accounts: the token page for people who paste a JWT into a CLI."""

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from accounts.services import token_pair_create


@never_cache
@login_required
@require_http_methods(["GET", "POST"])
def token_page(request: HttpRequest) -> HttpResponse:
    """GET: a button; POST (CSRF-protected): a fresh access + refresh pair, shown once."""
    tokens = token_pair_create(user=request.user) if request.method == "POST" else None
    return render(request, "account/token.html", {"tokens": tokens})

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from accounts.services import ApiKeyLifetimeError, api_key_create, user_get_or_create
from config import clock


class Command(BaseCommand):
    help = "Create a user if needed and print a new API key, alone, on stdout."

    def add_arguments(self, parser) -> None:
        parser.add_argument("email")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--admin", action="store_true", help="make the user an administrator")
        parser.add_argument(
            "--expires-in-days",
            type=float,
            help="days until the key stops working (default: auth.api_key_default_lifetime_days"
            ", else never); beyond auth.api_key_max_lifetime_days it is refused",
        )

    def handle(
        self,
        *args,
        email: str,
        name: str,
        admin: bool,
        expires_in_days: float | None = None,
        **options,
    ) -> None:
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"not an e-mail address: {email!r}") from exc
        if expires_in_days is not None and expires_in_days <= 0:
            raise CommandError("--expires-in-days must be positive")
        expires_at = (
            clock.now() + timedelta(days=expires_in_days) if expires_in_days is not None else None
        )
        user = user_get_or_create(email=email, admin=admin)
        try:
            created = api_key_create(user=user, name=name, expires_at=expires_at)
        except ApiKeyLifetimeError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(created.raw)

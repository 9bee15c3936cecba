from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.core.validators import validate_email

from accounts.services import api_key_create, user_get_or_create


class Command(BaseCommand):
    help = "Create a user if needed and print a new API key, alone, on stdout."

    def add_arguments(self, parser) -> None:
        parser.add_argument("email")
        parser.add_argument("--name", default="cli")
        parser.add_argument("--admin", action="store_true", help="make the user an administrator")

    def handle(self, *args, email: str, name: str, admin: bool, **options) -> None:
        try:
            validate_email(email)
        except ValidationError as exc:
            raise CommandError(f"not an e-mail address: {email!r}") from exc
        user = user_get_or_create(email=email, admin=admin)
        created = api_key_create(user=user, name=name)
        self.stdout.write(created.raw)

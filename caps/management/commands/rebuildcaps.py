"""`manage.py rebuildcaps`: recompute the current windows' cap counters from usage records."""

from django.core.management.base import BaseCommand

from caps.rebuild import caps_rebuild


class Command(BaseCommand):
    help = "Recompute cap counters of the current windows from the usage records."

    def handle(self, *args, **options) -> None:
        windows = caps_rebuild()
        self.stdout.write(f"rebuilt {windows} cap windows from the usage records")

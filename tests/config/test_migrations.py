"""Every migration applies forward and back to zero, on the configured database engine, and
data written under an earlier schema survives the forward migration."""

import os
import subprocess
import sys
import uuid
from io import StringIO

import psycopg
import pytest
from django.core.management import call_command
from django.db import connection

from tests.fixtures.servers import BASE_DIR

SCRIPT = r"""
import django, sys
django.setup()
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder

call_command("migrate", "accounts", "0001", verbosity=0)
with connection.cursor() as cursor:
    cursor.execute(
        "INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name,"
        " email, is_staff, is_active, date_joined) VALUES"
        " ('!', false, 'old@example.com', '', '', 'old@example.com', false, true,"
        " '2026-01-01 00:00:00+00')"
    )
call_command("migrate", verbosity=0)
with connection.cursor() as cursor:
    cursor.execute("SELECT email FROM accounts_user")
    assert [r[0] for r in cursor.fetchall()] == ["old@example.com"], "data lost"
applied = MigrationRecorder(connection).applied_migrations()
executor = MigrationExecutor(connection)
leaves = executor.loader.graph.leaf_nodes()
assert set(leaves) <= set(applied), "not every migration applied"
for app in sorted({app for app, _ in applied}):
    call_command("migrate", app, "zero", verbosity=0)
left = MigrationRecorder(connection).applied_migrations()
assert not left, f"still applied: {sorted(left)[:5]}"
print("forward", len(applied), "back", len(applied) - len(left))
"""


@pytest.fixture
def scratch_database_url(tmp_path):
    """An empty database of the configured engine, dropped afterwards."""
    if connection.vendor == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.sqlite3'}"
        return
    settings = connection.settings_dict
    name = f"gw_migrations_{uuid.uuid4().hex[:8]}"
    server = (
        f"host={settings['HOST'] or '127.0.0.1'} port={settings['PORT'] or 5432} "
        f"user={settings['USER'] or 'postgres'} dbname=postgres"
    )
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield (
            f"postgres://{settings['USER'] or 'postgres'}@{settings['HOST'] or '127.0.0.1'}:"
            f"{settings['PORT'] or 5432}/{name}"
        )
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_every_migration_applies_forward_and_back_to_zero(scratch_database_url):
    env = {**os.environ, "DATABASE_URL": scratch_database_url}
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=BASE_DIR,
        env={**env, "DJANGO_SETTINGS_MODULE": "config.settings"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    forward, back = result.stdout.split()[1], result.stdout.split()[3]
    assert int(forward) > 20
    assert forward == back


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert "No changes detected" in out.getvalue()


COPIED_DEFAULTS_SCRIPT = r"""
import django
django.setup()
from django.core.management import call_command
from django.db import connection

call_command("migrate", "caps", "0005", verbosity=0)
with connection.cursor() as cursor:
    for i, email in enumerate(["copied@example.com", "edited@example.com", "own@example.com"]):
        cursor.execute(
            "INSERT INTO accounts_user (password, is_superuser, username, first_name, last_name,"
            " email, is_staff, is_active, date_joined, admin_from_config, token_generation,"
            " created_by_demo, session_generation) VALUES ('!', false, %s, '', '', %s, false,"
            " true, '2026-01-01 00:00:00+00', false, 0, false, 0)", [email, email]
        )
    cursor.execute("SELECT id, email FROM accounts_user ORDER BY id")
    ids = {email: pk for pk, email in cursor.fetchall()}
    for email in ids:
        cursor.execute("INSERT INTO user_cap_defaults (user_id, installed_at) VALUES (%s, %s)",
                       [ids[email], "2026-01-01 00:00:00+00"])
    rows = [
        ("copied@example.com", "admin", 1000, 100000, 1000),  # as copied: the policy takes over
        ("edited@example.com", "admin", 1000, 250000, 1000),  # changed since: stays
        ("own@example.com", "user", 1000, 100000, 1000),  # the user's own: stays
    ]
    for email, set_by, requests, tokens, cents in rows:
        cursor.execute(
            "INSERT INTO user_cap_configs (user_id, cap_type, max_requests, max_tokens,"
            " max_cost_cents, is_active, set_by, created_at, updated_at) VALUES"
            " (%s, 'daily', %s, %s, %s, true, %s, %s, %s)",
            [ids[email], requests, tokens, cents, set_by, "2026-01-01 00:00:00+00",
             "2026-01-01 00:00:00+00"],
        )
call_command("migrate", verbosity=0)
with connection.cursor() as cursor:
    cursor.execute(
        "SELECT u.email FROM user_cap_configs c JOIN accounts_user u ON u.id = c.user_id"
        " ORDER BY u.email"
    )
    print(" ".join(r[0] for r in cursor.fetchall()))
"""


def test_the_copied_default_caps_give_way_to_the_policy(scratch_database_url):
    result = subprocess.run(
        [sys.executable, "-c", COPIED_DEFAULTS_SCRIPT],
        cwd=BASE_DIR,
        env={
            **os.environ,
            "DATABASE_URL": scratch_database_url,
            "DJANGO_SETTINGS_MODULE": "config.settings",
        },
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["edited@example.com", "own@example.com"]

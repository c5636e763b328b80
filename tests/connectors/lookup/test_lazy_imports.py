"""Building a lookup plan over Redis/PostgreSQL tables imports neither client library."""

from __future__ import annotations

import subprocess
import sys


def test_lookup_plans_do_not_import_redis_or_psycopg():
    code = (
        "import sys, streambatch as sb\n"
        "ds = sb.range(3).lookup(sb.RedisTable(prefix='u:', key='id'), on='id')\n"
        "ds = ds.lookup(sb.PostgresTable('dbname=x', 'users', key='id'), on='id',\n"
        "               cache=sb.FreshCache(0.5, policy='ttl'))\n"
        "print(sorted(m for m in ('redis', 'psycopg') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"

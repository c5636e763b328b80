"""SQL names for lookup tables: checked identifiers, quoting, and derived names.

Every name that a lookup table puts into SQL goes through here. User names
(tables, key and value columns) are checked (:func:`check_identifier`) and
always quoted (:func:`quote_ident`; string literals with
:func:`quote_literal`), never pasted. Names of the objects the feed installs
(changelog tables, triggers, functions) come from :func:`derived_name`: a
readable prefix plus a hash of the full, schema-qualified table name, so two
tables never share one, however long their names or whatever characters they
hold, and the name always fits the server's limit.

>>> derived_name("sb_changes_", "public", "prices")
'sb_changes_prices_cbcdfb7fb2081d46'
>>> quote_ident('x"); DROP TABLE t; --')
'"x""); DROP TABLE t; --"'
"""

from __future__ import annotations

import hashlib
import re

PG_MAX_NAME_BYTES = 63  # PostgreSQL cuts longer names (NAMEDATALEN - 1)
_DIGEST_CHARS = 16      # 64 bits of SHA-256
_UNREADABLE = re.compile(r"[^A-Za-z0-9_]+")


def check_identifier(name: object, what: str, where: str, max_bytes: int | None = None) -> str:
    """``name`` if it can be quoted safely as an SQL identifier, else a ValueError
    that names it: it must be a non-empty string without NUL bytes (which no
    server stores and drivers cut a statement at) and, when ``max_bytes`` is
    given, at most that many bytes of UTF-8 (longer names are cut by the server).

    >>> check_identifier('a "quoted" name', "column", "SQLiteTable('x.db')")
    'a "quoted" name'
    >>> check_identifier("a\\x00b", "column", "SQLiteTable('x.db')")
    Traceback (most recent call last):
    ...
    ValueError: SQLiteTable('x.db'): column 'a\\x00b' contains a NUL byte, which no SQL identifier can hold; rename the column
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: {what} {name!r} is not a name; pass the {what}'s name as a non-empty string")
    if "\x00" in name:
        raise ValueError(f"{where}: {what} {name!r} contains a NUL byte, which no SQL identifier can hold; "
                         f"rename the {what}")
    if max_bytes is not None and len(name.encode()) > max_bytes:
        raise ValueError(f"{where}: {what} {name!r} is {len(name.encode())} bytes; the server keeps only "
                         f"the first {max_bytes} bytes of a name, so it would address another object; "
                         f"use the name the server shows for it")
    return name


def quote_ident(name: str) -> str:
    """``name`` as a double-quoted SQL identifier (standard SQL: SQLite and PostgreSQL).

    >>> quote_ident('a"b')
    '"a""b"'
    """
    if "\x00" in name:
        raise ValueError(f"identifier {name!r} contains a NUL byte; it cannot be quoted")
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    """``text`` as a single-quoted SQL string literal.

    >>> quote_literal("it's")
    "'it''s'"
    """
    if "\x00" in text:
        raise ValueError(f"string {text!r} contains a NUL byte; it cannot be an SQL literal")
    return "'" + text.replace("'", "''") + "'"


def derived_name(prefix: str, schema: str, table: str, max_bytes: int = PG_MAX_NAME_BYTES) -> str:
    """The name of an object the feed installs for ``schema.table``: ``prefix``, a
    readable part of the table name (letters, digits and ``_`` only), ``_`` and a
    hash of the full qualified name, at most ``max_bytes`` bytes. Tables that
    share a long prefix, or differ only in characters the readable part drops,
    still get different names.

    >>> a = derived_name("sb_changes_", "public", "p" * 70 + "_a")
    >>> b = derived_name("sb_changes_", "public", "p" * 70 + "_b")
    >>> a != b, len(a) <= 63, a.startswith("sb_changes_ppp")
    (True, True, True)
    """
    qualified = quote_ident(schema) + "." + quote_ident(table)
    digest = hashlib.sha256(qualified.encode()).hexdigest()[:_DIGEST_CHARS]
    room = max_bytes - len(prefix) - 1 - len(digest)
    if room < 0:
        raise ValueError(f"derived_name: prefix {prefix!r} leaves no room for the hash in {max_bytes} bytes")
    readable = _UNREADABLE.sub("_", table).strip("_")[:room]
    return f"{prefix}{readable}_{digest}" if readable else f"{prefix}{digest}"

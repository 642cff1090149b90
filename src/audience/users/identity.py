"""Identity values: placeholders that never identify anyone (R-ID-6), phones, emails, keys."""

from __future__ import annotations

import re
import secrets

import phonenumbers

BLOCKED_VALUES = frozenset(
    {
        "",
        "null",
        "undefined",
        "none",
        "nan",
        "anonymous",
        "guest",
        "0",
        "-1",
        "[object object]",
        "true",
        "false",
        "id",
        "email",
        "distinct_id",
        "not_authenticated",
    }
)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
_KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def is_blocked(value: str) -> bool:
    """True for empty and placeholder values ("null", "'undefined'", " guest ") in any case."""
    return value.strip().strip("'\"").strip().lower() in BLOCKED_VALUES


def new_user_key() -> str:
    """16 characters of [a-z0-9], uniformly random: one draw from the OS, spelled in base 36
    (a `secrets.choice` per character cost 16 draws, 5% of ingesting a new user)."""
    number = secrets.randbelow(len(_KEY_ALPHABET) ** 16)
    characters = []
    for _ in range(16):
        number, digit = divmod(number, len(_KEY_ALPHABET))
        characters.append(_KEY_ALPHABET[digit])
    return "".join(characters)


def is_email(value: str) -> bool:
    return bool(_EMAIL.match(value))


def normalize_phone(raw: str, default_region: str | None = None) -> str | None:
    """E.164 form of `raw` when it is a possible number, else None (the caller keeps the raw)."""
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))

"""The one place that knows SQLite's json_* functions from PostgreSQL's jsonb operators.

Each accessor reads one top-level key of a JSON object column and is NULL unless the value has
the wanted JSON type, so a value of another type (left over from before a definition changed)
never matches and never makes a cast fail. Keys are rendered as literals so that expression
indexes on `json_extract(custom_attributes, '$."plan"')` / `custom_attributes ->> 'plan'` apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    String,
    and_,
    case,
    cast,
    exists,
    func,
    literal,
    literal_column,
    select,
    type_coerce,
)

Kind = Literal["string", "number", "boolean", "array"]
Test = Callable[[ColumnElement[Any]], ColumnElement[bool]]

_SQLITE_TYPES: dict[str, tuple[str, ...]] = {
    "string": ("text",),
    "number": ("integer", "real"),
    "boolean": ("true", "false"),
    "array": ("array",),
}
# A number beyond float8 would make PostgreSQL's cast fail: |x| >= 1e300 counts as no number.
_FLOAT_LIMIT: ColumnElement[float] = literal_column("1e300")


def _safe_path_key(key: str) -> bool:
    # SQLite 3.40 paths can't quote '"' or '\', and compare labels before unescaping (a key
    # stored as "\u00e9" is missed by '$."é"'): such keys are looked up through json_each.
    return all(" " <= ch <= "~" and ch not in '"\\' for ch in key)


def _key(text: str) -> ColumnElement[str]:
    return literal(text, String, literal_execute=True)


class Json:
    """Typed access to the keys of a JSON object column, for one dialect."""

    def __init__(self, dialect: str) -> None:
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"unsupported dialect {dialect!r}")
        self.pg = dialect == "postgresql"

    def _sqlite(self, doc: Any, key: str) -> tuple[ColumnElement[Any], ColumnElement[str]]:
        """(value, json_type) of one key on SQLite."""
        if _safe_path_key(key):
            path = _key(f'$."{key}"')
            return func.json_extract(doc, path), func.json_type(doc, path)
        each = func.json_each(doc).table_valued("key", "value", "type")
        value = select(each.c.value).where(each.c.key == key).scalar_subquery()
        kind = select(each.c.type).where(each.c.key == key).scalar_subquery()
        return value, kind

    def _type(self, doc: Any, key: str) -> ColumnElement[str]:
        if self.pg:
            return func.jsonb_typeof(doc.op("->")(_key(key)))
        return self._sqlite(doc, key)[1]

    def _is(self, json_type: ColumnElement[str], kind: Kind) -> ColumnElement[bool]:
        if self.pg:
            return json_type == _key(kind)
        return json_type.in_([_key(name) for name in _SQLITE_TYPES[kind]])

    def present(self, doc: Any, key: str) -> ColumnElement[bool]:
        """The key holds a value other than null."""
        json_type = self._type(doc, key)
        return and_(json_type.is_not(None), json_type != _key("null"))

    def is_array(self, doc: Any, key: str) -> ColumnElement[bool]:
        json_type = self._type(doc, key)
        return and_(json_type.is_not(None), self._is(json_type, "array"))  # never NULL

    def scalar(self, doc: Any, key: str, kind: Kind) -> ColumnElement[Any]:
        """The value of `doc[key]` as SQL text/float/boolean when it is a JSON `kind`, else NULL."""
        json_type = self._type(doc, key)
        if self.pg:
            return self._pg_typed(json_type, self._text(doc, key), kind)
        value = self._sqlite(doc, key)[0]
        return self._sqlite_typed(json_type, value, kind)

    def date(self, doc: Any, key: str) -> ColumnElement[str]:
        """A date attribute: its text when shaped YYYY-MM-DD, compared as text."""
        raw = self._text(doc, key)
        return self.bytewise(type_coerce(case((self._shaped(raw, "????-??-??"), raw)), String))

    def datetime(self, doc: Any, key: str) -> ColumnElement[str]:
        """A datetime attribute, stored as values.format_datetime writes it (…THH:MM:SSZ, with
        .ffffff when not whole), as the fixed-width text YYYY-MM-DDTHH:MM:SS.ffffff: compared as
        text, nothing is cast, so no stored value can make a query fail. (Only strings can
        have this shape, so no type check is needed: one JSON lookup per reference.)"""
        raw = self._text(doc, key)
        padded = type_coerce(func.replace(raw, "Z", ""), String) + ".000000"
        fixed = case((self._shaped(raw, "????-??-??T??:??:??*Z"), func.substr(padded, 1, 26)))
        return self.bytewise(type_coerce(fixed, String))

    def _text(self, doc: Any, key: str) -> ColumnElement[Any]:
        if self.pg:  # `->>` is text, not the JSON type SQLAlchemy would give it
            return type_coerce(doc.op("->>")(_key(key)), String)
        return self._sqlite(doc, key)[0]

    def _shaped(self, text: ColumnElement[Any], glob: str) -> ColumnElement[bool]:
        """`text` matches a GLOB-style shape (? one character, * any), case-sensitively."""
        if self.pg:
            return text.like(_key(glob.replace("?", "_").replace("*", "%")))
        return text.op("GLOB")(_key(glob))  # SQLite's LIKE ignores case

    def any_element(self, doc: Any, key: str, kind: Kind, test: Test) -> ColumnElement[bool]:
        """`doc[key]` is an array with an element of `kind` for which `test` holds."""
        if self.pg:
            array = case((self.is_array(doc, key), doc.op("->")(_key(key))))
            each = func.jsonb_array_elements(array).table_valued("value")
            text = type_coerce(each.c.value.op("#>>")(literal_column("'{}'")), String)
            element = self._pg_typed(func.jsonb_typeof(each.c.value), text, kind)
            return exists(select(1).select_from(each).where(test(element)))
        value, json_type = self._sqlite(doc, key)
        # Only an array reaches json_each: a string there would be "malformed JSON".
        each = func.json_each(case((json_type == "array", value))).table_valued("value", "type")
        element = self._sqlite_typed(each.c.type, each.c.value, kind)
        return exists(select(1).select_from(each).where(test(element)))

    def _pg_typed(self, json_type: ColumnElement[str], text: Any, kind: Kind) -> ColumnElement[Any]:
        # CASE, unlike AND, fixes the order of evaluation: nothing is cast before its type is known.
        if kind == "string":
            return type_coerce(case((json_type == _key("string"), text)), String)
        if kind == "boolean":
            return type_coerce(case((json_type == _key("boolean"), text == _key("true"))), Boolean)
        # jsonb prints numbers without exponent: under 300 characters fits a float8.
        number = case((func.length(text) < literal_column("300"), cast(text, Float)))
        return type_coerce(case((json_type == _key("number"), number)), Float)

    def _sqlite_typed(
        self, json_type: ColumnElement[str], value: ColumnElement[Any], kind: Kind
    ) -> ColumnElement[Any]:
        if kind == "boolean":
            return type_coerce(
                case((json_type == _key("true"), True), (json_type == _key("false"), False)),
                Boolean,
            )
        if kind == "number":  # the same range as PostgreSQL's, so both agree on what a number is
            number = case((func.abs(value) < _FLOAT_LIMIT, value))
            return type_coerce(case((self._is(json_type, kind), number)), Float)
        return type_coerce(case((self._is(json_type, kind), value)), String)

    def bytewise(self, text: ColumnElement[str]) -> ColumnElement[str]:
        """`text` compared byte by byte: fixed-format ISO dates order as text in any collation."""
        return text.collate("C") if self.pg else text

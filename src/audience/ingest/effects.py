"""What each message kind does to profiles and events (R-ING-3; companies: joins.py).

Called by the processor inside its batch transaction, one message at a time, after identity
resolution. Bad values in traits never sink a message: the attribute is skipped with a warning
(R-ATTR-1) and the rest applied.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from pydantic import ValidationError
from ua_parser import parse as parse_user_agent

from audience.db import utcnow
from audience.environments.models import Environment
from audience.errors import Invalid
from audience.events.timing import too_far_ahead
from audience.ingest.mapping import Keys, Profile, keys_of, page_of, profile_of, traits_of
from audience.tags import service as tags
from audience.users import service as users
from audience.users.models import User
from audience.users.schemas import UserWrite

SESSION_GAP = timedelta(minutes=30)
EVENT_KINDS = {"track": "track", "page": "page", "screen": "screen"}


@dataclass
class Message:
    """One message being applied: its payload, time, target user and what went wrong softly."""

    payload: dict[str, Any]
    message_id: str
    timestamp: datetime
    warnings: list[dict[str, Any]] = field(default_factory=list)
    traits: dict[str, Any] = field(init=False)  # read by several steps: worked out once
    keys: Keys = field(init=False)

    def __post_init__(self) -> None:
        self.traits = traits_of(self.payload)
        self.keys = keys_of(self.payload, self.traits)

    @property
    def kind(self) -> str:
        return str(self.payload["type"])

    def warn(self, code: str, message: str, field: str | None = None) -> None:
        warning = {"code": code, "message": message}
        if field:
            warning["field"] = field
        self.warnings.append(warning)


def _source(message: Message) -> users.ChangeSource:
    return users.ChangeSource("ingest", message.message_id)


def _valid_standard(message: Message, standard: dict[str, Any]) -> dict[str, Any]:
    """The standard attributes UserWrite accepts; the rest dropped with a warning each."""
    data = {key: value for key, value in standard.items() if key != "user_id"}
    while data:
        try:
            return UserWrite.model_validate(data).model_dump(exclude_unset=True)
        except ValidationError as exc:
            bad = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            for name in bad or set(data):
                message.warn("invalid_trait", f"{name}: {exc.errors()[0]['msg']}", name)
                data.pop(name, None)
    return {}


def apply_profile(
    session: Any, environment: Environment, user: User, message: Message, profile: Profile
) -> None:
    data = _valid_standard(message, profile.standard)
    if profile.custom:
        data["custom_attributes"] = profile.custom
    for name in profile.ignored:
        message.warn("invalid_trait", f"{name}: objects can't be stored as attributes", name)

    def skip(invalid: Invalid) -> None:
        message.warn(invalid.code, invalid.message, invalid.field)

    while data:
        try:
            users.update_user(
                session,
                environment=environment,
                user=user,
                data=data,
                source=_source(message),
                on_invalid=skip,
                as_of=message.timestamp,
            )
            break
        except Invalid as invalid:  # a standard value the service refused (e.g. a bad email)
            skip(invalid)
            if data.pop(invalid.field or "", None) is None:
                break


def tag(
    session: Any, environment: Environment, user: User, message: Message, names: list[str]
) -> None:
    """The tags of the message's traits (`Profile.tags`); the user's row must exist already."""
    for name in names:
        if len(name) > 255:
            message.warn("invalid_trait", "tag names are at most 255 characters", "tags")
            continue
        tags.tag_user(
            session, environment_id=environment.id, user_id=user.id, tag_id=None, name=name
        )


@lru_cache(maxsize=4096)
def _device(user_agent: str) -> tuple[str | None, str | None, str | None, str | None]:
    parsed = parse_user_agent(user_agent)
    browser = parsed.user_agent.family if parsed.user_agent else None
    version = parsed.user_agent.major if parsed.user_agent else None
    os = parsed.os.family if parsed.os else None
    device = parsed.device.family if parsed.device else None
    return browser, version, os, device


def touch(environment: Environment, user: User, message: Message) -> None:
    """Seen times, sessions (30 minutes apart) and device data from the message's context.

    A time more than 24 hours after the message was received (kept, flagged future_timestamp,
    R-ING-6) is not trusted as a visit: it moves no seen time, counts no session and sets no
    device data, so a client clock in 2099 can't leave the user "last seen" in 2099 for good.
    """
    moment = message.timestamp
    last = user.last_seen_at
    trusted = not too_far_ahead(moment, _received_at(message.payload, utcnow()))
    if trusted:
        if message.kind in EVENT_KINDS and (last is None or moment - last > SESSION_GAP):
            user.session_count = (user.session_count or 0) + 1
        if user.first_seen_at is None or moment < user.first_seen_at:
            user.first_seen_at = moment
        if last is None or moment > last:
            user.last_seen_at = moment
            user.last_request_at = moment
    context = message.payload.get("context")
    if not isinstance(context, dict):
        return
    agent = context.get("userAgent")
    if isinstance(agent, str) and agent and trusted and (last is None or moment >= last):
        user.browser, user.browser_version, user.os, user.device = _device(agent[:1000])
        if environment.settings.get("keep_tracking_data"):
            user.user_agent = agent[:2000]
    locale = context.get("locale")
    if isinstance(locale, str) and locale:
        user.language = locale[:35]
    ip = context.get("ip")
    if environment.settings.get("keep_tracking_data") and isinstance(ip, str) and ip:
        user.last_seen_ip = ip[:45]


def page_effects(user: User, message: Message) -> dict[str, Any]:
    """Page-view counters, UTM first and last touch, referrer; returns the page's properties."""
    page = page_of(message.payload)
    user.page_views = (user.page_views or 0) + 1
    if page.utm:
        if not any(getattr(user, f"first_utm_{name}") for name in ("source", "medium", "campaign")):
            for name, value in page.utm.items():
                setattr(user, f"first_utm_{name}", value[:255])
        for name in ("source", "medium", "campaign", "term", "content"):
            setattr(user, f"utm_{name}", (page.utm.get(name) or "")[:255] or None)
    if page.referrer:
        user.referrer = page.referrer[:2048]
    return {"url": page.url, "path": page.path, "title": page.title, "referrer": page.referrer}


def event_of(environment: Environment, user: User, message: Message) -> dict[str, Any]:
    """The events row of a track, page or screen call (inserted by the processor in bulk, which
    fills in `user_id`: the user may not be inserted yet)."""
    payload = message.payload
    properties: dict[str, Any] = payload.get("properties") or {}
    renames = environment.settings.get("event_properties") or {}
    properties = {renames.get(key, key): value for key, value in (properties or {}).items()}
    page_url = None
    if message.kind == "track":
        name = str(payload["event"])
        name = (environment.settings.get("event_names") or {}).get(name, name)
    else:
        page = page_effects(user, message)
        page_url = page["url"]
        properties = {**{k: v for k, v in page.items() if v is not None}, **properties}
        name = str(payload.get("name") or page["title"] or page["path"] or message.kind)[:255]
    context: dict[str, Any] = payload.get("context") or {}
    library: dict[str, Any] = context.get("library") or {}
    library = library if isinstance(library, dict) else {}
    library_name = library.get("name")
    session_id = context.get("sessionId")
    return {
        "environment_id": environment.id,
        "user_id": None,
        "name": name,
        "kind": EVENT_KINDS[message.kind],
        "timestamp": message.timestamp,
        "received_at": _received_at(payload, message.timestamp),
        "message_id": message.message_id,
        "properties": properties,
        "page_url": page_url,
        "session_id": str(session_id)[:255] if session_id is not None else None,
        "source": "ingest",
        "library": str(library_name)[:100] if library_name else None,
    }


def _received_at(payload: dict[str, Any], fallback: datetime) -> datetime:
    try:
        return datetime.fromisoformat(str(payload["receivedAt"]).replace("Z", "+00:00"))
    except (KeyError, ValueError):
        return fallback


def profile_for(environment: Environment, message: Message) -> Profile:
    return profile_of(message.traits, environment.settings.get("traits") or None)

"""Field mapping of tracking messages onto audience's objects (R-ING-2, seed 001's tables).

Pure functions over a normalised message (see messages.py): which keys identify the person,
which standard and custom user attributes the traits set, the company of a group call, and what a
page view says. Traits in `context.traits` apply on every kind; the message's own traits win.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from audience.attributes.values import OPERATIONS
from audience.users.identity import is_blocked

# user attribute <- trait names, first present wins (seed 001 identify table, plus Segment's
# reserved traits). `address.*` is read separately.
USER_TRAITS: dict[str, tuple[str, ...]] = {
    "first_name": ("firstName", "firstname", "first_name"),
    "last_name": ("lastName", "lastname", "last_name"),
    "name": ("name",),
    "email": ("email",),
    "phone": ("phone",),
    "gender": ("gender",),
    "status": ("status",),
    "region": ("region",),
    "country": ("country",),
    "city": ("city",),
    "postal_code": ("postalCode", "postal_code", "zip", "zipcode"),
    "timezone": ("timezone",),
    "language": ("language",),
    "google_url": ("googleUrl", "google_url"),
    "linkedin_url": ("linkedinUrl", "linkedin_url"),
    "twitter_url": ("twitterUrl", "twitter_url"),
    "facebook_url": ("facebookUrl", "facebook_url"),
    "avatar_url": ("avatar", "avatarURL", "avatar_URL", "avatarUrl", "avatar_url"),
    "signed_up_at": ("createdAt", "created_at", "signedUpAt", "signed_up_at"),
    "unsubscribed_from_emails": ("unsubscribedFromEmails", "unsubscribed_from_emails"),
    "owner_id": ("ownerId", "owner_id"),
    "fcm_key": ("fcmKey", "fcm_key"),
}
ADDRESS_TRAITS: dict[str, tuple[str, ...]] = {
    "city": ("city",),
    "region": ("state", "region"),
    "country": ("country",),
    "postal_code": ("postalCode", "postalcode", "postal_code", "zip", "zipcode"),
}
# company attribute <- group trait names (seed 001 group table).
COMPANY_TRAITS: dict[str, tuple[str, ...]] = {
    "name": ("name",),
    "email": ("email",),
    "city": ("city",),
    "region": ("region", "state"),
    "country": ("country",),
    "postal_code": ("zip", "zipcode", "postalCode", "postal_code"),
    "description": ("description",),
    "size": ("size", "employees", "employee_count"),
    "website": ("website",),
    "industry": ("industry",),
    "plan": ("plan",),
    "remote_created_at": ("createdAt", "created_at"),
}
ID_TRAITS = ("userId", "id")
# Traits that are consumed elsewhere and never become custom attributes.
RESERVED_TRAITS = frozenset({"userId", "id", "anonymousId", "address", "company", "tags"})
LOOKUP_INTEGRATIONS = ("audience", "Audience", "user", "User.com", "user.com", "USER")
UTM_FIELDS = ("source", "medium", "campaign", "term", "content")


def _text(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _usable_id(value: Any) -> str | None:
    """An id from traits passes the same checks the accept path gives `userId` (R-ID-6)."""
    text = _text(value)
    return text if text and len(text) <= 255 and not is_blocked(text) else None


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def traits_of(message: dict[str, Any]) -> dict[str, Any]:
    """The person's traits: `context.traits`, overlaid with identify's own traits.

    A group call's own traits describe the company, never the user.
    """
    own = _dict(message.get("traits")) if message["type"] == "identify" else {}
    return {**_dict(_dict(message.get("context")).get("traits")), **own}


@dataclass(slots=True)
class Keys:
    """What can point at the person, in R-ID-2's order."""

    user_key: str | None = None
    lookup: tuple[str, str] | None = None  # ("email" | "phone", value)
    lookup_error: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None


def keys_of(message: dict[str, Any], traits: dict[str, Any]) -> Keys:
    keys = Keys(anonymous_id=message.get("anonymousId"))
    context = _dict(message.get("context"))
    external = context.get("externalId")
    for item in external if isinstance(external, list) else []:
        if isinstance(item, dict) and str(item.get("type", "")).lower() == "userkey":
            keys.user_key = _text(item.get("id"))
            break
    keys.user_id = message.get("userId") or next(
        (text for name in ID_TRAITS if (text := _usable_id(traits.get(name)))), None
    )
    integrations = _dict(message.get("integrations"))
    for name in LOOKUP_INTEGRATIONS:
        lookup = _dict(integrations.get(name)).get("lookup")
        if lookup is None:
            continue
        if lookup not in ("email", "phone"):
            keys.lookup_error = f"integrations.{name}.lookup must be 'email' or 'phone'"
            break
        properties = _dict(message.get("properties"))
        value = _text(traits.get(lookup)) or _text(properties.get(lookup))
        if value is None:
            keys.lookup_error = f"lookup by {lookup}, but the message carries no {lookup}"
        else:
            keys.lookup = (lookup, value)
        break
    return keys


def _first(source: dict[str, Any], names: tuple[str, ...]) -> tuple[bool, Any]:
    for name in names:
        if name in source:
            return True, source[name]
    return False, None


@dataclass(slots=True)
class Profile:
    """What a message's traits write on the user."""

    standard: dict[str, Any] = field(default_factory=dict)
    custom: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    company: dict[str, Any] | None = None
    ignored: list[str] = field(default_factory=list)  # traits that can't be stored


def profile_of(traits: dict[str, Any], trait_map: dict[str, str] | None = None) -> Profile:
    """Standard attributes, custom attributes, tags and company from the traits.

    `trait_map` is the environment's configured mapping (trait -> user attribute), applied first.
    """
    profile = Profile()
    traits = dict(traits)
    for trait, attribute in (trait_map or {}).items():
        if trait in traits:
            value = traits.pop(trait)
            target = profile.standard if attribute in USER_TRAITS else profile.custom
            target[attribute] = value
    consumed: set[str] = set()
    for attribute, names in USER_TRAITS.items():
        found, value = _first(traits, names)
        if found and attribute not in profile.standard:
            profile.standard[attribute] = value
        consumed.update(names)
    address = traits.get("address")
    if isinstance(address, dict):
        for attribute, names in ADDRESS_TRAITS.items():
            found, value = _first(address, names)
            if found:
                profile.standard.setdefault(attribute, value)
    tags = traits.get("tags")
    if isinstance(tags, list):
        profile.tags = [text for tag in tags if (text := _text(tag))]
    elif isinstance(tags, str):
        profile.tags = [tag.strip() for tag in tags.split(",") if tag.strip()]
    company = traits.get("company")
    if isinstance(company, dict):
        profile.company = company
    for name, value in traits.items():
        if name in consumed or name in RESERVED_TRAITS or name in profile.custom:
            continue
        if isinstance(value, dict) and not _is_operation(value):
            profile.ignored.append(name)
            continue
        profile.custom[name] = value
    return profile


def _is_operation(value: dict[str, Any]) -> bool:
    """`{"$add": 1}` and the other R-ATTR-3 forms are values, not nested objects."""
    return len(value) == 1 and next(iter(value)) in OPERATIONS


def company_of(group_id: str, traits: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(standard company fields, custom attributes) of a group call or identify's `company`."""
    standard: dict[str, Any] = {"company_id": group_id}
    custom: dict[str, Any] = {}
    consumed = {"id", "groupId", "company_id", "address", "phone", "tags"}
    for attribute, names in COMPANY_TRAITS.items():
        found, value = _first(traits, names)
        if found:
            standard[attribute] = value
        consumed.update(names)
    address = traits.get("address")
    if isinstance(address, dict):
        street = _text(address.get("street"))
        if street:
            standard["address"] = street
        for attribute, names in ADDRESS_TRAITS.items():
            found, value = _first(address, names)
            if found:
                standard.setdefault(attribute, value)
    elif (text := _text(address)) is not None:
        standard["address"] = text
    phone = _text(traits.get("phone"))
    if phone:
        standard["phone_numbers"] = [phone]
    for name, value in traits.items():
        if name not in consumed and not isinstance(value, dict):
            custom[name] = value
    return standard, custom


@dataclass(slots=True)
class PageView:
    url: str | None
    path: str | None
    title: str | None
    referrer: str | None
    utm: dict[str, str]


def page_of(message: dict[str, Any]) -> PageView:
    """The page of a page/screen call: properties first, then `context.page`, then traits."""
    properties = _dict(message.get("properties"))
    context = _dict(message.get("context"))
    page = _dict(context.get("page"))
    traits = _dict(context.get("traits"))

    def pick(name: str) -> str | None:
        for source in (properties, page, traits):
            if (text := _text(source.get(name))) is not None:
                return text
        return None

    url = pick("url")
    utm: dict[str, str] = {}
    campaign = _dict(context.get("campaign"))
    for name in UTM_FIELDS:
        value = _text(campaign.get("name" if name == "campaign" else name))
        if value:
            utm[name] = value
    if url and not utm:
        query = parse_qs(urlsplit(url).query)
        for name in UTM_FIELDS:
            if query.get(f"utm_{name}"):
                utm[name] = query[f"utm_{name}"][0]
    path = pick("path") or (urlsplit(url).path if url else None)
    return PageView(url=url, path=path, title=pick("title"), referrer=pick("referrer"), utm=utm)

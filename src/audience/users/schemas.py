"""The user object (R-API-2, seed 003) and the body that writes it (same field names)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

from audience.schemas import Body, Pages, Timestamp, unix
from audience.users.models import User

Url = Annotated[str, Field(max_length=2048)]
Short = Annotated[str, Field(max_length=255)]


class AvatarIn(Body):
    type: Literal["avatar"] = "avatar"
    image_url: Url | None = None


class UserWrite(Body):
    """Fields a client may write. Omitted fields are left alone; `null` removes a value."""

    user_id: Short | None = None
    email: Short | None = None
    phone: Annotated[str, Field(max_length=64)] | None = None
    name: Annotated[str, Field(max_length=512)] | None = None
    first_name: Short | None = None
    last_name: Short | None = None
    gender: Literal["unknown", "male", "female"] | None = None
    status: Literal["visitor", "user"] | None = None
    city: Short | None = None
    region: Short | None = None
    country: Short | None = None
    postal_code: Annotated[str, Field(max_length=64)] | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    language: Annotated[str, Field(max_length=35)] | None = None
    google_url: Url | None = None
    linkedin_url: Url | None = None
    twitter_url: Url | None = None
    facebook_url: Url | None = None
    avatar_url: Url | None = None
    avatar: AvatarIn | None = None
    unsubscribed_from_emails: bool | None = None
    referrer: Url | None = None
    utm_source: Short | None = None
    utm_medium: Short | None = None
    utm_campaign: Short | None = None
    utm_term: Short | None = None
    utm_content: Short | None = None
    owner_id: Short | None = None
    web_push_subscription: dict[str, Any] | None = None
    fcm_key: Annotated[str, Field(max_length=4096)] | None = None
    signed_up_at: Timestamp | None = None
    last_request_at: Timestamp | None = None
    last_heard_from_at: Timestamp | None = None
    custom_attributes: dict[str, Any] | None = Field(
        None,
        description="Values, or one operation per attribute: "
        '{"$set"|"$set_once"|"$unset"|"$add"|"$union"|"$append"|"$remove": operand}.',
    )


class Ref(BaseModel):
    type: str
    id: str
    name: str | None = None


class CompanyRef(Ref):
    company_id: str


class UserObject(BaseModel):
    type: Literal["user", "contact"]
    id: str
    user_key: str
    user_id: str | None
    email: str | None
    phone: str | None
    phone_original: str | None
    name: str | None
    first_name: str | None
    last_name: str | None
    pseudonym: str | None
    anonymous: bool
    kind: Literal["anonymous", "identified"]
    contact: bool
    gender: str
    status: str
    created_at: int
    updated_at: int
    signed_up_at: int | None
    first_seen_at: int | None
    last_seen_at: int | None
    last_request_at: int | None
    last_heard_from_at: int | None
    session_count: int
    page_views: int
    unsubscribed_from_emails: bool
    referrer: str | None
    utm_source: str | None
    utm_medium: str | None
    utm_campaign: str | None
    utm_term: str | None
    utm_content: str | None
    first_utm_source: str | None
    first_utm_medium: str | None
    first_utm_campaign: str | None
    first_utm_term: str | None
    first_utm_content: str | None
    city: str | None
    region: str | None
    country: str | None
    postal_code: str | None
    timezone: str | None
    language: str | None
    browser: str | None
    browser_version: str | None
    os: str | None
    device: str | None
    google_url: str | None
    linkedin_url: str | None
    twitter_url: str | None
    facebook_url: str | None
    avatar_url: str | None
    owner_id: str | None
    web_push_subscription: dict[str, Any] | None
    fcm_key: str | None
    last_seen_ip: str | None
    user_agent_data: dict[str, Any] | None
    custom_attributes: dict[str, Any]
    avatar: dict[str, Any]
    location_data: dict[str, Any]
    social_profiles: dict[str, Any]
    companies: dict[str, Any]
    segments: dict[str, Any]
    tags: dict[str, Any]


class UserList(BaseModel):
    type: Literal["user.list"] = "user.list"
    total_count: int
    users: list[UserObject]
    pages: Pages


class AttributeChangeObject(BaseModel):
    type: Literal["attribute_change"] = "attribute_change"
    id: str
    attribute: str
    old_value: Any
    new_value: Any
    source: str
    source_ref: str | None
    changed_at: int


class AttributeChangeList(BaseModel):
    type: Literal["attribute_change.list"] = "attribute_change.list"
    total_count: int
    changes: list[AttributeChangeObject]
    pages: Pages


def is_identified(user: User) -> bool:
    return bool(user.user_id or user.email or user.phone)


def is_contact(user: User) -> bool:
    """The billable set (seed 000): any key a message can reach the person by."""
    return bool(
        is_identified(user) or user.web_push_subscription or user.last_heard_from_at or user.fcm_key
    )


_SOCIAL = (
    ("google", "google_url"),
    ("linkedin", "linkedin_url"),
    ("twitter", "twitter_url"),
    ("facebook", "facebook_url"),
)


def user_object(
    user: User,
    *,
    companies: list[CompanyRef],
    tags: list[Ref],
    segments: list[Ref],
    keep_tracking_data: bool = False,
) -> UserObject:
    identified = is_identified(user)
    socials = [
        {"type": "social_profile", "name": name, "url": url}
        for name, attribute in _SOCIAL
        if (url := getattr(user, attribute))
    ]
    browser_data = {
        "browser": user.browser,
        "browser_version": user.browser_version,
        "os": user.os,
        "device": user.device,
        "user_agent": user.user_agent,
    }
    return UserObject(
        type="user" if identified else "contact",
        id=str(user.id),
        user_key=user.user_key,
        user_id=user.user_id,
        email=user.email,
        phone=user.phone,
        phone_original=user.phone_original,
        name=user.name,
        first_name=user.first_name,
        last_name=user.last_name,
        pseudonym=user.pseudonym,
        anonymous=not identified,
        kind="identified" if identified else "anonymous",
        contact=is_contact(user),
        gender=user.gender,
        status=user.status,
        created_at=unix(user.created_at) or 0,
        updated_at=unix(user.updated_at) or 0,
        signed_up_at=unix(user.signed_up_at),
        first_seen_at=unix(user.first_seen_at),
        last_seen_at=unix(user.last_seen_at),
        last_request_at=unix(user.last_request_at),
        last_heard_from_at=unix(user.last_heard_from_at),
        session_count=user.session_count,
        page_views=user.page_views,
        unsubscribed_from_emails=user.unsubscribed_from_emails,
        referrer=user.referrer,
        utm_source=user.utm_source,
        utm_medium=user.utm_medium,
        utm_campaign=user.utm_campaign,
        utm_term=user.utm_term,
        utm_content=user.utm_content,
        first_utm_source=user.first_utm_source,
        first_utm_medium=user.first_utm_medium,
        first_utm_campaign=user.first_utm_campaign,
        first_utm_term=user.first_utm_term,
        first_utm_content=user.first_utm_content,
        city=user.city,
        region=user.region,
        country=user.country,
        postal_code=user.postal_code,
        timezone=user.timezone,
        language=user.language,
        browser=user.browser,
        browser_version=user.browser_version,
        os=user.os,
        device=user.device,
        google_url=user.google_url,
        linkedin_url=user.linkedin_url,
        twitter_url=user.twitter_url,
        facebook_url=user.facebook_url,
        avatar_url=user.avatar_url,
        owner_id=user.owner_id,
        web_push_subscription=user.web_push_subscription,
        fcm_key=user.fcm_key,
        # Intercom returns these as null to keep PII out of the API unless the environment opts in.
        last_seen_ip=user.last_seen_ip if keep_tracking_data else None,
        user_agent_data=browser_data if keep_tracking_data and user.user_agent else None,
        custom_attributes=user.custom_attributes or {},
        avatar={"type": "avatar", "image_url": user.avatar_url},
        location_data={
            "type": "location_data",
            "city_name": user.city,
            "continent_code": None,
            "country_code": None,
            "country_name": user.country,
            "latitude": None,
            "longitude": None,
            "postal_code": user.postal_code,
            "region_name": user.region,
            "timezone": user.timezone,
        },
        social_profiles={"type": "social_profile.list", "social_profiles": socials},
        companies={"type": "company.list", "companies": companies},
        segments={"type": "segment.list", "segments": segments},
        tags={"type": "tag.list", "tags": tags},
    )

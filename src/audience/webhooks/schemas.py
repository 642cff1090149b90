"""The webhook and webhook delivery objects, and the bodies that write webhooks."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import BaseModel, Field, model_validator

from audience.schemas import Body, Pages, unix
from audience.webhooks.models import WebhookDelivery, WebhookSubscription

Url = Annotated[str, Field(min_length=1, max_length=2048, description="http(s) URL to POST to.")]
Topics = Annotated[
    list[Annotated[str, Field(max_length=50)]],
    Field(min_length=1, max_length=20, description="Topics to receive (docs/webhooks.md)."),
]
Status = Literal["pending", "succeeded", "failed"]


class WebhookCreate(Body):
    url: Url
    topics: Topics
    active: bool = True


class WebhookUpdate(Body):
    url: Url | None = None
    topics: Topics | None = None
    active: bool | None = None

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} can't be null")
        return self


class RotateSecretIn(Body):
    keep_previous_hours: Annotated[
        int,
        Field(
            ge=0,
            le=168,
            description="Hours the old secret keeps signing beside the new one (0: stop now).",
        ),
    ] = 24


class WebhookObject(BaseModel):
    type: Literal["webhook"] = "webhook"
    id: str
    url: str
    topics: list[str]
    active: bool
    created_at: int
    updated_at: int
    previous_secret_expires_at: int | None


class WebhookWithSecret(WebhookObject):
    """Only in the answers to create and rotate-secret: the signing secret, shown this once."""

    secret: str


class WebhookList(BaseModel):
    type: Literal["webhook.list"] = "webhook.list"
    total_count: int
    webhooks: list[WebhookObject]
    pages: Pages


class DeliveryObject(BaseModel):
    type: Literal["webhook_delivery"] = "webhook_delivery"
    id: str
    webhook_id: str
    topic: str
    status: Status
    attempts: int
    payload: dict[str, Any]
    created_at: int
    next_attempt_at: int | None
    last_attempt_at: int | None
    last_status_code: int | None
    last_error: str | None
    last_response: str | None
    delivered_at: int | None


class DeliveryList(BaseModel):
    type: Literal["webhook_delivery.list"] = "webhook_delivery.list"
    total_count: int
    deliveries: list[DeliveryObject]
    pages: Pages


def webhook_object(subscription: WebhookSubscription) -> WebhookObject:
    return WebhookObject(
        id=str(subscription.id),
        url=subscription.url,
        topics=list(subscription.topics),
        active=subscription.active,
        created_at=unix(subscription.created_at) or 0,
        updated_at=unix(subscription.updated_at) or 0,
        previous_secret_expires_at=unix(subscription.previous_secret_expires_at),
    )


def webhook_with_secret(subscription: WebhookSubscription) -> WebhookWithSecret:
    shown = webhook_object(subscription).model_dump()
    return WebhookWithSecret(**shown, secret=subscription.secret)


def delivery_object(delivery: WebhookDelivery) -> DeliveryObject:
    return DeliveryObject(
        id=str(delivery.id),
        webhook_id=str(delivery.subscription_id),
        topic=delivery.topic,
        status=delivery.status,
        attempts=delivery.attempts,
        payload=delivery.payload,
        created_at=unix(delivery.created_at) or 0,
        next_attempt_at=unix(delivery.next_attempt_at),
        last_attempt_at=unix(delivery.last_attempt_at),
        last_status_code=delivery.last_status_code,
        last_error=delivery.last_error,
        last_response=delivery.last_response,
        delivered_at=unix(delivery.delivered_at),
    )

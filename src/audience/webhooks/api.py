"""/api/v1/webhooks: subscriptions, their delivery log, ping, retry and secret rotation."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request

from audience.auth import CurrentEnvironment, DbSession
from audience.config import Settings
from audience.db import TransactionRoute
from audience.pagination import Page, Pagination
from audience.schemas import Deleted, parse_id
from audience.webhooks import service
from audience.webhooks.schemas import (
    DeliveryList,
    DeliveryObject,
    RotateSecretIn,
    Status,
    WebhookCreate,
    WebhookList,
    WebhookObject,
    WebhookUpdate,
    WebhookWithSecret,
    delivery_object,
    webhook_object,
    webhook_with_secret,
)

router = APIRouter(tags=["webhooks"], route_class=TransactionRoute)


def _allow_private(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return settings.webhook_allow_private


AllowPrivate = Annotated[bool, Depends(_allow_private)]


def _webhook_id(id: str) -> int:
    return parse_id(id, "webhook")


def delivery_list(page: Page) -> DeliveryList:
    deliveries = [delivery_object(delivery) for delivery in page.items]
    return DeliveryList(total_count=page.total, deliveries=deliveries, pages=page.pages())


@router.post(
    "/webhooks",
    response_model=WebhookWithSecret,
    summary="Create a webhook (its signing secret is shown in this answer only)",
)
def create_webhook(
    body: WebhookCreate,
    environment: CurrentEnvironment,
    session: DbSession,
    allow_private: AllowPrivate,
) -> WebhookWithSecret:
    subscription = service.create_subscription(
        session,
        environment_id=environment.id,
        url=body.url,
        topics=body.topics,
        active=body.active,
        allow_private=allow_private,
    )
    return webhook_with_secret(subscription)


@router.get("/webhooks", response_model=WebhookList, summary="List webhooks")
def list_webhooks(
    environment: CurrentEnvironment, session: DbSession, pagination: Pagination
) -> WebhookList:
    page = service.list_subscriptions(session, environment_id=environment.id, params=pagination)
    webhooks = [webhook_object(subscription) for subscription in page.items]
    return WebhookList(total_count=page.total, webhooks=webhooks, pages=page.pages())


@router.get("/webhooks/{id}", response_model=WebhookObject, summary="Get a webhook")
def get_webhook(id: str, environment: CurrentEnvironment, session: DbSession) -> WebhookObject:
    subscription = service.get_subscription(
        session, environment_id=environment.id, id=_webhook_id(id)
    )
    return webhook_object(subscription)


@router.patch(
    "/webhooks/{id}", response_model=WebhookObject, summary="Change a webhook's url, topics, active"
)
def update_webhook(
    id: str,
    body: WebhookUpdate,
    environment: CurrentEnvironment,
    session: DbSession,
    allow_private: AllowPrivate,
) -> WebhookObject:
    subscription = service.update_subscription(
        session,
        environment_id=environment.id,
        id=_webhook_id(id),
        changes=body.model_dump(exclude_unset=True),
        allow_private=allow_private,
    )
    return webhook_object(subscription)


@router.delete(
    "/webhooks/{id}", response_model=Deleted, summary="Delete a webhook and its delivery log"
)
def delete_webhook(id: str, environment: CurrentEnvironment, session: DbSession) -> Deleted:
    service.delete_subscription(session, environment_id=environment.id, id=_webhook_id(id))
    return Deleted(id=id, object="webhook")


@router.post(
    "/webhooks/{id}/rotate-secret",
    response_model=WebhookWithSecret,
    summary="Replace the signing secret (the old one keeps signing for a while)",
)
def rotate_secret(
    id: str,
    environment: CurrentEnvironment,
    session: DbSession,
    body: RotateSecretIn | None = None,
) -> WebhookWithSecret:
    subscription = service.rotate_secret(
        session,
        environment_id=environment.id,
        id=_webhook_id(id),
        keep_previous_hours=(body or RotateSecretIn()).keep_previous_hours,
    )
    return webhook_with_secret(subscription)


@router.post("/webhooks/{id}/ping", response_model=DeliveryObject, summary="Queue a ping delivery")
def ping_webhook(id: str, environment: CurrentEnvironment, session: DbSession) -> DeliveryObject:
    delivery = service.ping(session, environment_id=environment.id, id=_webhook_id(id))
    return delivery_object(delivery)


@router.get(
    "/webhooks/{id}/deliveries",
    response_model=DeliveryList,
    summary="A webhook's delivery log, newest first",
)
def list_deliveries(
    id: str,
    environment: CurrentEnvironment,
    session: DbSession,
    pagination: Pagination,
    status: Annotated[Status | None, Query(description="Only deliveries in this state.")] = None,
) -> DeliveryList:
    page = service.list_deliveries(
        session,
        environment_id=environment.id,
        subscription_id=_webhook_id(id),
        status=status,
        params=pagination,
    )
    return delivery_list(page)


@router.get(
    "/webhook-deliveries/{id}", response_model=DeliveryObject, summary="Get a webhook delivery"
)
def get_delivery(id: str, environment: CurrentEnvironment, session: DbSession) -> DeliveryObject:
    delivery = service.get_delivery(
        session, environment_id=environment.id, id=parse_id(id, "webhook delivery")
    )
    return delivery_object(delivery)


@router.post(
    "/webhook-deliveries/{id}/retry",
    response_model=DeliveryObject,
    summary="Send a finished (failed or succeeded) delivery again",
)
def retry_delivery(id: str, environment: CurrentEnvironment, session: DbSession) -> DeliveryObject:
    delivery = service.retry_delivery(
        session, environment_id=environment.id, id=parse_id(id, "webhook delivery")
    )
    return delivery_object(delivery)

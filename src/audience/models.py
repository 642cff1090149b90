"""Imports every domain's models so that `Base.metadata` is complete (migrations, tests)."""

from audience.agents.models import Agent, AgentSession
from audience.attributes.models import AttributeDefinition
from audience.companies.models import Company, Membership
from audience.db import Base
from audience.environments.models import ApiKey, Environment
from audience.events.models import Event
from audience.ingest.models import FailedMessage, InboxMessage, ProcessedMessage
from audience.jobs.models import Job
from audience.lists.models import ListMember, UserList
from audience.segments.models import Segment, SegmentMembership
from audience.tags.models import CompanyTag, Tag, UserTag
from audience.users.models import AttributeChange, Identity, Merge, User
from audience.webhooks.models import WebhookDelivery, WebhookSubscription

__all__ = [
    "Agent",
    "AgentSession",
    "ApiKey",
    "AttributeChange",
    "AttributeDefinition",
    "Base",
    "Company",
    "CompanyTag",
    "Environment",
    "Event",
    "FailedMessage",
    "Identity",
    "InboxMessage",
    "Job",
    "ListMember",
    "Membership",
    "Merge",
    "ProcessedMessage",
    "Segment",
    "SegmentMembership",
    "Tag",
    "User",
    "UserList",
    "UserTag",
    "WebhookDelivery",
    "WebhookSubscription",
]

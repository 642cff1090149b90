"""The company object (Intercom's company model) and the bodies that write it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, Field

from audience.companies.models import Company
from audience.schemas import Body, Pages, Timestamp, unix

Short = Annotated[str, Field(max_length=255)]
CompanyId = Annotated[str, Field(min_length=1, max_length=255)]
PhoneNumber = Annotated[str, Field(min_length=1, max_length=64)]
# Integer column: a size beyond 32 bits would overflow PostgreSQL's INTEGER, so say so up front.
Size = Annotated[int, Field(strict=True, ge=0, le=2_147_483_647)]


def _storable(value: datetime) -> datetime:
    # 0001-01-01T00:00+01:00 parses, but can't be expressed in UTC: reject it here, not in the DB.
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("date-time out of range") from None


StoredTimestamp = Annotated[Timestamp, AfterValidator(_storable)]


class _CompanyFields(Body):
    """Fields a client may write. Omitted fields are left alone; `null` removes a value."""

    name: Short | None = None
    email: Short | None = None
    address: Annotated[str, Field(max_length=1024)] | None = None
    city: Short | None = None
    region: Short | None = None
    country: Short | None = None
    postal_code: Annotated[str, Field(max_length=64)] | None = None
    phone_numbers: Annotated[list[PhoneNumber], Field(max_length=20)] | None = None
    size: Size | None = Field(None, description="Number of employees.")
    description: Annotated[str, Field(max_length=65_535)] | None = None
    website: Annotated[str, Field(max_length=2048)] | None = None
    industry: Short | None = None
    plan: Short | None = None
    remote_created_at: StoredTimestamp | None = Field(
        None, description="When the company was created in your system (unix seconds or ISO 8601)."
    )
    custom_attributes: dict[str, Any] | None = Field(
        None,
        description="Values, or one operation per attribute: "
        '{"$set"|"$set_once"|"$unset"|"$add"|"$union"|"$append"|"$remove": operand}.',
    )


class CompanyCreate(_CompanyFields):
    company_id: CompanyId = Field(description="Your id for the company, unique per environment.")


class CompanyUpdate(_CompanyFields):
    company_id: CompanyId | None = Field(None, description="Rename the company's id (not null).")


class TagRef(BaseModel):
    type: Literal["tag"] = "tag"
    id: str
    name: str


class TagList(BaseModel):
    type: Literal["tag.list"] = "tag.list"
    tags: list[TagRef]


class CompanyObject(BaseModel):
    type: Literal["company"] = "company"
    id: str
    company_id: str
    name: str | None
    email: str | None
    address: str | None
    city: str | None
    region: str | None
    country: str | None
    postal_code: str | None
    phone_numbers: list[str]
    size: int | None
    description: str | None
    website: str | None
    industry: str | None
    plan: str | None
    remote_created_at: int | None
    created_at: int
    updated_at: int
    user_count: int
    custom_attributes: dict[str, Any]
    tags: TagList


class CompanyList(BaseModel):
    type: Literal["company.list"] = "company.list"
    total_count: int
    companies: list[CompanyObject]
    pages: Pages


def company_object(company: Company, *, user_count: int, tags: list[TagRef]) -> CompanyObject:
    return CompanyObject(
        id=str(company.id),
        company_id=company.company_id,
        name=company.name,
        email=company.email,
        address=company.address,
        city=company.city,
        region=company.region,
        country=company.country,
        postal_code=company.postal_code,
        phone_numbers=list(company.phone_numbers or []),
        size=company.size,
        description=company.description,
        website=company.website,
        industry=company.industry,
        plan=company.plan,
        remote_created_at=unix(company.remote_created_at),
        created_at=unix(company.created_at) or 0,
        updated_at=unix(company.updated_at) or 0,
        user_count=user_count,
        custom_attributes=company.custom_attributes or {},
        tags=TagList(tags=tags),
    )

"""Sign-in, People and the profile in Chromium against the real server."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect
from sqlalchemy import select

from audience.agents import service as agents
from audience.db import Database
from audience.environments.models import Environment
from audience.users.models import AttributeChange, User
from tests.browser.conftest import OWNER_EMAIL, Server, sign_in


def _create_user(server: Server, **fields: Any) -> dict[str, Any]:
    with server.api() as api:
        response = api.post("/users", json=fields)
        assert response.status_code == 200, response.text
        return dict(response.json())


def test_signed_out_visit_leads_to_sign_in_and_the_owner_signs_in_and_out(
    page: Page, server: Server
) -> None:
    page.goto(f"{server.url}/")
    assert page.url == f"{server.url}/login"
    sign_in(page, server)
    expect(page.locator("h1")).to_have_text("People")
    expect(page.locator(".who")).to_contain_text(OWNER_EMAIL)
    cookie = next(c for c in page.context.cookies() if c["name"] == "audience_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"

    page.click("text=Sign out")
    page.wait_for_url(f"{server.url}/login")
    page.goto(f"{server.url}/people")
    assert page.url == f"{server.url}/login"  # the session ended on the server, not only here


def test_a_wrong_password_is_told_on_the_form(page: Page, server: Server) -> None:
    page.goto(f"{server.url}/login")
    page.fill("input[name=email]", OWNER_EMAIL)
    page.fill("input[name=password]", "not the password")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("Wrong email or password.")
    expect(page.locator("input[name=email]")).to_have_value(OWNER_EMAIL)


def test_search_finds_people_by_email_and_shows_the_counts(page: Page, server: Server) -> None:
    _create_user(server, user_id="u-ann", email="ann@example.com", name="Ann Archer")
    _create_user(server, user_id="u-bob", email="bob@example.com", name="Bob Baker")
    sign_in(page, server)
    expect(page.locator(".counts")).to_contain_text("2 identified")
    page.fill("input[name=q]", "bob@")
    page.click("form.search button[type=submit]")
    rows = page.locator("table.grid tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Bob Baker")
    assert "q=bob%40" in page.url  # the search is in the URL, so it can be bookmarked


def test_clicking_a_column_sorts_by_it_both_ways(page: Page, server: Server) -> None:
    for name in ("Cleo", "Adam", "Bea"):
        _create_user(server, user_id=f"u-{name}", name=name)
    sign_in(page, server)
    page.click("th >> text=Name")
    names = page.locator("table.grid tbody tr td:first-child")
    expect(names).to_have_text(["Adam", "Bea", "Cleo"])
    page.click("th >> text=Name")
    expect(names).to_have_text(["Cleo", "Bea", "Adam"])


def test_a_filter_in_the_url_shows_the_matching_people(page: Page, server: Server) -> None:
    _create_user(server, user_id="u-1", name="Pro Pat", custom_attributes={"plan": "pro"})
    _create_user(server, user_id="u-2", name="Free Fay", custom_attributes={"plan": "free"})
    sign_in(page, server)
    page.click("summary")
    page.fill(
        "textarea[name=filter]",
        '{"field": "custom_attributes.plan", "op": "eq", "value": "pro"}',
    )
    page.click("form.search button[type=submit]")
    expect(page.locator("table.grid tbody tr")).to_have_count(1)
    expect(page.locator("table.grid tbody")).to_contain_text("Pro Pat")
    bookmarked = page.url
    page.goto(f"{server.url}/people")
    page.goto(bookmarked)
    expect(page.locator("table.grid tbody tr")).to_have_count(1)


def test_a_bad_filter_is_explained_next_to_the_field(page: Page, server: Server) -> None:
    sign_in(page, server)
    page.goto(f"{server.url}/people?filter=%7Bnope")
    expect(page.locator("#filter-error")).to_be_visible()
    expect(page.locator("#filter")).to_have_attribute("aria-invalid", "true")


def test_editing_a_custom_attribute_shows_in_the_profile_and_its_history(
    page: Page, server: Server, database: Database
) -> None:
    user = _create_user(server, user_id="u-edit", name="Edie", custom_attributes={"plan": "free"})
    sign_in(page, server)
    page.click("text=Edie")
    expect(page.locator("h1")).to_have_text("Edie")
    page.fill("#attribute", "plan")
    page.fill("#value", "pro")
    page.click("form.edit button[type=submit]")
    expect(page.locator(".attributes")).to_contain_text("pro")
    history = page.locator("#history tbody tr").first
    expect(history).to_contain_text("plan")
    expect(history).to_contain_text("agent")
    with database.transaction(write=False) as session:
        row = session.get(User, int(user["id"]))
        assert row is not None and row.custom_attributes == {"plan": "pro"}
        change = session.scalars(
            select(AttributeChange)
            .where(AttributeChange.user_id == row.id)
            .order_by(AttributeChange.id.desc())
        ).first()
        assert change is not None and (change.source, change.new_value) == ("agent", "pro")


def test_a_wrong_value_is_refused_next_to_the_field_and_changes_nothing(
    page: Page, server: Server, database: Database
) -> None:
    user = _create_user(server, user_id="u-bad", name="Val", email="val@example.com")
    sign_in(page, server)
    page.goto(f"{server.url}/people/{user['id']}")
    page.fill("#attribute", "email")
    page.fill("#value", "not an email")
    page.click("form.edit button[type=submit]")
    expect(page.locator("#value-error")).to_be_visible()
    with database.transaction(write=False) as session:
        row = session.get(User, int(user["id"]))
        assert row is not None and row.email == "val@example.com"


def test_untrusted_values_are_shown_as_text_and_never_run(page: Page, server: Server) -> None:
    payload = '<script>window.__pwned=1</script><img src=x onerror="window.__pwned=2">'
    user = _create_user(server, user_id="u-xss", name=payload, custom_attributes={"note": payload})
    with server.api() as api:
        response = api.post(
            f"/users/{user['id']}/events",
            json={"name": payload, "properties": {"html": payload}},
        )
        assert response.status_code == 200, response.text
    sign_in(page, server)
    expect(page.locator("table.grid tbody")).to_contain_text("<script>window.__pwned=1</script>")
    page.goto(f"{server.url}/people/{user['id']}")
    expect(page.locator("h1")).to_contain_text("<script>")
    expect(page.locator("#timeline")).to_contain_text("onerror=")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main img[src=x]").count() == 0
    assert page.dialogs == []  # type: ignore[attr-defined]


def test_a_read_only_agent_sees_no_edit_form_and_a_forced_post_changes_nothing(
    page: Page, server: Server, database: Database
) -> None:
    user = _create_user(server, user_id="u-ro", name="Rita", custom_attributes={"plan": "free"})
    with database.transaction() as session:
        agents.create_agent(
            session,
            email="reader@example.com",
            name="Reader",
            password="reader-pass-1",
            role="read-only",
        )
    sign_in(page, server, "reader@example.com", "reader-pass-1")
    page.goto(f"{server.url}/people/{user['id']}")
    expect(page.locator("form.edit")).to_have_count(0)
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    response = page.request.post(
        f"{server.url}/people/{user['id']}/attributes",
        form={"csrf_token": csrf or "", "attribute": "plan", "value": "pro"},
    )
    assert response.status == 403
    with database.transaction(write=False) as session:
        row = session.get(User, int(user["id"]))
        assert row is not None and row.custom_attributes == {"plan": "free"}


def test_a_forged_or_missing_csrf_token_is_403_and_changes_nothing(
    page: Page, server: Server, database: Database
) -> None:
    user = _create_user(server, user_id="u-csrf", name="Cass", custom_attributes={"plan": "free"})
    sign_in(page, server)
    target = f"{server.url}/people/{user['id']}/attributes"
    forged = page.request.post(
        target, form={"csrf_token": "forged", "attribute": "plan", "value": "x"}
    )
    missing = page.request.post(target, form={"attribute": "plan", "value": "x"})
    assert (forged.status, missing.status) == (403, 403)
    with database.transaction(write=False) as session:
        row = session.get(User, int(user["id"]))
        assert row is not None and row.custom_attributes == {"plan": "free"}


def test_a_user_of_another_environment_is_not_found(
    page: Page, server: Server, database: Database
) -> None:
    with database.transaction() as session:
        staging = session.scalars(select(Environment).where(Environment.slug == "staging")).one()
        other = User(environment_id=staging.id, user_key="k" * 16, user_id="u-staging")
        session.add(other)
        session.flush()
        other_id = other.id
    sign_in(page, server)
    response = page.goto(f"{server.url}/people/{other_id}")
    assert response is not None and response.status == 404
    expect(page.locator("h1")).to_have_text("Not found")

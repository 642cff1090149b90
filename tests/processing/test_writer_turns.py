"""SQLite's one writer is shared in turns: the processor lets waiting requests write first."""

from __future__ import annotations

import threading

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from audience.db import Database, WriterTurns
from audience.events.models import Event
from audience.ingest.processor import Processor
from tests.conftest import Tenant
from tests.ingest.helpers import batch, inbox_rows, track


def test_the_processor_waits_for_a_queued_request() -> None:
    turns = WriterTurns(patience=30)
    order: list[str] = []
    turns.queue()  # a request is waiting for the writer

    def processor() -> None:
        with turns.processor_turn():
            order.append("processor")

    worker = threading.Thread(target=processor)
    worker.start()
    turns.acquire()
    order.append("request")
    turns.release()
    worker.join(timeout=30)
    assert order == ["request", "processor"]


def test_the_processor_takes_its_turn_when_no_request_waits() -> None:
    turns = WriterTurns(patience=30)
    with turns.processor_turn():
        taken = True
    assert taken
    turns.queue()
    turns.acquire()  # the writer is free again: a request gets it
    turns.release()


def _processor_gets_its_turn(turns: WriterTurns) -> bool:
    done = threading.Event()

    def processor() -> None:
        with turns.processor_turn():
            done.set()

    worker = threading.Thread(target=processor)
    worker.start()
    got_it = done.wait(timeout=10)  # well within the patience of the tests that count on it
    worker.join()
    return got_it


def test_a_request_that_never_comes_holds_the_processor_only_for_its_patience() -> None:
    turns = WriterTurns(patience=0.01)
    turns.queue()  # and never acquires
    assert _processor_gets_its_turn(turns)


def test_a_request_that_gives_up_stops_holding_the_processor_back() -> None:
    turns = WriterTurns(patience=30)
    turns.queue()
    turns.leave()
    assert _processor_gets_its_turn(turns)


def test_a_sqlite_batch_stops_early_for_a_waiting_request_and_leaves_the_rest(
    app: TestClient, database: Database, tenant: Tenant
) -> None:
    turns = database.writer_turns
    if turns is None:
        pytest.skip("PostgreSQL's writers don't wait for each other")
    messages = [track(userId=f"turns-{n}") for n in range(50)]
    assert batch(app, messages, token=tenant.app_token).status_code == 200
    turns.patience = 0.01
    turns.queue()  # a request waits for the writer (and never takes it here)
    assert Processor(database).run_once() == 20
    left = [row.message_id for row in inbox_rows(database)]
    assert left == [message["messageId"] for message in messages[20:]]
    turns.leave()
    assert Processor(database).drain() == 30
    with database.transaction(write=False) as session:
        stored = set(session.scalars(select(Event.message_id)))
    assert stored == {message["messageId"] for message in messages}

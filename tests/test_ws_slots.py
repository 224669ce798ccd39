"""Connection slots counted in MongoDB (``mdb_sync.realtime.slots``): the leases behind
``MDB_WEBSOCKET_LIMITS_SCOPE = "cluster"``. Each :class:`ConnectionSlots` stands for one
process (its own process id, leases and renewals); the websocket tests with real second
server processes are in ``test_ws_cluster_limits.py``, the faults (a killed web process, a
stopped database) in ``tests/faults/test_ws_limit_faults.py``."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from realtime_support import wait_for

from mdb_sync.exceptions import ConfigurationError
from mdb_sync.realtime.slots import SLOTS_COLLECTION, ConnectionSlots, Slot


@pytest.fixture
def processes(engine):
    made = []

    def make(ttl=15.0):
        slots = ConnectionSlots(engine, ttl)
        made.append(slots)
        return slots

    yield make
    for slots in made:
        slots.stop()


def cid() -> str:
    return uuid.uuid4().hex


def test_a_limit_holds_across_processes_and_a_release_frees_a_slot(processes):
    one, two = processes(), processes()
    app = [Slot("app", "", 3)]
    first, second, third = cid(), cid(), cid()
    assert one.reserve("chat", first, app) is None
    assert two.reserve("chat", second, app) is None
    assert one.reserve("chat", third, app) is None
    refused = two.reserve("chat", cid(), app)
    assert refused == Slot("app", "", 3)
    assert one.reserve("shop", cid(), app) is None  # another app counts on its own
    two.release(second)
    assert two.reserve("chat", cid(), app) is None
    assert one.held == 3 and two.held == 1


def test_a_connection_needing_several_slots_gives_back_what_it_took(processes, raw_db):
    one, two = processes(), processes()
    user = Slot("user", "ada", 5)
    app = Slot("app", "", 1)
    assert one.reserve("chat", cid(), [Slot("user", "bob", 5), app]) is None
    assert two.reserve("chat", cid(), [user, app]) == app  # the app is full
    doc = raw_db[SLOTS_COLLECTION].find_one({"_id": "chat:user:ada"})
    assert doc["leases"] == [] and doc["app_id"] == "chat"  # ada's lease was given back
    assert two.held == 0


def test_concurrent_reservations_never_exceed_the_limit(processes):
    """Twelve connections race for five slots from two processes: exactly five get one
    (a single document's update is atomic, so the last slot goes to one of them only)."""
    one, two = processes(), processes()
    admitted = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def connect(slots):
        connection = cid()
        start.wait()
        if slots.reserve("chat", connection, [Slot("app", "", 5)]) is None:
            with lock:
                admitted.append(connection)

    threads = [threading.Thread(target=connect, args=(one if i % 2 else two,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(admitted) == 5
    assert one.held + two.held == 5


def test_a_dead_process_slots_free_after_the_ttl_and_renewals_keep_the_living(processes):
    living, dying, newcomer = processes(ttl=1.5), processes(ttl=1.5), processes(ttl=1.5)
    app = [Slot("app", "", 2)]
    assert living.reserve("chat", cid(), app) is None
    assert dying.reserve("chat", cid(), app) is None
    dying.stop()  # what a SIGKILL leaves: leases nobody renews or releases
    assert newcomer.reserve("chat", cid(), app) == app[0]
    started = time.monotonic()
    wait_for(lambda: newcomer.reserve("chat", cid(), app) is None, timeout=10, what="a slot")
    waited = time.monotonic() - started
    assert waited < 1.5 + 1.0  # the dead lease stopped counting after its ttl
    # The living process renewed its lease meanwhile (every ttl/3): still counted.
    assert living.renewals >= 1
    assert newcomer.reserve("chat", cid(), app) == app[0]


def test_leases_dropped_during_an_outage_are_restored(processes, raw_db):
    """A process that could not renew for longer than the ttl finds its leases dropped by
    others' reservations; its next renewal puts back those of its live connections, so they
    count again."""
    away, other = processes(ttl=1.0), processes(ttl=1.0)
    mine = cid()
    assert away.reserve("chat", mine, [Slot("app", "", 2)]) is None
    away.stop()  # no renewals: as while the database was unreachable from it
    time.sleep(1.3)
    assert other.reserve("chat", cid(), [Slot("app", "", 2)]) is None  # drops the lapsed one
    leases = raw_db[SLOTS_COLLECTION].find_one({"_id": "chat:app:"})["leases"]
    assert mine not in [lease["c"] for lease in leases]
    away.renew()  # reachable again
    leases = raw_db[SLOTS_COLLECTION].find_one({"_id": "chat:app:"})["leases"]
    assert mine in [lease["c"] for lease in leases]
    assert other.reserve("chat", cid(), [Slot("app", "", 2)]) == Slot("app", "", 2)


def test_a_bad_ttl_is_refused(engine):
    for ttl in (0, 0.5, "15", True):
        with pytest.raises(ConfigurationError, match="ttl"):
            ConnectionSlots(engine, ttl)

"""Which input offsets may be committed (app/job/offsets.py): a partition's settled prefix, never
past a message still waiting, each partition on its own, forgotten partitions never committed."""
from app.job.offsets import Offsets

A, B = ("tracking-events", 0), ("tracking-events", 1)


def test_a_partition_commits_its_settled_prefix_and_never_past_a_message_still_open():
    offsets = Offsets()
    t = [offsets.ticket(A, o) for o in (10, 11, 12, 13)]
    t[1].hold()  # 11 has an event on its way
    for k in t:
        k.settle()  # every poll's write is durable
    assert offsets.committable() == {A: 11}  # 10 done; 11 still open, so 12 and 13 wait behind it
    offsets.committed({A: 11})
    assert offsets.committable() == {}  # nothing new
    assert offsets.holding() == 3
    t[1].settle()
    assert offsets.committable() == {A: 14}
    assert offsets.holding() == 0


def test_partitions_are_independent_and_an_unsettled_write_holds_its_message():
    offsets = Offsets()
    a, b = offsets.ticket(A, 5), offsets.ticket(B, 7)
    b.settle()
    assert offsets.committable() == {B: 8}  # A's write is not durable yet
    offsets.committed({B: 8})
    a.hold().settle()
    assert offsets.committable() == {}  # its event was handed over: still open
    a.settle()
    assert offsets.committable() == {A: 6}


def test_a_forgotten_partition_is_never_committed_from_its_old_tickets():
    offsets = Offsets()
    old = offsets.ticket(A, 3)
    offsets.forget([A])  # revoked: its next owner re-reads from the last commit
    old.settle()  # a delivery that finished after the rebalance
    assert offsets.committable() == {}
    fresh = offsets.ticket(A, 3)  # assigned again: read again from the committed offset
    fresh.settle()
    assert offsets.committable() == {A: 4}


def test_an_offset_stays_due_until_the_broker_took_its_commit():
    # A commit refused (the broker away) is carried by the next one, even when the partition
    # reads nothing more: otherwise a restart would re-read what was already sent.
    offsets = Offsets()
    offsets.ticket(A, 7).settle()
    assert offsets.committable() == {A: 8}
    assert offsets.committable() == {A: 8}  # not taken yet: still due
    offsets.committed({A: 8})
    assert offsets.committable() == {}
    offsets.ticket(A, 8).settle()
    due = offsets.committable()
    offsets.ticket(A, 9).settle()
    offsets.committed(due)  # the commit of 9 was taken while 10 became committable: 10 stays due
    assert offsets.committable() == {A: 10}

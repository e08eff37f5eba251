"""The chat store in-process against the real embedded database: the message layout at its
boundaries (the log, the buckets and the one-document-per-message history of the earlier
layouts), the seq allocator (a poster that dies after its seq was handed out loses
nothing), the upgrade from the earlier layouts, and the FerretDB patch the layout's speed
and the allocator's atomicity rest on (patches/ferretdb.patch)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pymongo
import pytest
from pymongo import ReturnDocument

from chat_service import room_directory, store
from service_kit.problems import Problem
from tests.lib import harness
from tests.lib.accounts import unique_name
from tests.lib.fast import fresh_database_uri
from tools.loadtest import store_figures

pytestmark = [pytest.mark.fast, pytest.mark.local]


@pytest.fixture(scope="module")
def app(module_apps, database):
    return module_apps.chat(fresh_database_uri(database, "chatsys_store_test"))


@pytest.fixture
def db(app):
    with app.app_context():
        yield store.database.db()


def new_room(db) -> dict:
    room = store.create_room(unique_name("r"))
    assert room is not None
    return room


def post(room: dict, count: int, key_prefix: str | None = None) -> list[int]:
    seqs = []
    for number in range(count):
        key = f"{key_prefix}{number}" if key_prefix else None
        posted = store.post_message(room["_id"], "alice", f"m{number}", key)
        assert posted is not None
        seqs.append(store.seq_of(posted.message))
    return seqs


def seqs_of(messages: list[dict]) -> list[int]:
    return [store.seq_of(message) for message in messages]


def test_message_ids_sort_as_their_seqs():
    ids = [store.message_id("r", seq) for seq in (1, 9, 10, 99, 100, 10**11)]
    assert ids == sorted(ids)
    assert store.seq_of({"_id": store.message_id("a-b_c", 42)}) == 42


def test_posts_number_one_to_n_and_advance_the_allocator(db):
    room = new_room(db)
    assert post(room, 5) == [1, 2, 3, 4, 5]
    assert store.find_room(room["_id"])["allocated"] == 5


def earlier_layout(db, room: dict, hint: int) -> None:
    """Make `room` a room of the layout before the allocator: a `last_seq` hint, no
    allocator (its messages one document each, see seed_messages)."""
    db.rooms.update_one(
        {"_id": room["_id"]},
        {"$set": {"last_seq": hint}, "$unset": {"allocated": "", "log_base": "", "bucket_base": "", "log": ""}},
    )


def seed_messages(db, room: dict, count: int, allocator: bool = True) -> None:
    """Give `room` the history of the earlier layouts: messages 1..count, one document
    each; with `allocator`, the allocator past them and no buckets yet."""
    if count:
        db.messages.insert_many(
            [
                {"_id": store.message_id(room["_id"], s), "author": "a", "text": f"t{s}", "created_at": store.utcnow()}
                for s in range(1, count + 1)
            ]
        )
    if allocator:
        db.rooms.update_one(
            {"_id": room["_id"]},
            {"$set": {"allocated": count, "log_base": count + 1, "log": []}, "$unset": {"bucket_base": ""}},
        )


def hand_out_seq(db, room: dict, text: str, claim: dict | None = None) -> int:
    """What a poster that dies right after its seq was handed out leaves: the log entry,
    no message (and, with a key, a claim that never learnt its seq)."""
    entry = {"author": "alice", "text": text, "created_at": store.utcnow(), "owner": "died"}
    if claim is not None:
        db.idempotency_keys.insert_one({**claim, "owner": "died", "seqs": [], "created_at": store.utcnow()})
        entry["idem"] = claim["_id"]
    allocated = db.rooms.find_one_and_update(
        {"_id": room["_id"]},
        {"$inc": {"allocated": 1}, "$push": {"log": store._encode(entry)}},
        return_document=ReturnDocument.AFTER,
    )
    return allocated["allocated"]


@pytest.mark.parametrize(
    "after, limit, expected",
    [
        (0, 50, list(range(1, 8))),  # fewer than the limit
        (0, 3, [1, 2, 3]),
        (5, 50, [6, 7]),
        (7, 50, []),  # nothing after the newest
        (100, 50, []),  # past the newest
        (0, 1, [1]),
        (6, 1, [7]),
    ],
)
def test_read_after_returns_the_run_after_the_given_seq(db, after, limit, expected):
    room = new_room(db)
    post(room, 7)
    assert seqs_of(store.read_after(room["_id"], after, limit)) == expected


@pytest.mark.parametrize("count", [15, 16, 17, 32, 33])
def test_read_after_crosses_the_first_window(db, count):
    room = new_room(db)
    post(room, count)
    assert seqs_of(store.read_after(room["_id"], 0, 50)) == list(range(1, count + 1))
    assert seqs_of(store.read_after(room["_id"], 0, 16)) == list(range(1, min(count, 16) + 1))


def test_read_after_stops_at_a_seq_it_cannot_read(db):
    """The safety net: a follower never steps over a seq it has not seen."""
    room = new_room(db)
    post(room, 2 * store.BUCKET_SIZE + 3)
    db.message_buckets.delete_one({"_id": store.bucket_id(room["_id"], store.BUCKET_SIZE + 1)})
    assert seqs_of(store.read_after(room["_id"], 1, 50)) == list(range(2, store.BUCKET_SIZE + 1))


def test_a_message_whose_poster_died_once_its_seq_was_handed_out_is_stored(db):
    """The seq and the message are one update: a poster that dies after it loses nothing,
    and the message moves to its bucket like any other."""
    room = new_room(db)
    post(room, 2)
    died = hand_out_seq(db, room, "left in the log")
    post(room, 2)
    messages = store.read_after(room["_id"], 0, 50)
    assert seqs_of(messages) == [1, 2, 3, 4, 5] and died == 3
    assert messages[2]["text"] == "left in the log"
    post(room, store.BUCKET_SIZE)
    assert store.read_after(room["_id"], 2, 1)[0]["text"] == "left in the log"
    assert db.message_buckets.find_one({"_id": store.bucket_id(room["_id"], 3)}) is not None


def test_a_retry_finds_the_message_its_dead_first_attempt_left_in_the_log(db):
    room = new_room(db)
    claim = {"_id": f"{room['_id']}/alice/first-try"}
    died = hand_out_seq(db, room, "once", claim)
    repeat = store.post_message(room["_id"], "alice", "once", "first-try")
    assert not repeat.created and store.seq_of(repeat.message) == died
    assert seqs_of(store.read_after(room["_id"], 0, 50)) == [died]


def test_a_retry_finds_its_message_after_it_left_the_log(db):
    room = new_room(db)
    post(room, 2)
    first = store.post_message(room["_id"], "alice", "once", "moved-on")
    post(room, 2 * store.BUCKET_SIZE)
    assert db.rooms.find_one({"_id": room["_id"]})["log_base"] > store.seq_of(first.message)
    repeat = store.post_message(room["_id"], "alice", "once", "moved-on")
    assert not repeat.created and repeat.message["_id"] == first.message["_id"]


@pytest.mark.parametrize("dead_at", [1, store.BUCKET_SIZE, 2 * store.BUCKET_SIZE + 3])
def test_the_log_stays_short_and_gives_up_an_entry_only_once_its_bucket_is_stored(db, dead_at):
    """Whoever posts a bucket's last seq moves the complete buckets; a poster that died
    before its sweep leaves it to the next bucket's."""
    room = new_room(db)
    post(room, dead_at - 1)
    hand_out_seq(db, room, "dead poster")
    post(room, 5 * store.BUCKET_SIZE)
    state = db.rooms.find_one({"_id": room["_id"]})
    assert len(state["log"]) < store.BUCKET_SIZE and (state["log_base"] - 1) % store.BUCKET_SIZE == 0
    assert state["log_base"] + len(state["log"]) - 1 == state["allocated"] == dead_at + 5 * store.BUCKET_SIZE
    held = [
        b["first"] + offset
        for b in db.message_buckets.find({"_id": {"$regex": f"^{room['_id']}/"}})
        for offset in range(len(b["entries"]))
    ]
    assert sorted(held) == list(range(1, state["log_base"]))  # everything that left the log, once
    assert seqs_of(store.read_after(room["_id"], 0, 200)) == list(range(1, state["allocated"] + 1))


@pytest.mark.parametrize("count", [1, 15, 16, 17, 31, 32, 33, 50])
def test_every_page_is_exact_across_the_log_and_the_buckets(db, count):
    room = new_room(db)
    post(room, count)
    for after in range(0, count + 2):
        for limit in (1, 5, 16, 20, 200):
            expected = list(range(after + 1, min(count, after + limit) + 1))
            assert seqs_of(store.read_after(room["_id"], after, limit)) == expected, (after, limit)
    newest = store.read_newest(store.find_room(room["_id"]), 20)
    assert seqs_of(newest) == list(range(max(1, count - 19), count + 1))
    assert [m["text"] for m in store.read_after(room["_id"], 0, 200)] == [f"m{n}" for n in range(count)]


def test_a_reader_whose_idea_of_the_log_is_wrong_still_reads_the_page(db):
    """After the database was emptied (a test harness's reset), a process's hints of where
    the rooms' logs start are wrong in both directions."""
    room = new_room(db)
    post(room, 40)
    for hint in ((1000, 1000), (1, 1), (17, 1), (33, 900)):
        store._log_base_seen[room["_id"]] = hint
        assert seqs_of(store.read_after(room["_id"], 3, 30)) == list(range(4, 34)), hint
        store._log_base_seen[room["_id"]] = hint
        assert seqs_of(store.read_after(room["_id"], 35, 30)) == list(range(36, 41)), hint


def test_sweeps_that_race_store_each_message_once(db):
    room = new_room(db)
    post(room, store.BUCKET_SIZE - 1)
    hand_out_seq(db, room, "the bucket's last, whose poster both sweeps below stand in for")
    snapshot = db.rooms.find_one({"_id": room["_id"]})
    store._move_buckets(snapshot)
    store._move_buckets(snapshot)  # a second sweep of the same state changes nothing
    post(room, store.BUCKET_SIZE + 3)
    state = db.rooms.find_one({"_id": room["_id"]})
    assert state["log_base"] == 2 * store.BUCKET_SIZE + 1 and len(state["log"]) == 3
    assert seqs_of(store.read_after(room["_id"], 0, 200)) == list(range(1, 2 * store.BUCKET_SIZE + 4))


def test_a_room_of_the_layout_before_the_buckets_keeps_its_history_and_gets_buckets(db):
    """Messages one document each up to 10, the log swept one at a time up to 13 (as servers
    of that layout did, also while it still ran beside this one), then buckets."""
    room = new_room(db)
    seed_messages(db, room, 13)
    db.rooms.update_one({"_id": room["_id"]}, {"$set": {"log_base": 14}})
    assert post(room, 3 * store.BUCKET_SIZE) == list(range(14, 14 + 3 * store.BUCKET_SIZE))
    state = db.rooms.find_one({"_id": room["_id"]})
    assert state["bucket_base"] == 14 and len(state["log"]) < store.BUCKET_SIZE
    messages = store.read_after(room["_id"], 0, 200)
    assert seqs_of(messages) == list(range(1, 14 + 3 * store.BUCKET_SIZE))
    assert messages[12]["text"] == "t13" and messages[13]["text"] == "m0"
    for after in (0, 10, 13, 15, 16, 17, 40):
        assert seqs_of(store.read_after(room["_id"], after, 20)) == list(range(after + 1, after + 21)), after


def test_posts_from_many_threads_get_every_seq_once_without_retries(db, app):
    """The allocator's `$inc` is atomic (on FerretDB through the patch): 6 threads, 40 posts
    each, give seqs 1..240, each handed out once."""
    room = new_room(db)
    seqs: list[int] = []

    def poster(number: int) -> None:
        with app.app_context():
            for index in range(40):
                posted = store.post_message(room["_id"], f"u{number}", f"{index}", f"k{index}")
                assert posted is not None
                seqs.append(store.seq_of(posted.message))

    threads = [threading.Thread(target=poster, args=(number,)) for number in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seqs) == list(range(1, 241))
    assert db.rooms.find_one({"_id": room["_id"]})["allocated"] == 240
    # Sweeps that raced may leave complete buckets in the log; the next sweep moves them.
    post(room, store.BUCKET_SIZE)
    assert len(db.rooms.find_one({"_id": room["_id"]})["log"]) < store.BUCKET_SIZE
    assert seqs_of(store.read_after(room["_id"], 0, 200)) == list(range(1, 201))


@pytest.mark.parametrize("allocator", [True, False])
def test_read_after_with_the_largest_limit_reads_a_whole_page(db, allocator):
    room = new_room(db)
    seed_messages(db, room, 450, allocator)
    if not allocator:
        earlier_layout(db, room, 450)
    assert seqs_of(store.read_after(room["_id"], 10, 200)) == list(range(11, 211))
    post(room, 230)
    assert seqs_of(store.read_after(room["_id"], 440, 200)) == list(range(441, 641))


@pytest.mark.parametrize("lag", [0, 1, 15, 16, 17, 49, 50, 51, 130])
def test_newest_and_room_list_are_exact_whatever_the_earlier_layouts_hint_lags(db, lag):
    room = new_room(db)
    seed_messages(db, room, 140, allocator=False)
    earlier_layout(db, room, 140 - lag)
    newest = store.read_newest(store.find_room(room["_id"]), 50)
    assert seqs_of(newest) == list(range(91, 141))
    assert {r["_id"]: r["last_seq"] for r in store.list_rooms()}[room["_id"]] == 140


def test_newest_of_an_empty_room_is_empty(db):
    room = new_room(db)
    assert store.read_newest(room, 50) == []
    assert store.newest_seq(room["_id"]) == 0


def test_a_room_of_the_earlier_layout_gets_its_allocator_after_its_newest_message(db):
    room = new_room(db)
    seed_messages(db, room, 70, allocator=False)
    earlier_layout(db, room, 3)
    assert post(room, 1) == [71]
    assert seqs_of(store.read_after(room["_id"], 0, 200)) == list(range(1, 72))
    assert {r["_id"]: r["last_seq"] for r in store.list_rooms()}[room["_id"]] == 71


def test_an_idempotency_key_repeat_finds_the_message(db):
    room = new_room(db)
    post(room, 10)
    first = store.post_message(room["_id"], "alice", "once", "key-1")
    repeat = store.post_message(room["_id"], "alice", "once", "key-1")
    assert first.created and not repeat.created
    assert repeat.message["_id"] == first.message["_id"] == store.message_id(room["_id"], 11)
    assert store.newest_seq(room["_id"]) == 11


def test_rooms_whose_names_share_a_prefix_keep_their_messages_apart(db):
    """`_id` = `<room>/<seq>`: "r" and "r-1" (and "r_1") must never see each other's."""
    base = new_room(db)
    others = [store.create_room(f"{base['_id']}{suffix}") for suffix in ("-1", "_1", "1")]
    post(base, 3)
    for number, other in enumerate(others, start=1):
        post(other, number)
    assert seqs_of(store.read_after(base["_id"], 0, 50)) == [1, 2, 3]
    assert {message["author"] for message in store.read_after(base["_id"], 0, 50)} == {"alice"}
    assert [store.newest_seq(other["_id"]) for other in others] == [1, 2, 3]
    assert store.newest_seq(base["_id"]) == 3


def test_a_seq_keeps_its_twelve_digits_up_to_the_largest():
    largest = 10**store.SEQ_DIGITS - 1
    assert store.message_id("r", largest) == "r/" + "9" * store.SEQ_DIGITS
    assert store.message_id("r", 1) == "r/" + "0" * (store.SEQ_DIGITS - 1) + "1"
    assert store.seq_of({"_id": store.message_id("r", largest)}) == largest


@pytest.mark.parametrize(
    "count",
    [0, 1, store.LOOKAHEAD - 1, store.LOOKAHEAD, store.LOOKAHEAD + 1, 2 * store.LOOKAHEAD, 2 * store.LOOKAHEAD + 1],
)
def test_the_newest_seq_is_exact_at_every_lookahead_window_edge(db, count):
    room = new_room(db)
    seed_messages(db, room, count, allocator=False)
    earlier_layout(db, room, 0)
    assert store.newest_seq(room["_id"]) == count
    assert store.newest_seq(room["_id"], known=count) == count
    if count:
        assert store.newest_seq(room["_id"], known=1) == count


@pytest.mark.parametrize("limit", [1, store.LOOKAHEAD - 1, store.LOOKAHEAD, store.LOOKAHEAD + 1, 50, 200])
def test_the_newest_page_has_the_last_messages_at_any_limit(db, limit):
    room = new_room(db)
    seed_messages(db, room, 230, allocator=False)
    for hint in (230, 230 - store.LOOKAHEAD, 3):  # exact, a window behind, far behind
        earlier_layout(db, room, hint)
        newest = store.read_newest(store.find_room(room["_id"]), limit)
        assert seqs_of(newest) == list(range(231 - limit, 231)), hint


def test_ids_past_one_query_are_read_in_batches(db):
    room = new_room(db)
    count = 2 * store.MAX_IDS_PER_QUERY + 1
    db.messages.insert_many(
        [
            {"_id": store.message_id(room["_id"], seq), "author": "a", "text": "t", "created_at": store.utcnow()}
            for seq in range(1, count + 1)
        ]
    )
    ids = [store.message_id(room["_id"], seq) for seq in range(1, count + 2)]  # and one that is not stored
    assert sorted(seqs_of(store._find_by_ids(ids))) == list(range(1, count + 1))
    earlier_layout(db, room, 0)
    assert store.newest_seq(room["_id"]) == count


def test_an_idempotency_key_belongs_to_its_room_and_author(db):
    room, other_room = new_room(db), new_room(db)
    first = store.post_message(room["_id"], "alice", "hi", "same-key")
    assert not store.post_message(room["_id"], "alice", "hi", "same-key").created
    by_bob = store.post_message(room["_id"], "bob", "hi", "same-key")
    elsewhere = store.post_message(other_room["_id"], "alice", "hi", "same-key")
    assert by_bob.created and elsewhere.created
    assert [store.seq_of(p.message) for p in (first, by_bob, elsewhere)] == [1, 2, 1]


def test_an_abandoned_claim_is_taken_over(db):
    """A claim with no message, older than CLAIM_ABANDONED, belongs to a request that died."""
    room = new_room(db)
    post(room, 2)
    db.idempotency_keys.insert_one(
        {
            "_id": f"{room['_id']}/alice/died",
            "owner": "a request that died",
            "seqs": [3],
            "created_at": store.utcnow() - store.CLAIM_ABANDONED,
        }
    )
    posted = store.post_message(room["_id"], "alice", "again", "died")
    assert posted.created and store.seq_of(posted.message) == 3
    assert not store.post_message(room["_id"], "alice", "again", "died").created


def test_a_repeat_waits_for_a_dead_first_attempt_to_be_abandoned_and_takes_its_key(db):
    """HAProxy resends a post whose server died between its claim and its allocation: the
    repeat waits until the claim is abandoned (it waits as long as that takes) and posts."""
    assert store.IN_FLIGHT_WAIT_SECONDS >= store.CLAIM_ABANDONED.total_seconds()
    assert store.CLAIM_ABANDONED.total_seconds() > store.ALLOCATION_DEADLINE_SECONDS
    room = new_room(db)
    nearly = store.utcnow() - store.CLAIM_ABANDONED + timedelta(seconds=0.5)
    db.idempotency_keys.insert_one({"_id": f"{room['_id']}/alice/resent", "owner": "died", "created_at": nearly})
    posted = store.post_message(room["_id"], "alice", "once", "resent")
    assert posted.created and store.seq_of(posted.message) == 1
    assert not store.post_message(room["_id"], "alice", "once", "resent").created


def test_a_claim_still_in_flight_answers_409_after_the_wait(db, monkeypatch):
    monkeypatch.setattr(store, "IN_FLIGHT_WAIT_SECONDS", 0.2)  # 5 s in service
    room = new_room(db)
    db.idempotency_keys.insert_one(
        {"_id": f"{room['_id']}/alice/busy", "owner": "another request", "seqs": [1], "created_at": store.utcnow()}
    )
    with pytest.raises(Problem) as refused:
        store.post_message(room["_id"], "alice", "hi", "busy")
    assert refused.value.status == 409 and refused.value.kind == "idempotency-key-in-use"
    assert store.newest_seq(room["_id"]) == 0


def test_a_key_older_than_the_window_stores_a_new_message(db):
    room = new_room(db)
    first = store.post_message(room["_id"], "alice", "hi", "old-key")
    db.idempotency_keys.update_one(
        {"_id": f"{room['_id']}/alice/old-key"}, {"$set": {"created_at": store.utcnow() - store.IDEMPOTENCY_WINDOW}}
    )
    again = store.post_message(room["_id"], "alice", "hi", "old-key")
    assert again.created and store.seq_of(again.message) == store.seq_of(first.message) + 1


def test_a_claim_of_the_earlier_layout_still_finds_its_message(db):
    """Claims once held their one seq in `seq`, not the list `seqs`."""
    room = new_room(db)
    seed_messages(db, room, 4)
    claim = f"{room['_id']}/alice/earlier"
    db.messages.insert_one(
        {
            "_id": store.message_id(room["_id"], 5),
            "author": "alice",
            "text": "then",
            "created_at": store.utcnow(),
            "idem": claim,
            "owner": "o1",
        }
    )
    db.rooms.update_one({"_id": room["_id"]}, {"$set": {"allocated": 5, "log_base": 6}})
    db.idempotency_keys.insert_one({"_id": claim, "owner": "o1", "seq": 5, "created_at": store.utcnow()})
    repeat = store.post_message(room["_id"], "alice", "then", "earlier")
    assert not repeat.created and store.seq_of(repeat.message) == 5


def test_a_message_under_another_owner_of_the_same_key_is_not_the_answer(db):
    """A claim finds only the message its own owner stored: one left by an earlier,
    removed claim of the same key does not count."""
    room = new_room(db)
    claim = f"{room['_id']}/alice/reused"
    db.messages.insert_one(
        {
            "_id": store.message_id(room["_id"], 1),
            "author": "alice",
            "text": "before",
            "created_at": store.utcnow(),
            "idem": claim,
            "owner": "gone",
        }
    )
    db.rooms.update_one({"_id": room["_id"]}, {"$set": {"allocated": 1, "log_base": 2, "bucket_base": 2}})
    db.idempotency_keys.insert_one(
        {"_id": claim, "owner": "current", "seqs": [1], "created_at": store.utcnow() - store.CLAIM_ABANDONED}
    )
    posted = store.post_message(room["_id"], "alice", "now", "reused")
    assert posted.created and store.seq_of(posted.message) == 2 and posted.message["text"] == "now"


def test_a_post_to_no_room_stores_nothing(db):
    name = unique_name("none")
    assert store.post_message(name, "alice", "hi", None) is None
    assert store.post_message(name, "alice", "hi", "key") is None
    assert db.idempotency_keys.find_one({"_id": f"{name}/alice/key"}) is None
    assert store.read_after(name, 0, 50) == []


def test_the_earlier_layout_is_moved_into_one_collection(db):
    room = new_room(db)
    for partition, seqs in ((0, range(1, 101)), (1, range(101, 131))):
        db[f"messages.{room['_id']}.{partition:06d}"].insert_many(
            [{"_id": seq, "author": "bob", "text": f"old {seq}", "created_at": store.utcnow()} for seq in seqs]
        )
    earlier_layout(db, room, 130)
    store.migrate_partitions()
    store.migrate_partitions()  # a second run (another worker) finds nothing to do
    assert not [name for name in db.list_collection_names() if name.startswith(f"messages.{room['_id']}.")]
    messages = store.read_after(room["_id"], 0, 200)
    assert seqs_of(messages) == list(range(1, 131))
    assert messages[99]["text"] == "old 100"
    assert post(room, 1) == [131]


def test_ferretdb_looks_messages_up_in_the_id_index(db):
    """The patch: lookups by _id, alone, with other conditions and as $in, use the index
    (SQLite's plan is a list of steps, PostgreSQL's a tree of nodes)."""
    post(new_room(db), 1)  # the collection exists: FerretDB explains no plan for one that does not
    filters = [{"_id": "x"}, {"_id": "x", "owner": "y"}, {"_id": {"$in": ["x", "y"]}}]
    for query in filters:
        plan = db.command("explain", {"find": "messages", "filter": query})["queryPlanner"]["Plan"]
        if isinstance(plan, list):
            assert any("USING INDEX" in step for step in plan), (query, plan)
        else:
            assert "Index Scan" in str(plan), (query, plan)


def test_ferretdb_increments_one_document_atomically(db):
    """The patch's lock: 8 threads x 100 `$inc`s, each answered with its own value."""
    counter = unique_name("counter")
    db.counters.insert_one({"_id": counter, "n": 0})
    seen: list[int] = []

    def increment() -> None:
        for _ in range(100):
            after = db.counters.find_one_and_update(
                {"_id": counter}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
            )
            seen.append(after["n"])

    threads = [threading.Thread(target=increment) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(seen) == list(range(1, 801))
    assert db.counters.find_one({"_id": counter})["n"] == 800


def test_ferretdb_still_applies_the_whole_filter_after_an_id_pushdown(db):
    room = new_room(db)
    seed_messages(db, room, 3)
    ids = [store.message_id(room["_id"], seq) for seq in (1, 2, 3)]
    assert len(list(db.messages.find({"_id": {"$in": ids}, "text": "t2"}))) == 1
    assert db.messages.find_one({"_id": ids[0], "text": "not it"}) is None
    assert db.messages.delete_one({"_id": ids[0], "author": "mallory"}).deleted_count == 0
    assert len(list(db.messages.find({"_id": {"$in": ids + [5, None]}}))) == 3  # not pushed down, still right


class _Commands(pymongo.monitoring.CommandListener):
    def __init__(self):
        self.names: list[str] = []

    def started(self, event):
        self.names.append(event.command_name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass


def test_list_rooms_costs_one_query_plus_one_per_id_batch(apps, database):
    """The review's 25,000 rooms made GET /rooms one query per room: 11-16 s. Now it is the
    room list and one `$in` per MAX_IDS_PER_QUERY rooms, bounded by MAX_ROOMS."""
    commands = _Commands()
    pymongo.monitoring.register(commands)  # for clients made from here on: this test's app
    app = apps.chat(fresh_database_uri(database, "chatsys_rooms_count"))
    with app.app_context():
        for count in (10, store.MAX_IDS_PER_QUERY, store.MAX_IDS_PER_QUERY + 1, 1000):
            have = len(store.list_rooms())
            store.database.db().rooms.insert_many(
                [{"_id": unique_name("many"), "created_at": store.utcnow(), "last_seq": 0} for _ in range(count - have)]
            )
            commands.names.clear()
            assert len(store.list_rooms()) == count
            queries = [name for name in commands.names if name in ("find", "aggregate", "count", "getMore")]
            batches = -(-count // store.MAX_IDS_PER_QUERY)
            assert queries.count("find") + queries.count("aggregate") <= 1 + batches, (count, commands.names)


def test_the_scale_reports_store_figures_count_one_seq_and_one_attempt_per_post(apps, database):
    """tools.loadtest.store_figures, the report's collision column: keyed posts from 4 threads
    in 2 rooms, and one claim of the earlier design that tried 3 seqs."""
    uri = fresh_database_uri(database, "chatsys_store_figures")
    app = apps.chat(uri)
    with app.app_context():
        rooms = [store.create_room(unique_name("f")) for _ in range(2)]

        def poster(number: int) -> None:
            with app.app_context():
                for index in range(10):
                    store.post_message(rooms[index % 2]["_id"], f"u{number}", f"{index}", f"k{index}")

        threads = [threading.Thread(target=poster, args=(number,)) for number in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        figures = store_figures.collect(uri)
        assert (figures["messages"], figures["seqs_handed_out"], figures["claims"]) == (40, 40, 40)
        assert figures["extra_attempts_per_post"] == 0 and figures["seqs_per_message"] == 1
        # A sweep between its two writes: a bucket stored, its entries still in the log.
        # Each message counts once.
        third = store.create_room(unique_name("f"))
        assert third is not None
        for index in range(5):
            store.post_message(third["_id"], "u", f"{index}", None)
        log = store.database.db().rooms.find_one({"_id": third["_id"]})["log"]
        store.database.db().message_buckets.insert_one(
            {"_id": store.bucket_id(third["_id"], 1), "first": 1, "entries": log}
        )
        figures = store_figures.collect(uri)
        assert (figures["messages"], figures["seqs_handed_out"]) == (45, 45)
        store.database.db().idempotency_keys.insert_one({"_id": "earlier", "seqs": [1, 2, 3]})
        assert store_figures.collect(uri)["extra_attempts_per_post"] == 2 / 41


class _Queries(pymongo.monitoring.CommandListener):
    """The queries a client sends, each with the number of documents it answered."""

    def __init__(self):
        self.sent: dict[int, dict] = {}
        self.answered: list[tuple[dict, int]] = []

    def started(self, event):
        if event.command_name in ("find", "aggregate", "count", "getMore"):
            self.sent[event.request_id] = dict(event.command)

    def succeeded(self, event):
        command = self.sent.pop(event.request_id, None)
        if command is not None:
            cursor = event.reply.get("cursor", {})
            self.answered.append((command, len(cursor.get("firstBatch", cursor.get("nextBatch", [])))))

    def failed(self, event):
        self.sent.pop(event.request_id, None)


def test_a_page_of_rooms_costs_lookups_by_id_whatever_the_number_of_rooms(apps, database):
    """At 10,000 rooms, `GET /rooms?limit=500&after=zzz` took 570-709 ms: the rooms after a
    name, sorted and limited, is a query the embedded FerretDB answers by reading and
    sorting every room. A page is now lookups by `_id` alone, which its explain says it
    pushes down to the `_id` index, and the documents they answer are the page's and a
    few of the room directory's, the same with 2,000 rooms as with 100 (a process reads
    every room's name once, on its first page)."""
    queries = _Queries()
    pymongo.monitoring.register(queries)  # for clients made from here on: this test's app
    app = apps.chat(fresh_database_uri(database, "chatsys_room_pages"))
    with app.app_context():
        db = store.database.db()
        store.list_rooms(None, 1)  # the process's first page reads every room's name
        names: list[str] = []
        for count in (100, 2000):
            names += [store.create_room(f"page-{number:05d}")["_id"] for number in range(len(names), count)]
            for after, limit, expected in [
                ("zzz", 500, []),
                (None, 10, ["lobby", *names[:9]]),
                (names[count // 2], 3, names[count // 2 + 1 : count // 2 + 4]),
                (names[-2], 500, names[-1:]),
            ]:
                queries.answered.clear()
                started = time.perf_counter()
                page = [room["_id"] for room in store.list_rooms(after, limit)]
                print(f"{count + 1} rooms, a page of {limit} after {after!r}: {time.perf_counter() - started:.3f} s")
                assert page == expected
                assert len(queries.answered) <= 3, queries.answered
                for command, _ in queries.answered:
                    assert "find" in command and "sort" not in command and "skip" not in command, command
                    explained = db.command({"explain": {"find": command["find"], "filter": command["filter"]}})
                    assert explained["filterPushdown"], command
                    assert not any("detail=SCAN" in line for line in explained["queryPlanner"]["Plan"]), explained
                returned = sum(documents for _, documents in queries.answered)
                assert returned <= limit + 2 * (room_directory.LOOKAHEAD + 1), queries.answered


def test_a_room_made_by_another_process_is_on_the_next_page(apps, database):
    uri = fresh_database_uri(database, "chatsys_room_pages_shared")
    one, other = apps.chat(uri), apps.chat(uri)
    with other.app_context():
        assert [room["_id"] for room in store.list_rooms(None, 10)] == ["lobby"]
    with one.app_context():
        made = [store.create_room(name)["_id"] for name in ("b-room", "a-room")]
    with other.app_context():
        assert [room["_id"] for room in store.list_rooms(None, 10)] == sorted(["lobby", *made])
        assert [room["_id"] for room in store.list_rooms("a-room", 1)] == ["b-room"]


def test_a_page_skips_names_whose_room_was_never_made(apps, database):
    """A name is logged before its room is inserted: a creator that failed in between
    leaves a name without a room, which no page shows and which does not shorten a page."""
    app = apps.chat(fresh_database_uri(database, "chatsys_room_pages_failed"))
    with app.app_context():
        room_directory.record("a-failed", 5)
        room_directory.record("b-failed", 5)
        for name in ("c-room", "d-room"):
            store.create_room(name)
        assert [room["_id"] for room in store.list_rooms(None, 2)] == ["c-room", "d-room"]
        assert [room["_id"] for room in store.list_rooms(None, 3)] == ["c-room", "d-room", "lobby"]
        assert store.create_room("a-failed") is not None  # the name is free to take


def test_a_page_after_the_database_was_emptied_reads_it_again(apps, database):
    uri = fresh_database_uri(database, "chatsys_room_pages_emptied")
    app = apps.chat(uri)
    with app.app_context():
        for name in ("x-room", "y-room"):
            store.create_room(name)
        assert [room["_id"] for room in store.list_rooms("w", 10)] == ["x-room", "y-room"]
        db = store.database.db()
        for collection in ("rooms", "room_directory"):
            db[collection].delete_many({})
        store.create_room("z-room")
        assert [room["_id"] for room in store.list_rooms("w", 10)] == ["z-room"]


def test_the_rooms_budget_of_a_window_is_never_overspent_and_renews(apps, database):
    """MAX_ROOMS is a budget per window: racing takers keep no more than the limit, one
    that gives back frees its share, and the next window has the whole budget again."""
    app = apps.chat(fresh_database_uri(database, "chatsys_room_budget"))
    taken: list[str] = []
    refused: list[int] = []

    def take() -> None:
        with app.app_context():
            try:
                taken.append(store.take_from_budget("rooms", 5, 3600))
            except store.BudgetSpent as spent:
                refused.append(spent.retry_after)

    threads = [threading.Thread(target=take) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(taken) == 5 and len(refused) == 11 and all(0 < wait <= 3600 for wait in refused)
    with app.app_context():
        store.give_back(taken[0])
        assert store.take_from_budget("rooms", 5, 3600) == taken[0]
        with pytest.raises(store.BudgetSpent):
            store.take_from_budget("rooms", 5, 3600)
        # A window of a second: the next one has the whole budget again.
        first = store.take_from_budget("short", 1, 1)
        harness.wait_until(lambda: _takes(app, "short") not in (None, first), 5, "the next window's budget")


def _takes(app, name: str) -> str | None:
    """The counter a take from the budget `name` (1 per second) got, or None when spent."""
    with app.app_context():
        try:
            return store.take_from_budget(name, 1, 1)
        except store.BudgetSpent:
            return None

"""The emulator's lookup index kept up to date call by call: after imports, updates, batches, seeds and
``custom`` lookups it holds exactly what an index built afresh from the stored profiles holds, and every
lookup finds what a scan of the profiles finds.

In process (`Emulator.call`): the index is state no HTTP answer shows whole.
"""

from __future__ import annotations

from typing import Any

from altcraft.emulator.state import (
    DEFAULT_TOKEN,
    Database,
    Emulator,
    _index_keys,
    demo_seed,
    norm_email,
)

TAGGED = {
    "id": 1,
    "fields": [{"name": "CRM_ID"}, {"name": "LOYALTY", "type": "int"}, {"name": "T", "type": "tags"}],
}


def _call(emulator: Emulator, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    return emulator.call(endpoint, body, DEFAULT_TOKEN, "request")


def _rebuilt(db: Database) -> dict[tuple[Any, ...], set[str]]:
    """The index of ``db`` built afresh: every key of every stored profile (a field's values only once a
    ``custom`` lookup asked for that field)."""
    index: dict[tuple[Any, ...], set[str]] = {}
    for profile in db.profiles.values():
        for key in _index_keys(db, profile):
            if key[0] != "field" or key[1] in db.indexed_fields:
                index.setdefault(key, set()).add(profile.id)
    return index


def _held(db: Database) -> dict[tuple[Any, ...], set[str]]:
    return {key: {ids} if isinstance(ids, str) else set(ids) for key, ids in db.index.items()}


def _custom(emulator: Emulator, name: str, value: Any) -> list[str]:
    """Ids of the profiles ``custom`` matching finds (as the batch endpoints look them up)."""
    db = emulator.databases[1]
    spec = emulator._spec(db, {"matching": "custom", "field_name": name})
    return sorted(emulator._find(db, spec, {"field_value": value}))


def _scan(emulator: Emulator, name: str, value: Any) -> list[str]:
    found = []
    for profile in emulator.databases[1].profiles.values():
        stored = profile.fields.get(name)
        if stored == value or (isinstance(stored, list) and value in stored):
            found.append(profile.id)
    return sorted(found)


def _import(emulator: Emulator, email: str, **fields: Any) -> str:
    body = {"db_id": 1, "email": email, "data": fields}
    return _call(emulator, "profiles/import", body)["profile_id"]


def test_the_index_after_every_kind_of_change_is_the_index_built_afresh():
    emulator = Emulator(demo_seed(), token=DEFAULT_TOKEN)
    emulator.apply_seed({"databases": [TAGGED]})
    first = _import(emulator, "a@example.org", CRM_ID="A-1", LOYALTY=1, T="x,y", phones=["+79000000001"])
    _import(emulator, "b@example.org", CRM_ID="B-1", LOYALTY=1, T=["y"])
    assert emulator.databases[1].indexed_fields == set()
    assert _custom(emulator, "LOYALTY", 1) == _scan(emulator, "LOYALTY", 1)  # indexed now, both found
    assert len(_custom(emulator, "LOYALTY", 1)) == 2
    assert _custom(emulator, "T", "y") == _scan(emulator, "T", "y")
    assert _held(emulator.databases[1]) == _rebuilt(emulator.databases[1])

    assert _import(emulator, "A@example.org", LOYALTY=2, T="z") == first  # an update moves it
    batch = {
        "workflow_id": 12,
        "data": [
            {"email": f"c{n}@example.org", "data": {"LOYALTY": n % 3, "CRM_ID": f"C-{n}"}} for n in range(50)
        ],
    }
    assert not any(r["error"] for r in _call(emulator, "workflows/import_and_start_batch", batch)["result"])
    emulator.apply_seed(
        {
            "databases": [TAGGED],  # replaces the database, keeping its profiles and index
            "profiles": [{"id": first, "db_id": 1, "fields": {"email": "a@example.org", "LOYALTY": 7}}],
        }
    )
    db = emulator.databases[1]
    assert db.indexed_fields == {"LOYALTY", "T"}
    assert _held(db) == _rebuilt(db)
    for name, value in [
        ("LOYALTY", 1),
        ("LOYALTY", 2),
        ("LOYALTY", 7),
        ("T", "y"),
        ("T", "z"),
        ("CRM_ID", "C-7"),
    ]:
        assert _custom(emulator, name, value) == _scan(emulator, name, value), (name, value)
    assert _custom(emulator, "LOYALTY", 7) == [first]
    assert db.indexed_fields == {"LOYALTY", "T", "CRM_ID"}
    assert _held(db) == _rebuilt(db)
    assert db.lookup(("email", norm_email("A@example.org"))) == {first}


def test_a_key_many_profiles_share_finds_them_all_and_then_the_one_left():
    emulator = Emulator(demo_seed(), token=DEFAULT_TOKEN)
    ids = [_import(emulator, f"p{n}@example.org", CRM_ID="shared") for n in range(3)]
    assert _custom(emulator, "CRM_ID", "shared") == sorted(ids)
    for profile_id in ids[1:]:
        body = {"db_id": 1, "matching": "profile_id", "profile_id": profile_id, "data": {"CRM_ID": "own"}}
        _call(emulator, "profiles/import", body)
    assert _custom(emulator, "CRM_ID", "shared") == [ids[0]]
    assert _custom(emulator, "CRM_ID", "own") == sorted(ids[1:])
    assert _held(emulator.databases[1]) == _rebuilt(emulator.databases[1])

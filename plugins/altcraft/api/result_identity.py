"""Whether a batch's per-contact results may be read by position: each the answer for the contact sent there.

The developer guide shows one per-profile result, that of "Add multiple profiles"
(https://guides.altcraft.com/en/developer-guide/profiles/2195496): 'Server response will contain "result"
parameter with occurring errors and profile IDs', entries ``{"error": 0, "error_text": "Successful
operation", "profile_id": "663a138cee44bb50a67115cd"}``. In what we could read of "Import multiple
profiles" (profiles/2195504) and the scenario batch pages (automation-scenarios/33063492, 33063493, RU the
same) there is no response example, and no page says the list follows the request's order, nor documents an
item id of the request's that an answer would echo. So results are read by position, and wherever a result
does carry what identifies the item it answers, it must name the contact sent at its position:

* the matching value(s) of the request (``email``, ``phone``, ``field_value``, ``provider`` +
  ``subscription_id``; ``profile_id`` under ``profile_id`` matching, where the documented ``profile_id`` of
  a result *is* the matching value);
* an ``index`` (undocumented): 0- or 1-based, the same for every result.

A result that names another contact means the list may be in another order: none of it may settle anyone
(a refused contact read as launched is never sent; a launched one read as refused is sent twice). Under any
other matching a result names nothing but a ``profile_id`` we do not know beforehand; then only the order
speaks, which ``python -m altcraft probe`` checks on a real account (docs/api-conformance.md).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import cache
from itertools import islice
from typing import Any

from altcraft.api.matching import MatchingMode
from altcraft.masking import MAX_KNOWN_VALUES, MAX_REQUEST_VALUES, contact_like
from altcraft.validation import email_identity, number_key

#: A result's own position, where a server gives one (no page documents it).
INDEX = "index"

#: The matching value(s) of the contact at one position: name → value as sent.
Identity = Mapping[str, Any]
_MODES = frozenset(mode.value for mode in MatchingMode)


def misattributed(
    matching: MatchingMode | str, sent: int, identity: Callable[[int], Identity], results: Any
) -> str | None:
    """Why ``results`` may not answer the ``sent`` contacts, position by position; None when nothing says so.

    ``identity(n)``: the matching values of the n-th contact sent, asked only for a result that carries
    one of ``matching``'s keys or an index. Entries that are not objects, and a count that differs from
    ``sent``, are left to the caller. The reason names positions and key names, never a value (contact
    data).
    """
    if not isinstance(results, list):
        return None
    watched = (INDEX, *MatchingMode(matching).key_fields)
    base: int | None = None
    for position, result in enumerate(results[:sent]):
        if type(result) is not dict or result.keys().isdisjoint(watched):
            continue  # the documented {"error", "error_text", "profile_id"}: it names nobody we know
        if INDEX in result:
            index = result[INDEX]
            offset = index - position if type(index) is int else None
            base = offset if base is None else base
            if offset is None or offset != base or base not in (0, 1):
                return f"result {position + 1} gives index {_shown(index)}: not the contact sent there"
        for name, ours in identity(position).items():
            theirs = result.get(name)
            if theirs not in (None, "") and not _same(name, ours, theirs):
                return f"result {position + 1} names another contact ({name}) than the one sent there"
    return None


def keys_misattributed(keys: Sequence[str], results: Any) -> str | None:
    """`misattributed` for the contacts sent given by their ledger keys (``<matching>:<value(s)>``, all of
    one matching mode)."""
    mode = keys[0].partition(":")[0] if keys else ""
    if mode not in _MODES:
        return None
    return misattributed(mode, len(keys), lambda n: key_identity(keys[n]), results)


def items_misattributed(items: Sequence[Any], matching: MatchingMode | str, results: Any) -> str | None:
    """`misattributed` for the contacts sent given by the request's own items (`item_identity`)."""
    return misattributed(matching, len(items), lambda n: item_identity(items[n], matching), results)


def key_identity(ledger_key: str) -> Identity:
    """The matching values of a ledger key (``email:anna@example.org``, ``email_phone:a@b.org|+7900…``,
    ``custom:A-1``); ``profile_id`` only under ``profile_id`` matching (any other result's profile id is
    not a value we sent)."""
    mode, _, rest = ledger_key.partition(":")
    if mode not in _MODES:
        return {}
    names = MatchingMode(mode).key_fields
    parts = rest.split("|", len(names) - 1) if len(names) > 1 else [rest]
    return {name: part for name, part in zip(names, parts, strict=False) if part}


def contact_values(keys: Sequence[str], data: Any = None) -> tuple[str, ...]:
    """What a text about the one contact of a request (``keys``: its ledger keys) may quote of it: its
    matching values (`key_identity`) but a push provider's name, and the emails and phones it was sent with
    in ``data`` (its fields, any layout: `data_values`), at most `MAX_KNOWN_VALUES` in all, for
    `altcraft.masking.mask_values`; none for a request of several contacts (`request_values`)."""
    if len(keys) != 1:
        return ()
    own = [value for name, value in key_identity(keys[0]).items() if name != "provider"]
    return tuple(islice(dict.fromkeys([*own, *data_values(data)]), MAX_KNOWN_VALUES))


def request_values(keys: Sequence[str], items: Iterable[Any] = ()) -> list[str]:
    """What a text about a whole request of several contacts (a batch refused, an Altcraft task failed) may
    quote of any of them: each contact's `contact_values`, from its ledger key (``keys``) and its batch item
    (``items``: the request's ``data`` array, any layout), at most `MAX_REQUEST_VALUES` in all."""
    values: dict[str, None] = {}
    for key in keys:
        values.update(dict.fromkeys(contact_values([key])))
    for item in items:
        values.update(dict.fromkeys(data_values(item)))
        if len(values) >= MAX_REQUEST_VALUES:
            break
    return list(islice(values, MAX_REQUEST_VALUES))


def data_values(data: Any) -> list[str]:
    """The emails and phones (`contact_like`) among the values of a contact's data: its fields, a batch item
    of any layout (fields nested in objects and lists, up to `_DATA_DEPTH` deep), at most
    `MAX_KNOWN_VALUES`; whatever field carries them (a field of type ``email`` or ``phone``, or any other)."""
    found: list[str] = []
    stack = [(data, 0)]
    while stack and len(found) < MAX_KNOWN_VALUES:
        value, depth = stack.pop()
        if isinstance(value, dict | list | tuple):
            if depth < _DATA_DEPTH:
                inner = value.values() if isinstance(value, dict) else value
                stack.extend((item, depth + 1) for item in islice(inner, _DATA_ITEMS))
        elif (text := contact_like(value)) is not None:
            found.append(text)
    return found


def texts_about(
    keys: Sequence[str], body: Mapping[str, Any], raw_data: bytes | None = None
) -> tuple[tuple[str, ...], Callable[[], list[str]] | None]:
    """What the texts of the answer to a request (``body``, its ``data`` array encoded apart in ``raw_data``)
    about the contacts of ``keys`` may quote, for `altcraft.api.protocol.parse_response`: ``known``, the
    lone contact's values (`contact_values`, its data included), masked in every text of the answer; and
    ``about``, for a request of several contacts, what reads all their values (`request_values`), read only
    when the answer is an error (a text about the whole request). A request without ``keys`` (a hook's
    method called directly: ``profiles/import``, ``profiles/import_batch``) is about the profile of its
    ``email``, ``phone`` and ``data`` fields, or the items of its ``data`` array."""
    if not keys and raw_data is None and not isinstance(body.get("data"), list):
        own = [value for name in ("email", "phone") if (value := contact_like(body.get(name))) is not None]
        return tuple(islice(dict.fromkeys([*own, *data_values(body.get("data"))]), MAX_KNOWN_VALUES)), None
    if len(keys) == 1:
        return contact_values(keys, _data(body, raw_data)), None

    @cache
    def about() -> list[str]:  # read once, whatever the retries
        data = _data(body, raw_data)
        return request_values(keys, data if isinstance(data, list) else [])

    return (), about


def _data(body: Mapping[str, Any], raw_data: bytes | None) -> Any:
    """A request's ``data``: its own, or decoded from ``raw_data`` (None when it cannot be)."""
    if raw_data is None:
        return body.get("data")
    try:
        return json.loads(raw_data)
    except ValueError:
        return None


#: How deep `data_values` looks into a contact's data (a nested item's ``data``, a list field's items).
_DATA_DEPTH = 3
#: How many entries of one object or list of a contact's data `data_values` looks at.
_DATA_ITEMS = 200


def item_identity(item: Any, matching: MatchingMode | str) -> Identity:
    """The matching values a batch item carries at its top level (where a flat ``profiles/import_batch``
    item and a hedged or nested scenario item have them, see `altcraft.api.layouts`)."""
    if not isinstance(item, dict):
        return {}
    return {
        name: item[name] for name in MatchingMode(matching).key_fields if item.get(name) not in (None, "")
    }


def _same(name: str, ours: Any, theirs: Any) -> bool:
    """Whether a result's value of key ``name`` is the one sent (an address in any case or IDN form, a phone
    in any punctuation)."""
    if name == "email":
        return isinstance(theirs, str) and email_identity(theirs).lower() == email_identity(str(ours)).lower()
    if name == "phone":
        return _digits(theirs) == _digits(ours) != ""
    return _text(theirs) == _text(ours)


def _text(value: Any) -> str:
    """A matching value as its key writes it: a number in its one form (a float field's ``1.0`` echoed for
    the key ``custom:1``, `number_key`), anything else as text."""
    number = number_key(value)
    return str(value) if number is None else number


def _digits(value: Any) -> str:
    return "".join(ch for ch in str(value) if ch.isdigit())


def _shown(index: Any) -> str:
    """An index as a reason shows it: a number, else only its kind."""
    return str(index) if type(index) is int else type(index).__name__

"""Chunks profiles into batch requests by item count and encoded size, encoding each profile once.

`chunk` encodes every profile's batch item exactly once and keeps the encoded items with the chunk;
`Chunk.body` joins them into the JSON array without re-encoding, and the hook splices that array into
the request body (``raw_data``, see :func:`altcraft.api.protocol.encode_body`). A profile that could
never fit a request is yielded as a `Rejection` in the same stream (``field="<profile>"``), so callers
handle one ordered stream of `Chunk | Rejection`::

    for item in chunk(profiles, overhead_bytes=request_overhead(params)):
        if isinstance(item, Rejection):
            reject(item)
        else:
            hook.import_and_start_batch(request, raw_data=item.body)
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from altcraft.mapping import PROFILE, Profile, Rejection, encode_json

MAX_BATCH_ITEMS = 10_000
"""Profiles per batch request the Altcraft docs advise not to exceed."""
DEFAULT_MAX_REQUEST_BYTES = 9_500_000
"""Request body limit we keep to: just under Altcraft's default 10 MB."""


@dataclass(slots=True, frozen=True)
class Chunk:
    """Profiles for one request and, in the same order, their encoded batch items."""

    profiles: list[Profile]
    items: list[bytes]

    @property
    def body(self) -> bytes:
        """The JSON array of the batch items (UTF-8), the request's ``raw_data``."""
        return _array(self.items)

    @property
    def encoded_bytes(self) -> int:
        """Size of `body`."""
        return sum(map(len, self.items)) + max(len(self.items) - 1, 0) + 2


def encode_item(profile: Profile) -> bytes:
    """`profile.batch_item()` as compact UTF-8 JSON (encoded once: the mapper's bytes are reused)."""
    return profile.encoded or encode_json(profile.batch_item())


def _array(items: list[bytes]) -> bytes:
    return b"[" + b",".join(items) + b"]"


def request_overhead(params: Mapping[str, Any], *, token: str | None = None) -> int:
    """Bytes of the request body besides the profile array: the `overhead_bytes` to pass to `chunk`."""
    from altcraft.api.protocol import encode_body

    return len(encode_body(params, token=token, raw_data=b""))


def chunk(
    profiles: Iterable[Profile],
    *,
    max_items: int = MAX_BATCH_ITEMS,
    max_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
    overhead_bytes: int = 0,
) -> Generator[Chunk | Rejection, None, None]:
    """Stream `profiles` as chunks of at most `max_items` whose request (overhead + array) fits `max_bytes`.

    Yields a `Rejection` for each profile too large for any request; keeps only one chunk in memory.
    """
    if max_items < 1:
        raise ValueError("max_items must be at least 1")
    budget = max_bytes - overhead_bytes - 2  # the array's brackets
    if budget < 1:
        raise ValueError(f"overhead_bytes ({overhead_bytes}) leaves no room below max_bytes ({max_bytes})")
    batch: list[Profile] = []
    encoded: list[bytes] = []
    size = 0  # items plus separating commas
    for profile in profiles:
        item = encode_item(profile)
        if len(item) > budget:
            yield Rejection(
                profile.source_key, PROFILE, f"encoded profile is {len(item)} bytes, above the request limit"
            )
            continue
        if batch and (len(batch) == max_items or size + 1 + len(item) > budget):
            yield Chunk(batch, encoded)
            batch, encoded, size = [], [], 0
        size += len(item) + (1 if batch else 0)
        batch.append(profile)
        encoded.append(item)
    if batch:
        yield Chunk(batch, encoded)

"""The API server prepares the Altcraft page when it starts serving (plugin root middleware)."""

from __future__ import annotations

import asyncio
import threading

from altcraft.ui.plugin import AltcraftUIPlugin


def test_the_middleware_prepares_the_page_in_the_background_and_passes_every_call_on():
    from altcraft.ui import app as ui

    ui.ledger_engine.cache_clear()
    seen: list[str] = []

    async def server(scope, receive, send) -> None:
        await asyncio.sleep(0)
        seen.append(scope["type"])

    (entry,) = AltcraftUIPlugin.fastapi_root_middlewares
    middleware = entry["middleware"](server)  # what Starlette does when it builds the middleware stack
    (preparing,) = [t for t in threading.enumerate() if t.name == "altcraft-ui-prepare"]
    preparing.join(timeout=120)
    assert not preparing.is_alive()
    assert ui.ledger_engine().pool.checkedin() == 1, "the ledger's connection is open and pooled"
    asyncio.run(middleware({"type": "lifespan"}, None, None))
    asyncio.run(middleware({"type": "http"}, None, None))
    assert seen == ["lifespan", "http"]

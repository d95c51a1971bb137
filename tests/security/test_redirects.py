"""Defect 1: API calls never follow redirects; the token never reaches another host."""

from __future__ import annotations

import pytest
from hostile_server import TOKEN, http_answer, run_async

from altcraft.api.errors import AltcraftDeliveryUncertain, AltcraftRedirected
from altcraft.api.models import BatchLaunchRequest
from altcraft.hooks.altcraft import AltcraftHook
from tests.async_calls import launch_batch, read_scenario

REDIRECTS = (301, 302, 303, 307, 308)
SUCCESS = {"error": 0, "error_text": "", "result": [{"error": 0, "profile_id": "p1"}], "data": []}


def _batch() -> BatchLaunchRequest:
    return BatchLaunchRequest(workflow_id=12, matching="email", data=[{"email": "a@example.org", "data": {}}])


@pytest.fixture
def redirecting(serve):
    def start(status: int):
        elsewhere = serve(lambda seen: http_answer(200, SUCCESS), connect=False)
        origin = serve(lambda seen: http_answer(status, b"", {"Location": elsewhere.url + seen.path}))
        return origin, elsewhere

    return start


@pytest.mark.parametrize("status", REDIRECTS)
def test_redirect_is_never_followed_and_the_token_stays_home(redirecting, status):
    origin, elsewhere = redirecting(status)
    hook = AltcraftHook()
    with pytest.raises(AltcraftDeliveryUncertain) as launch:
        hook.import_and_start_batch(_batch(), keys=["email:a@example.org"])
    with pytest.raises(AltcraftRedirected) as read:
        hook.get_scenario(12)
    hook.close()
    assert launch.value.keys == ["email:a@example.org"]
    assert isinstance(launch.value.cause, AltcraftRedirected)
    assert read.value.http_status == status and not read.value.retryable
    assert len(origin.seen) == 2, "a redirect is not retried"
    assert elsewhere.seen == [], "nothing, and so no token, went to the other host"
    assert TOKEN not in str(launch.value) + str(read.value)


@pytest.mark.parametrize("status", (302, 307))
def test_redirect_is_never_followed_by_the_async_hook(redirecting, status):
    origin, elsewhere = redirecting(status)
    with pytest.raises(AltcraftDeliveryUncertain):
        run_async(lambda hook: launch_batch(hook, _batch(), keys=["email:a@example.org"]))
    with pytest.raises(AltcraftRedirected):
        run_async(lambda hook: read_scenario(hook, 12))
    assert len(origin.seen) == 2
    assert elsewhere.seen == []


@pytest.mark.parametrize("status", (302, 307))
def test_rest_source_never_follows_a_redirect_with_the_crm_credentials(serve, monkeypatch, status):
    from altcraft.sources import RestSource, SourceError

    elsewhere = serve(lambda seen: http_answer(200, {"items": [{"id": 1}]}), connect=False)
    crm = serve(lambda seen: http_answer(status, b"", {"Location": elsewhere.url + "/v1/x"}), connect=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_HOSTILE_CRM",
        f'{{"conn_type": "http", "host": "{crm.url}", "extra": {{"X-Api-Key": "{TOKEN}"}}}}',
    )
    with pytest.raises(SourceError, match=f"HTTP {status} redirect .* not followed") as failure:
        list(RestSource("hostile_crm", "v1/contacts", key_column="id", record_path="items").batches(None, 10))
    assert crm.seen[0].headers.get("x-api-key") == TOKEN
    assert elsewhere.seen == []
    assert TOKEN not in str(failure.value)


@pytest.mark.parametrize("location", (f"http://{TOKEN}.example.net/x", f"{TOKEN}://example.net/x"))
def test_a_redirect_naming_the_token_as_its_host_does_not_quote_it(serve, location):
    """The message names the target's scheme and host, which URL parsing lower-cases: the token is removed
    in any letter case."""
    serve(lambda seen: http_answer(302, b"", {"Location": location}))
    hook = AltcraftHook()
    with pytest.raises(AltcraftRedirected) as read:
        hook.get_scenario(12)
    hook.close()
    assert "example.net" in str(read.value)
    assert TOKEN.lower() not in str(read.value).lower()

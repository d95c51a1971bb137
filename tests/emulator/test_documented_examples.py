"""The request examples of the public Altcraft developer guide, verbatim, replayed against the emulator.

Each body below is copied from the page named above it (only the token value is the emulator's; a part the
stored copy of a page cut off is marked). The documented outcome: error 0, the profiles imported with every
field sent, and the launch or trigger send done. Sources and findings: docs/api-conformance.md.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.emulator.helpers import ok

SEED: dict[str, Any] = {
    "databases": [
        {
            "id": 1,
            "name": "Customers",
            "fields": [
                {"name": "custom_id", "type": "string"},
                # the columns the public bash client's SQL exports besides standard fields
                {"name": "order_address", "type": "json"},
                {"name": "last_order", "type": "datetime"},
                {"name": "uzum_id", "type": "string"},
                {"name": "user_id", "type": "int"},
                {"name": "language", "type": "string"},
            ],
        }
    ],
    "scenarios": [
        {"id": 1, "db_id": 1, "is_active": True, "mode": "restart"},
        {"id": 3, "db_id": 1, "is_active": True, "mode": "restart"},
    ],
    "triggers": [{"id": 8, "db_id": 1}, {"id": 13, "db_id": 1}],
    "profiles": [
        {"id": "66acb337240d5213037986d8", "db_id": 1, "fields": {"email": "anna@example.org"}},
        {"db_id": 1, "fields": {"email": "example1@example.com"}},
        {"db_id": 1, "fields": {"email": "example2@example.com"}},
    ],
}


@pytest.fixture
def emulator(altcraft_emulator):
    altcraft_emulator.seed(**SEED)
    return altcraft_emulator


def _post(emulator, endpoint: str, documented: str) -> dict[str, Any]:
    body = json.loads(documented)
    body["token"] = emulator.token
    return ok(emulator.post(endpoint, body, token=None))


def _profile(emulator, profile_id: str) -> dict[str, Any]:
    [profile] = [p for p in emulator.profiles(1) if p["id"] == profile_id]
    return profile


def test_api_interaction_import_example_stores_every_field(emulator):
    # https://guides.altcraft.com/en/developer-guide/api-interaction ("Authorization")
    answer = _post(
        emulator,
        "profiles/import",
        """{
"token": "bfc505684d774e52b188fa1f003cd5ed",
"db_id": 1,
"resource_id": 1,
"matching": "email",
"email": "example@example.com",
"data": {
"_status": 0,
"_fname": "Jim",
"_lname": "Jones",
"email": "example@example.com",
"phones": ["+79000000000"]
}
}""",
    )
    fields = _profile(emulator, answer["profile_id"])["fields"]
    assert fields == {
        "_status": 0,
        "_fname": "Jim",
        "_lname": "Jones",
        "email": "example@example.com",
        "phones": ["+79000000000"],
    }


def test_import_batch_example_flat_items_with_email_data(emulator):
    # https://guides.altcraft.com/en/developer-guide/profiles/2195504 ("data" example; "matching" default)
    answer = _post(
        emulator,
        "profiles/import_batch",
        """{"token": "abcdefghijklmnqrstuvwxyz", "db_id": 1, "matching": "email", "data": [
    {
       "_fname": "John",
       "_lname": "Doe",
       "custom_id": "abcdefghijklmnqrstuvwxyz",
       "email": "john@example.com",
       "subscriptions": [
          {
              "channel": "email",
              "email_data": {
                  "email": "john@example.com"
              },
             "resource_id": 1
          }
       ]
    }
 ]}""",
    )
    [result] = answer["result"]
    profile = _profile(emulator, result["profile_id"])
    assert profile["fields"] == {
        "_fname": "John",
        "_lname": "Doe",
        "custom_id": "abcdefghijklmnqrstuvwxyz",
        "email": "john@example.com",
    }
    [sub] = profile["subscriptions"]
    assert sub["email_data"] == {"email": "john@example.com"} and sub["resource_id"] == 1


def test_get_profile_data_example_answers_in_the_documented_layout(emulator):
    # https://guides.altcraft.com/en/developer-guide/profiles/2195482 (request example; its answer, cut:
    # {"data": {…, "db_id": 24, "email": "example@example.org", "id": "5a61f87d69d42678a8dc6dd9",
    # "phones": ["+508370045348179"], "subscriptions": [{"channel": "email", "email_data": {"domain":
    # "example.org", "domain_group": "other", "email": "example_email@example.org", "md5": "…"},
    # "hash_id": "37885611", "is_delete": false, "priority": 0, …}]}})
    data = {
        "email": "example@example.com",
        "phones": ["+79000000000"],
        "subscriptions": [{"channel": "email", "email": "example@example.com", "resource_id": 1}],
    }
    imported = ok(
        emulator.post("profiles/import", {"db_id": 1, "email": "example@example.com", "data": data})
    )
    answer = _post(
        emulator,
        "profiles/get",
        """{
"token": "abcdefghijklmnqrstuvwxyz",
"db_id": 1,
"email": "example@example.com"
}""",
    )["data"]
    assert (answer["id"], answer["db_id"], answer["email"]) == (
        imported["profile_id"],
        1,
        "example@example.com",
    )
    assert answer["phones"] == ["+79000000000"]
    [sub] = answer["subscriptions"]
    assert (sub["channel"], sub["email_data"]["email"], sub["resource_id"]) == (
        "email",
        "example@example.com",
        1,
    )


def test_import_batch_flat_item_with_an_unknown_field_fails_alone_naming_it(emulator):
    answer = ok(
        emulator.post(
            "profiles/import_batch",
            {"db_id": 1, "data": [{"email": "a@example.org", "shoe_size": 42}, {"email": "b@example.org"}]},
        )
    )
    assert answer["result"][0] == {"error": 400, "error_text": "unknown field 'shoe_size' in database 1"}
    assert answer["result"][1]["error"] == 0
    assert [p["fields"] for p in emulator.profiles(1)][-1] == {"email": "b@example.org"}


def test_user_guide_workflows_start_example(emulator):
    # https://guides.altcraft.com/en/user-guide/api/api-scenario ("Creating a request")
    _post(
        emulator,
        "workflows/start",
        """{
"token": "abcdefghklmnopqrstzxc",
"id": 3,
"matching": "profile_id",
"profile_id": "66acb337240d5213037986d8"
}""",
    )
    [launch] = emulator.journal(3)
    assert launch["profile_id"] == "66acb337240d5213037986d8" and launch["entered"]


def test_import_and_start_example_subscription_without_channel(emulator):
    # https://guides.altcraft.com/en/developer-guide/automation-scenarios/28934227 ("Request example").
    # Our copy of the page stops at '"content": {"on'; the rest is the page's own "content" example and
    # its "workflow_id" example value.
    answer = _post(
        emulator,
        "workflows/import_and_start",
        """{
"token": "abcdefghkijlmnopqrstuv0123456789",
"data": {
"subscriptions": [{
"email": "example001@example.com",
"resource_id": 1
}]
},
"db_id": 1,
"matching": "email",
"email": "example001@example.com",
"content": {
"one": "My email = importStart9219@example.com",
"two": "Timestamp: 1595512477",
"three": "Three"
},
"workflow_id": 1
}""",
    )
    profile = _profile(emulator, answer["profile_id"])
    assert profile["fields"] == {"email": "example001@example.com"}
    assert profile["subscriptions"] == [
        {"email": "example001@example.com", "resource_id": 1, "channel": "email"}
    ]
    assert [launch["profile_id"] for launch in emulator.journal(1)] == [answer["profile_id"]]


def test_trigger_start_batch_example(emulator):
    # https://guides.altcraft.com/en/developer-guide/campaigns/trigger-campaigns/37847471
    answer = _post(
        emulator,
        "campaigns/triggers/start_batch",
        """{
"token": "abcdefghijklmnqrstuvwxyz",
"trigger_id": 8,
"format": "json",
"matching": "email",
"data": [
{"email": "example1@example.com"},
{"email": "example2@example.com"}
]
}""",
    )
    assert [r["error"] for r in answer["result"]] == [0, 0]
    assert {launch["key"] for launch in emulator.journal() if launch["trigger_id"] == 8} == {
        "example1@example.com",
        "example2@example.com",
    }


def test_trigger_import_and_start_batch_example_data_only_items(emulator):
    # https://guides.altcraft.com/en/developer-guide/campaigns/trigger-campaigns/37847473 ("data" example,
    # "trigger_id" example 13, "matching" default email: the key is only inside each item's "data")
    answer = _post(
        emulator,
        "campaigns/triggers/import_and_start_batch",
        """{"token": "abcdefghijklmnqrstuvwxyz", "trigger_id": 13, "data": [
   {
      "data": {
         "_fname": "John",
         "_lname": "Lambert",
         "email": "profile4@example.com",
         "phones": "+790000000000"
      }
   },
   {
      "data": {
         "_fname": "Tom",
         "_lname": "Hard",
         "email": "profile3@example.com",
         "phones": "+790000000001"
      }
   }
]}""",
    )
    first, second = (_profile(emulator, r["profile_id"])["fields"] for r in answer["result"])
    assert first == {
        "_fname": "John",
        "_lname": "Lambert",
        "email": "profile4@example.com",
        "phones": ["+790000000000"],
    }
    assert second["email"] == "profile3@example.com" and second["phones"] == ["+790000000001"]
    assert len([launch for launch in emulator.journal() if launch["trigger_id"] == 13]) == 2


# The public bash client (github.com/aalenkin-uzum/altcraft-profiles-import, send_profiles.sh) posts
#   body="{\"token\":\"$TOKEN\",\"db_id\":1,\"matching\":\"phone\",\"data\":$json_data}"
# where $json_data is the json_agg of its script_select.sql: flat rows, the phone only in "phones".
BASH_CLIENT_ROWS = """[
 {"_lname": "Karimova", "_fname": "Dilnoza", "_bdate": "1994-03-17", "email": "dilnoza@example.org",
  "_sex": 2, "order_address": [1021, 1187], "last_order": "2024-05-01T09:14:03.51",
  "phones": ["+998901234567"], "uzum_id": "u-77", "user_id": 4411, "language": "uz",
  "_regdate": "2023-11-02T18:00:00"},
 {"_fname": "Timur", "phones": ["+998907654321", "+998900000001"], "user_id": 4412, "_sex": 1}
]"""


def test_public_bash_client_body_stores_every_field(emulator):
    body = f'{{"token":"{emulator.token}","db_id":1,"matching":"phone","data":{BASH_CLIENT_ROWS}}}'
    answer = ok(emulator.post("profiles/import_batch", json.loads(body), token=None))
    first, second = (_profile(emulator, r["profile_id"])["fields"] for r in answer["result"])
    assert first == json.loads(BASH_CLIENT_ROWS)[0]
    assert second == {
        "_fname": "Timur",
        "phones": ["+998907654321", "+998900000001"],
        "user_id": 4412,
        "_sex": 1,
    }
    # sent again, the rows update the same profiles (found by the phone inside "phones")
    again = ok(emulator.post("profiles/import_batch", json.loads(body), token=None))
    assert [r["profile_id"] for r in again["result"]] == [r["profile_id"] for r in answer["result"]]
    assert len(emulator.profiles(1)) == 3 + 2

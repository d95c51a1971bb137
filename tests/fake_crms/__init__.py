"""Fake CRM accounts over real HTTP: amoCRM, Bitrix24 and HubSpot, each a small FastAPI app.

Each answers the requests our presets make in the shapes the CRM's documentation shows (field names
and envelopes copied from the docs' examples), with the CRM's page and result caps, its limit answer
(`FakeCrm.storm`) and its authentication. They live in the test suite, not in the package: they encode
our reading of three vendors' docs, which a user's CI should not mistake for the vendors.
"""

from tests.fake_crms.amocrm import FakeAmoCrm
from tests.fake_crms.bitrix24 import FakeBitrix24
from tests.fake_crms.hubspot import FakeHubSpot
from tests.fake_crms.server import FakeCrm, serving, without

__all__ = ["FakeAmoCrm", "FakeBitrix24", "FakeCrm", "FakeHubSpot", "serving", "without"]

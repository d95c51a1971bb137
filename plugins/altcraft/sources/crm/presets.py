"""The CRM presets by their ``source: {type: ...}`` name."""

from __future__ import annotations

from altcraft.sources.crm.amocrm import AmoCrmSpec
from altcraft.sources.crm.base import CrmSpec
from altcraft.sources.crm.bitrix24 import Bitrix24Spec
from altcraft.sources.crm.hubspot import HubSpotSpec

CRM_SPECS: dict[str, type[CrmSpec]] = {"amocrm": AmoCrmSpec, "bitrix24": Bitrix24Spec, "hubspot": HubSpotSpec}

"""CRM presets: amoCRM / Kommo, Bitrix24 and HubSpot contacts, polled or by webhook (docs/pipelines.md)."""

from altcraft.sources.crm.amocrm import AmoCrmSource, AmoCrmSpec
from altcraft.sources.crm.base import PRESET_MAPPING, CrmSource, CrmSpec, merge_mapping
from altcraft.sources.crm.bitrix24 import Bitrix24Source, Bitrix24Spec
from altcraft.sources.crm.hubspot import HubSpotSource, HubSpotSpec
from altcraft.sources.crm.presets import CRM_SPECS

__all__ = [
    "CRM_SPECS",
    "PRESET_MAPPING",
    "AmoCrmSource",
    "AmoCrmSpec",
    "Bitrix24Source",
    "Bitrix24Spec",
    "CrmSource",
    "CrmSpec",
    "HubSpotSource",
    "HubSpotSpec",
    "merge_mapping",
]

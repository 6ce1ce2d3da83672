"""Unisender API methods as the sandbox implements them, one module per API area.

Each method takes a :class:`Call` and returns the answer's ``result`` or raises :class:`ApiError`;
``METHODS`` maps the wire name (``importContacts``, ``async/exportContacts``...) to it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sandbox.unisender.methods import campaigns, contacts, export, fields, hooks, lists, tasks
from sandbox.unisender.methods.call import ApiError, Call
from sandbox.unisender.methods.import_contacts import import_contacts

__all__ = ["METHODS", "ApiError", "Call"]

METHODS: dict[str, Callable[[Call], Any]] = {
    "importContacts": import_contacts,
    "getContact": contacts.get_contact,
    "isContactInLists": contacts.is_contact_in_lists,
    "getContactCount": contacts.get_contact_count,
    "getTotalContactsCount": contacts.get_total_contacts_count,
    "subscribe": contacts.subscribe,
    "exclude": contacts.exclude,
    "unsubscribe": contacts.unsubscribe,
    "getLists": lists.get_lists,
    "createList": lists.create_list,
    "updateList": lists.update_list,
    "deleteList": lists.delete_list,
    "getFields": fields.get_fields,
    "createField": fields.create_field,
    "updateField": fields.update_field,
    "deleteField": fields.delete_field,
    "getTags": fields.get_tags,
    "deleteTag": fields.delete_tag,
    "setHook": hooks.set_hook,
    "removeHook": hooks.remove_hook,
    "exportContacts": export.export_contacts,
    "async/exportContacts": export.export_contacts_async,
    "async/getTaskResult": tasks.get_task_result,
    "getCampaigns": campaigns.get_campaigns,
    "getCampaignStatus": campaigns.get_campaign_status,
    "getCampaignCommonStats": campaigns.get_campaign_common_stats,
    "getCampaignDeliveryStats": campaigns.get_campaign_delivery_stats,
    "async/getCampaignDeliveryStats": campaigns.get_campaign_delivery_stats_async,
    "getVisitedLinks": campaigns.get_visited_links,
}

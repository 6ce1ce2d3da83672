"""The mapped account of the mapping engine's end-to-end test and of the benchmarks: a 10-field / 3-list sync
spec over the Kommo sandbox's seeded custom fields."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def field_ids(kacc: Any) -> dict[str, int]:
    """Kommo field name → id (the seed's custom fields among them)."""
    return {f.name: f.id for f in kacc.fields.values()}


def mapped_spec(
    base_list_id: int, ids: Mapping[str, int], *, segment: tuple[str, str] = ("VIP", "vip")
) -> dict[str, Any]:
    """Ten fields (a join, a phone, text, number, checkbox, select, multiselect, birthday, user) and three
    lists (everyone, one tag, any of two tags); ``segment`` = (list title, tag) of the one-tag list."""
    title, tag = segment
    return {
        "fields": [
            {"source": "name", "target": "Name"},
            {"source": ["first_name", "last_name"], "target": "FullName"},
            {"source": f"custom_field:{ids['Company']}", "target": "Company"},
            {"source": f"custom_field:{ids['Score']}", "target": "Score"},
            {"source": f"custom_field:{ids['Newsletter']}", "target": "Newsletter"},
            {"source": f"custom_field:{ids['Plan']}", "target": "Plan"},
            {"source": f"custom_field:{ids['Interests']}", "target": "Interests"},
            {"source": f"custom_field:{ids['Birthday']}", "target": "Birthday"},
            {"source": "custom_field:PHONE", "target": "phone"},
            {"source": "responsible_user", "target": "Manager"},
        ],
        "lists": [
            {"list_id": base_list_id, "all": True},
            {"list_title": title, "tag": tag},
            {"list_title": "Warm", "tags_any": ["lead", "customer"]},
        ],
        "create_missing": True,
    }

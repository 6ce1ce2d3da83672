"""Mailing lists: getLists, createList, updateList, deleteList (list titles are unique per account)."""

from __future__ import annotations

from typing import Any

from sandbox.unisender.methods.call import Call, invalid_arg, p_int, p_str
from sandbox.unisender.state import MailList


def get_lists(call: Call) -> list[dict[str, Any]]:
    """getLists."""
    return [
        {"id": lst.id, "title": lst.title} for lst in sorted(call.account.lists.values(), key=lambda x: x.id)
    ]


def _unique_title(call: Call, title: str, except_id: int | None = None) -> None:
    for lst in call.account.lists.values():
        if lst.title == title and lst.id != except_id:
            raise invalid_arg(f'List with title "{title}" already exists')


def create_list(call: Call) -> dict[str, Any]:
    """createList(title) → {id}; titles are unique per account."""
    title = (p_str(call, "title", required=True) or "").strip()
    if not title:
        raise invalid_arg('Missing required argument "title"')
    _unique_title(call, title)
    lst = MailList(
        id=call.state.new_list_id(),
        title=title,
        before_subscribe_url=p_str(call, "before_subscribe_url") or "",
        after_subscribe_url=p_str(call, "after_subscribe_url") or "",
    )
    call.account.lists[lst.id] = lst
    return {"id": lst.id}


def _list(call: Call) -> MailList:
    list_id = p_int(call, "list_id", required=True)
    assert list_id is not None
    lst = call.account.lists.get(list_id)
    if lst is None:
        raise invalid_arg(f"List with id={list_id} not found")
    return lst


def update_list(call: Call) -> dict[str, Any]:
    """updateList(list_id, title?, urls?)."""
    lst = _list(call)
    title = p_str(call, "title")
    if title is not None:
        title = title.strip()
        if not title:
            raise invalid_arg('Argument "title" must not be empty')
        _unique_title(call, title, lst.id)
        lst.title = title
    for attr in ("before_subscribe_url", "after_subscribe_url"):
        value = p_str(call, attr)
        if value is not None:
            setattr(lst, attr, value)
    return {}


def delete_list(call: Call) -> dict[str, Any]:
    """deleteList(list_id): memberships go too (via the member index, no account scan)."""
    lst = _list(call)
    for pid in lst.members:
        contact = call.account.contacts_by_id.get(pid)
        if contact is not None:
            contact.lists.pop(lst.id, None)
    del call.account.lists[lst.id]
    return {}

"""User fields and tags: getFields, createField, updateField, deleteField, getTags, deleteTag."""

from __future__ import annotations

import re
from typing import Any

from sandbox.unisender.methods.call import Call, invalid_arg, p_int, p_str
from sandbox.unisender.state import SYSTEM_FIELDS, Field

FIELD_TYPES = frozenset({"string", "text", "number", "date", "bool"})
_FIELD_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FIELD_NAME_HYPHEN_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")


def _field_json(fld: Field) -> dict[str, Any]:
    return {
        "id": fld.id,
        "name": fld.name,
        "public_name": fld.public_name,
        "type": fld.type,
        "is_visible": fld.is_visible,
        "view_pos": fld.view_pos,
    }


def get_fields(call: Call) -> list[dict[str, Any]]:
    """getFields."""
    return [_field_json(f) for f in sorted(call.account.fields.values(), key=lambda f: f.id)]


def _check_field_name(call: Call, name: str, except_id: int | None = None) -> None:
    cfg = call.state.config
    pattern = _FIELD_NAME_HYPHEN_RE if cfg.field_name_allow_hyphen else _FIELD_NAME_RE
    if not pattern.match(name):
        raise invalid_arg(
            f'Invalid field name "{name}": Latin letters, digits and "_" only, starting with a letter'
        )
    if cfg.reject_system_field_names and name.lower() in SYSTEM_FIELDS:
        raise invalid_arg(f'Field name "{name}" is reserved')
    existing = call.account.fields_by_name.get(name)
    if existing is not None and existing.id != except_id:
        raise invalid_arg(f'Field "{name}" already exists')


def create_field(call: Call) -> dict[str, Any]:
    """createField(name, type, public_name?) → {id}."""
    name = p_str(call, "name", required=True) or ""
    kind = p_str(call, "type", required=True) or ""
    if kind not in FIELD_TYPES:
        raise invalid_arg(f'Invalid field type "{kind}"; expected one of {", ".join(sorted(FIELD_TYPES))}')
    _check_field_name(call, name)
    account = call.account
    fld = Field(
        id=account.next_field_id, name=name, public_name=p_str(call, "public_name") or name, type=kind
    )
    account.next_field_id += 1
    account.fields[fld.id] = fld
    account.fields_by_name[name] = fld
    return {"id": fld.id}


def _field(call: Call) -> Field:
    fid = p_int(call, "id", required=True)
    assert fid is not None
    fld = call.account.fields.get(fid)
    if fld is None:
        raise invalid_arg(f"Field with id={fid} not found")
    return fld


def update_field(call: Call) -> dict[str, Any]:
    """updateField(id, name?, public_name?) → {id}."""
    fld = _field(call)
    name = p_str(call, "name")
    if name is not None and name != fld.name:
        _check_field_name(call, name, fld.id)
        del call.account.fields_by_name[fld.name]
        fld.name = name
        call.account.fields_by_name[name] = fld
    public_name = p_str(call, "public_name")
    if public_name is not None:
        fld.public_name = public_name
    return {"id": fld.id}


def delete_field(call: Call) -> dict[str, Any]:
    """deleteField(id): the values become unreachable (they are keyed by field id)."""
    fld = _field(call)
    del call.account.fields[fld.id]
    del call.account.fields_by_name[fld.name]
    return {}


def get_tags(call: Call) -> list[dict[str, Any]]:
    """getTags."""
    return [{"id": tid, "name": name} for tid, name in sorted(call.account.tags.items())]


def delete_tag(call: Call) -> dict[str, Any]:
    """deleteTag(id)."""
    tid = p_int(call, "id", required=True)
    name = call.account.tags.pop(tid or 0, None)
    if name is None:
        raise invalid_arg(f"Tag with id={tid} not found")
    del call.account.tags_by_name[name]
    return {}

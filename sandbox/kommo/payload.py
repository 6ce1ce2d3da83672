"""Validation of one contact item of a POST/PATCH ``/api/v4/contacts`` body, into changes not yet applied.

Problems are collected, not raised, so one answer lists the errors of every item (``validation-errors``, paths
relative to the item), and the caller applies nothing when any item has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .store import DATE_TYPES, MULTI_VALUE_TYPES, TEXT_TYPES, Account, FieldDef, FieldEnum, Values


@dataclass(slots=True)
class ContactChanges:
    """A validated create/update item, not yet applied."""

    id: int | None = None
    request_id: str | None = None
    scalars: dict[str, Any] = field(default_factory=dict)
    fields: list[tuple[int, Values | None]] = field(default_factory=list)  # None = clear that field
    tags_set: list[tuple[int | None, str | None]] | None = None  # _embedded.tags (replace)
    tags_add: list[tuple[int | None, str | None]] = field(default_factory=list)
    tags_del: list[tuple[int | None, str | None]] = field(default_factory=list)


def _err(code: str, path: str, detail: str) -> dict[str, str]:
    return {"code": code, "path": path, "detail": detail}


def _type_err(path: str, type_name: str) -> dict[str, str]:
    return _err("InvalidType", path, f"This value should be of type {type_name}.")


def _choice_err(path: str) -> dict[str, str]:
    return _err("NotSupportedChoice", path, "The value you selected is not a valid choice.")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


_STRING_KEYS = ("name", "first_name", "last_name")
_INT_KEYS = ("responsible_user_id", "created_by", "updated_by", "created_at", "updated_at")


def parse_contact_item(
    account: Account, item: Any, *, update: bool, errors: list[dict[str, str]]
) -> ContactChanges:
    """Validate one item of a POST/PATCH body; problems are appended to ``errors`` (paths relative to the item)."""
    ch = ContactChanges()
    if not isinstance(item, dict):
        errors.append(_type_err("", "object"))
        return ch
    if update:
        cid = item.get("id")
        if cid is None:
            errors.append(_err("NotBlank", "id", "This value should not be blank."))
        elif not _is_int(cid):
            errors.append(_type_err("id", "int"))
        elif account.live(cid) is None:
            errors.append(_err("NotFound", "id", "Entity not found"))
        else:
            ch.id = cid
    rid = item.get("request_id")
    if rid is not None:
        if isinstance(rid, str):
            ch.request_id = rid
        else:
            errors.append(_type_err("request_id", "string"))
    for key in _STRING_KEYS:
        if key in item:
            if isinstance(item[key], str):
                ch.scalars[key] = item[key]
            else:
                errors.append(_type_err(key, "string"))
    for key in _INT_KEYS:
        if key in item:
            if _is_int(item[key]) and item[key] >= 0:
                ch.scalars[key] = item[key]
            else:
                errors.append(_type_err(key, "int"))
    if "custom_fields_values" in item and item["custom_fields_values"] is not None:
        cfv = item["custom_fields_values"]
        if not isinstance(cfv, list):
            errors.append(_type_err("custom_fields_values", "array"))
        else:
            for i, cf in enumerate(cfv):
                _parse_field(account, cf, f"custom_fields_values.{i}", ch, errors)
    for key, target in (("tags_to_add", ch.tags_add), ("tags_to_delete", ch.tags_del)):
        if key in item:
            parsed = _parse_tags(account, item[key], key, errors)
            if parsed is not None:
                target.extend(parsed)
    if "_embedded" in item:
        emb = item["_embedded"]
        if not isinstance(emb, dict):
            errors.append(_type_err("_embedded", "object"))
        elif "tags" in emb:
            if emb["tags"] is None:
                ch.tags_set = []
            else:
                ch.tags_set = _parse_tags(account, emb["tags"], "_embedded.tags", errors)
    return ch


def _parse_tags(
    account: Account, raw: Any, path: str, errors: list[dict[str, str]]
) -> list[tuple[int | None, str | None]] | None:
    if not isinstance(raw, list):
        errors.append(_type_err(path, "array"))
        return None
    out: list[tuple[int | None, str | None]] = []
    for i, t in enumerate(raw):
        p = f"{path}.{i}"
        if not isinstance(t, dict):
            errors.append(_type_err(p, "object"))
        elif "id" in t and t["id"] is not None:
            if not _is_int(t["id"]):
                errors.append(_type_err(f"{p}.id", "int"))
            elif t["id"] not in account.tags:
                errors.append(_choice_err(f"{p}.id"))
            else:
                out.append((t["id"], None))
        elif "name" in t:
            if not isinstance(t["name"], str) or not t["name"].strip():
                errors.append(_type_err(f"{p}.name", "string"))
            else:
                out.append((None, t["name"].strip()))
        else:
            errors.append(_err("NotBlank", f"{p}.name", "This value should not be blank."))
    return out


def _parse_field(
    account: Account, cf: Any, path: str, ch: ContactChanges, errors: list[dict[str, str]]
) -> None:
    if not isinstance(cf, dict):
        errors.append(_type_err(path, "object"))
        return
    fdef: FieldDef | None = None
    if "field_id" in cf and cf["field_id"] is not None:
        if not _is_int(cf["field_id"]):
            errors.append(_type_err(f"{path}.field_id", "int"))
            return
        fdef = account.fields.get(cf["field_id"])
        if fdef is None:
            errors.append(_choice_err(f"{path}.field_id"))
            return
    elif "field_code" in cf and cf["field_code"] is not None:
        if not isinstance(cf["field_code"], str):
            errors.append(_type_err(f"{path}.field_code", "string"))
            return
        fdef = account.field_by_code(cf["field_code"])
        if fdef is None:
            errors.append(_choice_err(f"{path}.field_code"))
            return
    else:
        errors.append(_err("NotBlank", f"{path}.field_id", "This value should not be blank."))
        return
    if "values" not in cf:
        errors.append(_err("NotBlank", f"{path}.values", "This value should not be blank."))
        return
    raw = cf["values"]
    if raw is None or raw == []:
        ch.fields.append((fdef.id, None))
        return
    if not isinstance(raw, list):
        errors.append(_type_err(f"{path}.values", "array"))
        return
    if fdef.type not in MULTI_VALUE_TYPES and len(raw) > 1:
        errors.append(
            _err("TooManyValues", f"{path}.values", "This collection should contain 1 element or less.")
        )
        return
    values: Values = []
    before = len(errors)
    for j, v in enumerate(raw):
        vp = f"{path}.values.{j}"
        if not isinstance(v, dict):
            errors.append(_type_err(vp, "object"))
            continue
        parsed = _parse_value(fdef, v, vp, errors)
        if parsed is not None:
            values.append(parsed)
    if len(errors) == before:
        if fdef.type == "smart_address":
            # Parts are held (and so read and sent) in their own order, whatever order they were written in.
            order = {e.id: e.sort for e in fdef.enums or ()}
            values.sort(key=lambda part: order.get(part[1] or 0, 0))
        ch.fields.append((fdef.id, values))


def _parse_value(
    fdef: FieldDef, v: dict[str, Any], vp: str, errors: list[dict[str, str]]
) -> tuple[Any, int | None] | None:
    value = v.get("value")
    t = fdef.type
    if t == "multitext":
        if not isinstance(value, str):
            errors.append(_type_err(f"{vp}.value", "string"))
            return None
        if not value.strip():
            errors.append(_err("NotBlank", f"{vp}.value", "This value should not be blank."))
            return None
        ok, enum = _pick_enum(fdef, v, vp, errors)
        if not ok:
            return None
        return (value, (enum or (fdef.enums or [])[0]).id)  # default enum: the first (WORK)
    if t in ("select", "radiobutton", "multiselect"):
        ok, enum = _pick_enum(fdef, v, vp, errors)
        if not ok:
            return None
        if enum is None:
            if isinstance(value, str) and fdef.enum_by_value(value) is not None:
                enum = fdef.enum_by_value(value)
            else:
                errors.append(_choice_err(f"{vp}.value" if value is not None else f"{vp}.enum_id"))
                return None
        assert enum is not None
        return (enum.value, enum.id)
    if t == "smart_address":
        if not isinstance(value, str):
            errors.append(_type_err(f"{vp}.value", "string"))
            return None
        if not value.strip():
            errors.append(_err("NotBlank", f"{vp}.value", "This value should not be blank."))
            return None
        ok, enum = _pick_enum(fdef, v, vp, errors)
        if not ok:
            return None
        if enum is None:  # every part names which one it is (city, zip, …): there is no default
            errors.append(_err("NotBlank", f"{vp}.enum_code", "This value should not be blank."))
            return None
        return (value, enum.id)
    if t in TEXT_TYPES:
        if not isinstance(value, str):
            errors.append(_type_err(f"{vp}.value", "string"))
            return None
        return (value, None)
    if t == "numeric":
        if _is_int(value):
            return (str(value), None)
        if isinstance(value, float):
            # Held as text, as PHP (Kommo) turns a float into a string: 3.0 is "3", 1.5 is "1.5".
            return (str(int(value)) if value.is_integer() else repr(value), None)
        if isinstance(value, str):
            try:
                float(value)
            except ValueError:
                errors.append(_type_err(f"{vp}.value", "numeric"))
                return None
            return (value, None)
        errors.append(_type_err(f"{vp}.value", "numeric"))
        return None
    if t == "checkbox":
        if not isinstance(value, bool):
            errors.append(_type_err(f"{vp}.value", "bool"))
            return None
        return (value, None)
    if t in DATE_TYPES:
        # Unix seconds, or an RFC 3339 string as Kommo's PHP library always sends (spec §8.2); held as seconds.
        seconds = value if _is_int(value) else _rfc3339_seconds(value)
        if seconds is None:
            errors.append(_type_err(f"{vp}.value", "int"))
            return None
        return (seconds, None)
    errors.append(_choice_err(vp))
    return None


def _rfc3339_seconds(value: Any) -> int | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return int(moment.timestamp())
    except (OverflowError, ValueError):
        return None


def _pick_enum(
    fdef: FieldDef, v: dict[str, Any], vp: str, errors: list[dict[str, str]]
) -> tuple[bool, FieldEnum | None]:
    """(ok, the enum named by enum_id or enum_code, or None if neither was given); ok False after an error."""
    if v.get("enum_id") is not None:
        if not _is_int(v["enum_id"]):
            errors.append(_type_err(f"{vp}.enum_id", "int"))
            return False, None
        e = fdef.enum_by_id(v["enum_id"])
        if e is None:
            errors.append(_choice_err(f"{vp}.enum_id"))
            return False, None
        return True, e
    if v.get("enum_code") is not None:
        code = v["enum_code"]
        if not isinstance(code, str):
            errors.append(_type_err(f"{vp}.enum_code", "string"))
            return False, None
        e = next((x for x in fdef.enums or () if x.code == code), None)
        if e is None:
            errors.append(_choice_err(f"{vp}.enum_code"))
            return False, None
        return True, e
    return True, None

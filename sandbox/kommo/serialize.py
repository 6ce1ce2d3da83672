"""Wire shapes: contact JSON, custom-field definitions, the account, and the PHP-style form body of outgoing
webhooks. Written here from Kommo's docs and published captures, independently of ``app.connectors``."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote_plus

from .store import Account, Contact, FieldDef, User


def contact_json(
    account: Account, c: Contact, base: str, with_: frozenset[str] = frozenset()
) -> dict[str, Any]:
    cfv: list[dict[str, Any]] | None = None
    if c.fields:
        cfv = []
        for fid, vals in c.fields:
            fdef = account.fields.get(fid)
            if fdef is None:
                continue
            cfv.append(
                {
                    "field_id": fdef.id,
                    "field_name": fdef.name,
                    "field_code": fdef.code,
                    "field_type": fdef.type,
                    "values": [_value_json(fdef, v, e) for v, e in vals],
                }
            )
        cfv = cfv or None
    embedded: dict[str, Any] = {
        "tags": [{"id": t, "name": account.tags[t].name, "color": None} for t in c.tags if t in account.tags],
        "companies": [],
    }
    for extra in ("leads", "customers", "catalog_elements"):
        if extra in with_:
            embedded[extra] = []
    return {
        "id": c.id,
        "name": c.name,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "responsible_user_id": c.responsible_user_id,
        "group_id": c.group_id,
        "created_by": c.created_by,
        "updated_by": c.updated_by,
        "created_at": c.created_at,
        "updated_at": c.updated_at,
        "closest_task_at": None,
        "custom_fields_values": cfv,
        "account_id": account.id,
        "_links": {"self": {"href": f"{base}/api/v4/contacts/{c.id}"}},
        "_embedded": embedded,
    }


def _value_json(fdef: FieldDef, value: Any, enum_id: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"value": value}
    if fdef.enums is not None:
        enum = fdef.enum_by_id(enum_id) if enum_id is not None else None
        out["enum_id"] = enum_id
        out["enum_code"] = enum.code if enum is not None else None
    return out


def field_def_json(account: Account, f: FieldDef, base: str) -> dict[str, Any]:
    return {
        "id": f.id,
        "name": f.name,
        "type": f.type,
        "account_id": account.id,
        "code": f.code,
        "sort": f.sort,
        "is_api_only": f.is_api_only,
        "enums": None
        if f.enums is None
        else [{"id": e.id, "value": e.value, "sort": e.sort} for e in f.enums],
        "group_id": None,
        "required_statuses": [],
        "is_deletable": not f.is_predefined,
        "is_predefined": f.is_predefined,
        "entity_type": "contacts",
        "remind": None,
        "_links": {"self": {"href": f"{base}/api/v4/contacts/custom_fields/{f.id}"}},
    }


def user_json(u: User, base: str) -> dict[str, Any]:
    """A user as ``GET /api/v4/users`` shows one (the doc sample's keys; every right "A", all)."""
    entity = {"view": "A", "edit": "A", "add": "A", "delete": "A", "export": "A"}
    return {
        "id": u.id,
        "name": u.name,
        "email": u.email,
        "lang": "en",
        "rights": {
            "leads": dict(entity),
            "contacts": dict(entity),
            "companies": dict(entity),
            "tasks": {"edit": "A", "delete": "A"},
            "mail_access": False,
            "catalog_access": False,
            "status_rights": [],
            "is_admin": u.is_admin,
            "is_free": False,
            "is_active": u.is_active,
            "group_id": None,
            "role_id": None,
        },
        "_links": {"self": {"href": f"{base}/api/v4/users/{u.id}/"}},
    }


def account_json(account: Account, base: str, with_: frozenset[str] = frozenset()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": account.id,
        "name": account.name,
        "subdomain": account.subdomain,
        "created_at": account.created_at,
        "created_by": 0,
        "updated_at": account.created_at,
        "updated_by": 0,
        "current_user_id": account.current_user_id,
        "country": "BR",
        "currency": "BRL",
        "currency_symbol": "R$",
        "customers_mode": "disabled",
        "is_unsorted_on": True,
        "mobile_feature_version": 0,
        "is_loss_reason_enabled": False,
        "is_helpbot_enabled": False,
        "is_technical_account": False,
        "contact_name_display_order": 1,
    }
    if "amojo_id" in with_:
        out["amojo_id"] = f"{account.id:08x}-0000-4000-8000-000000000000"
    if "uuid" in with_:
        out["uuid"] = f"{account.id:08x}-1111-4111-8111-111111111111"
    if "version" in with_:
        out["version"] = 11
    out["_links"] = {"self": {"href": f"{base}/api/v4/account"}}
    return out


# --- webhook form bodies -----------------------------------------------------------------------------------


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def webhook_contact_pairs(account: Account, action: str, index: int, c: Contact) -> list[tuple[str, str]]:
    """Flattened ``contacts[{action}][{index}][...]`` pairs for one contact, keys and order as in the webhook
    example of Kommo's docs."""
    p = f"contacts[{action}][{index}]"
    if action == "delete":
        return [(f"{p}[id]", str(c.id)), (f"{p}[type]", "contact")]
    pairs = [
        (f"{p}[id]", str(c.id)),
        (f"{p}[name]", c.name),
        (f"{p}[responsible_user_id]", str(c.responsible_user_id)),
        (f"{p}[date_create]", str(c.created_at)),
        (f"{p}[last_modified]", str(c.updated_at)),
        (f"{p}[created_user_id]", str(c.created_by)),
        (f"{p}[modified_user_id]", str(c.updated_by)),
        (f"{p}[account_id]", str(account.id)),
    ]
    k = 0
    for fid, vals in c.fields:
        fdef = account.fields.get(fid)
        if fdef is None:
            continue
        fp = f"{p}[custom_fields][{k}]"
        pairs.append((f"{fp}[id]", str(fdef.id)))
        pairs.append((f"{fp}[name]", fdef.name))
        if fdef.type == "radiobutton":  # an object, not a list (Kommo's webhook docs)
            value, enum_id = vals[0]
            pairs.append((f"{fp}[values][value]", _str(value)))
            if enum_id is not None:
                pairs.append((f"{fp}[values][enum]", str(enum_id)))
        elif fdef.type in ("date", "birthday", "date_time"):
            # Bare values, without a [value] key (Kommo's webhook docs).
            for j, (value, _e) in enumerate(vals):
                pairs.append((f"{fp}[values][{j}]", _str(value)))
        else:
            for j, (value, enum_id) in enumerate(vals):
                pairs.append((f"{fp}[values][{j}][value]", _str(value)))
                if enum_id is not None:
                    pairs.append((f"{fp}[values][{j}][enum]", str(enum_id)))
        if fdef.code is not None:
            pairs.append((f"{fp}[code]", fdef.code))
        k += 1
    # Tags as in captured deliveries: ``…[tags][0][id]=80147``, ``…[tags][0][name]=…``.
    for j, tag_id in enumerate(t for t in c.tags if t in account.tags):
        pairs.append((f"{p}[tags][{j}][id]", str(tag_id)))
        pairs.append((f"{p}[tags][{j}][name]", account.tags[tag_id].name))
    pairs += [
        (f"{p}[created_at]", str(c.created_at)),
        (f"{p}[updated_at]", str(c.updated_at)),
        (f"{p}[type]", "contact"),
    ]
    return pairs


def account_pairs(account: Account, base_domain: str) -> list[tuple[str, str]]:
    return [
        ("account[subdomain]", account.subdomain),
        ("account[id]", str(account.id)),
        ("account[_links][self]", f"https://{account.host(base_domain)}"),
    ]


def form_encode(pairs: list[tuple[str, str]]) -> bytes:
    """``application/x-www-form-urlencoded`` as PHP's http_build_query: brackets percent-encoded, space as +."""
    return "&".join(f"{quote_plus(k, safe='')}={quote_plus(v, safe='')}" for k, v in pairs).encode()

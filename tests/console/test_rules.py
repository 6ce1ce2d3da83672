"""The console's pure parts: the health badge's rule and the mapping form's round trip to a spec."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from app.accounts.schemas import AccountView, KommoView, OutboxView, UnisenderView
from app.console.mapping_form import MappingForm, form_of, read_form, spec_of
from app.console.views import health_of
from app.db.states import IntegrationStatus
from app.sync.spec import ListRule

NOW = datetime(2026, 11, 30, 12, tzinfo=UTC)


def _view(**changes: object) -> AccountView:
    view = AccountView(
        account_id=1,
        subdomain="acme",
        host="acme.kommo.com",
        status=IntegrationStatus.CONNECTED,
        kommo=KommoView(
            connected=True,
            token_expires_at=NOW + timedelta(days=1),
            needs_reauth=False,
            webhooks_registered=True,
        ),
        unisender=UnisenderView(connected=True, list_id=5, checked_at=NOW, hook_registered=True),
        outbox=OutboxView(),
        events_pending=0,
        last_event_at=None,
        last_error=None,
        last_error_at=None,
        recent_rejections=[],
    )
    return view.model_copy(update=changes)


def test_health_badge() -> None:
    assert health_of(_view(), None, 0, NOW).level == "ok"
    assert health_of(_view(), 61.0, 0, NOW).level == "warn"
    assert health_of(_view(), 59.0, 0, NOW).level == "ok"
    assert health_of(_view(outbox=OutboxView(rejected=2)), None, 2, NOW).level == "warn"  # refusals only
    assert health_of(_view(outbox=OutboxView(rejected=2)), None, 3, NOW).level == "bad"
    assert health_of(_view(status=IntegrationStatus.NEEDS_REAUTH), None, 0, NOW).reasons == [
        "Kommo needs re-authorisation"
    ]
    unisender_off = UnisenderView(connected=False, list_id=None, checked_at=None, hook_registered=False)
    assert health_of(_view(unisender=unisender_off), None, 0, NOW).level == "bad"
    soon = KommoView(
        connected=True,
        token_expires_at=NOW + timedelta(minutes=5),
        needs_reauth=False,
        webhooks_registered=True,
    )
    assert health_of(_view(kommo=soon), None, 0, NOW).level == "warn"
    assert (
        health_of(_view(last_error="x", last_error_at=NOW - timedelta(minutes=5)), None, 0, NOW).level
        == "warn"
    )
    assert (
        health_of(_view(last_error="x", last_error_at=NOW - timedelta(hours=2)), None, 0, NOW).level == "ok"
    )


def test_the_spec_in_force_comes_back_from_its_form_unchanged() -> None:
    fields = [
        {
            "source": ["first_name", "custom_field:587123"],
            "target": "Who",
            "direction": "both",
            "separator": " / ",
            "sources": [
                {"kind": "first_name", "type": "text", "name": "First name"},
                {"kind": "custom_field", "field_id": 587123, "type": "select", "name": "Plan", "code": None},
            ],
        },
        {
            "source": ["custom_field:PHONE"],
            "target": "phone",
            "sources": [
                {"kind": "custom_field", "field_id": 9, "type": "multitext", "name": "Phone", "code": "PHONE"}
            ],
        },
    ]
    lists = [ListRule(base=True, list_id=5, all=True), ListRule(list_id=7, title="VIP", tag="vip")]
    form = form_of(fields, lists, ["clicked", "hard_bounce", "opened", "soft_bounce"], True)
    assert form.activity == {"opened", "clicked", "bounced"}
    posted: dict[str, str] = {}
    for i, row in enumerate(form.with_blank_rows().fields):
        posted |= {
            f"field-{i}-{k}": str(getattr(row, k))
            for k in ("source", "source2", "separator", "target", "direction")
        }
    for i, lrow in enumerate(form.with_blank_rows().lists):
        posted |= {
            f"list-{i}-{k}": str(getattr(lrow, k)) for k in ("list_id", "new_title", "segment", "tags")
        }
    posted |= {
        "activity-opened": "1",
        "activity-clicked": "1",
        "activity-bounced": "1",
        "create_contacts": "1",
    }
    spec, problems = spec_of(read_form(posted))
    assert problems == []
    assert spec is not None
    assert spec.model_dump(exclude_none=True) == {
        "fields": [
            {
                "source": ["first_name", "custom_field:587123"],
                "target": "Who",
                "direction": "both",
                "separator": " / ",
            },
            {
                "source": "custom_field:PHONE",
                "target": "phone",
                "direction": "to_unisender",
                "separator": " ",
            },
        ],
        "lists": [{"list_id": 5, "all": True}, {"list_id": 7, "all": False, "tag": "vip"}],
        "create_missing": False,
        "create_contacts": True,
        "activity": ["opened", "clicked", "bounced"],
    }


def test_incomplete_rows_are_named_and_nothing_is_built() -> None:
    spec, problems = spec_of(
        MappingForm(
            fields=read_form({"field-0-source": "name"}).fields,
            lists=read_form({"list-0-list_id": "5", "list-0-segment": "tag", "list-0-tags": ""}).lists,
        )
    )
    assert spec is None
    assert problems == [
        "Field row 1: choose both a Kommo source and a Unisender field.",
        "List row 1: name the tag (one for “tag”, one or more for “any of”).",
    ]
    spec, _ = spec_of(read_form({"field-0-source": "name", "field-0-new_target": "Full name"}))
    assert spec is not None
    assert spec.create_missing is True

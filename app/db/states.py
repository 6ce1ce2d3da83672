"""The states rows move through, one enum per table; stored as their string values.

``StrEnum`` members are ``str``: they compare equal to the stored text and bind as plain strings, so SQL and
JSON see exactly the values below.
"""

from __future__ import annotations

from enum import StrEnum


class IntegrationStatus(StrEnum):
    """``integration.status``: where the account's Kommo connection stands."""

    PENDING = "pending"  # registered, Kommo not connected yet (or the integration's client changed)
    CONNECTED = "connected"
    NEEDS_REAUTH = "needs_reauth"  # Kommo refused the refresh token: the owner must connect again
    DISABLED = "disabled"  # uninstalled in Kommo


class EventSource(StrEnum):
    """``webhook_event.source``: which provider posted the event."""

    KOMMO = "kommo"
    UNISENDER = "unisender"


class EventStatus(StrEnum):
    """``webhook_event.status``."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"  # could not be applied after its attempts; kept with its reason
    UNRECOGNISED = "unrecognised"  # a delivery we keep but cannot read (unknown event or layout)
    DISCARDED = "discarded"  # a failed or unrecognised event an operator gave up on (app.deadletters)


class OutboxStatus(StrEnum):
    """``outbox.status``: the desired state of one address in the email platform."""

    PENDING = "pending"
    DONE = "done"  # the platform holds this payload
    REJECTED = "rejected"  # refused by the platform for this row, with its reason; not retried blindly
    CANCELLED = "cancelled"  # no longer wanted (e.g. the address unsubscribed)
    DEAD = "dead"  # attempts exhausted
    # A rejected or dead row an operator gave up on (app.deadletters): like ``rejected``, only a different
    # desire for the address (a new payload) makes it pending again.
    DISCARDED = "discarded"


class Consent(StrEnum):
    """``contact_email.consent``."""

    SUBSCRIBED = "subscribed"
    UNSUBSCRIBED = "unsubscribed"
    BOUNCED = "bounced"  # a hard bounce: the address cannot take mail
    COMPLAINED = "complained"  # the recipient marked a letter as spam


class RunKind(StrEnum):
    """``sync_run.kind``."""

    FULL = "full"
    RECONCILE = "reconcile"
    REMAP = "remap"  # a new sync spec re-derives every address of the account


class RunStatus(StrEnum):
    """``sync_run.status``."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"

    @classmethod
    def active(cls) -> tuple[RunStatus, ...]:
        return (cls.PENDING, cls.RUNNING)


class ActivityState(StrEnum):
    """``email_activity.state``: what became of an activity event on the CRM side."""

    PENDING = "pending"  # to be written to the CRM contact's timeline
    NOTED = "noted"  # written (or counted into the contact's note for that campaign and kind)
    SKIPPED = "skipped"  # a kind the account's spec does not write
    NO_CONTACT = "no_contact"  # no live CRM contact holds the address: recorded, shown, not written


class SignupState(StrEnum):
    """``signup.state``: what became of an address that joined a mapped list of the email platform."""

    PENDING = (
        "pending"  # a CRM contact to create (or, ``kommo_id`` set: the tags of lists joined since to add)
    )
    CREATED = "created"  # we created its CRM contact (``kommo_id``)
    LINKED = "linked"  # a contact already held the address (ours, or found in the CRM): nothing created
    RECORDED = "recorded"  # the account's spec does not create contacts: kept and shown only
    FAILED = "failed"  # the CRM refused the contact (``last_error``); not retried
    DISCARDED = "discarded"  # a failed signup an operator gave up on (app.deadletters)


class CrmWriteState(StrEnum):
    """``crm_write.state``: what became of a value the email platform's side won, to write into the CRM."""

    PENDING = "pending"  # to write
    DONE = "done"  # written
    SUPERSEDED = "superseded"  # a later value of the same field and contact was written instead
    FAILED = "failed"  # the value has no CRM form, or the CRM refused it (``last_error``); not retried
    DISCARDED = "discarded"  # a failed value an operator gave up on (app.deadletters)


class DeadLetterKind(StrEnum):
    """The tables whose dead rows are dead letters (``app.deadletters``): a dead letter's id is
    ``<kind>:<row id>``."""

    EVENT = "event"  # webhook_event: failed or unrecognised
    OUTBOX = "outbox"  # outbox: rejected or dead
    CRM_WRITE = "crm_write"  # crm_write: failed
    SIGNUP = "signup"  # signup: failed


class DeadLetterOperation(StrEnum):
    """``dead_letter_action.operation``: what an operator did to dead letters."""

    REPLAY = "replay"  # put back on the normal path
    DISCARD = "discard"  # given up on: no longer listed

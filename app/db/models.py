"""ORM models, one class per table. Tables are singular, datetimes end in ``_at``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, state_column, utcnow
from app.db.states import (
    ActivityState,
    Consent,
    CrmWriteState,
    EventSource,
    EventStatus,
    IntegrationStatus,
    OutboxStatus,
    RunKind,
    RunStatus,
    SignupState,
)
from app.security.crypto import EncryptedString


class Integration(Base):
    """A Kommo account connected to the service (the tenant)."""

    __tablename__ = "integration"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    subdomain: Mapped[str] = mapped_column(String(255))
    # The account's host as Kommo's OAuth redirect named it (acme.kommo.com, acme.amocrm.ru): every Kommo call
    # for the account goes there. None until the account is connected.
    kommo_host: Mapped[str | None] = mapped_column(String(255))
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret: Mapped[str] = mapped_column(EncryptedString())
    redirect_uri: Mapped[str] = mapped_column(Text)
    # The token in webhook URLs: hashed for the constant-time check on every delivery, and encrypted so the
    # URL can be shown again and re-registered at Kommo/Unisender without rotating it.
    webhook_token_hash: Mapped[str] = mapped_column(String(64))
    webhook_token: Mapped[str | None] = mapped_column(EncryptedString())
    status: Mapped[str] = mapped_column(String(32), default=IntegrationStatus.PENDING)  # IntegrationStatus
    webhooks_registered_at: Mapped[datetime | None]
    reconcile_cursor: Mapped[int | None] = mapped_column(BigInteger)  # Kommo updated_at watermark
    reconciled_at: Mapped[datetime | None]
    disabled_at: Mapped[datetime | None]
    last_event_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class KommoToken(Base):
    __tablename__ = "kommo_token"

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE"), primary_key=True
    )
    access_token: Mapped[str] = mapped_column(EncryptedString())
    refresh_token: Mapped[str] = mapped_column(EncryptedString())
    expires_at: Mapped[datetime]
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)


class EspAccount(Base):
    """The email-platform credential and target list of an account."""

    __tablename__ = "esp_account"

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE"), primary_key=True
    )
    provider: Mapped[str] = mapped_column(String(32), default="unisender")
    api_key: Mapped[str] = mapped_column(EncryptedString())
    list_id: Mapped[int | None] = mapped_column(BigInteger)
    checked_at: Mapped[datetime | None]
    hook_registered_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[datetime | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class OAuthStateRow(Base):
    """OAuth ``state`` nonces that completed a connection (single use). Only a successful code exchange
    writes a row, so unauthenticated requests cannot grow the table; rows are pruned once their state has
    expired anyway."""

    __tablename__ = "oauth_state"
    __table_args__ = (Index("ix_oauth_state_created_at", "created_at"),)

    nonce: Mapped[str] = mapped_column(String(64), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    used_at: Mapped[datetime | None]


class Contact(Base):
    """Our copy of a Kommo contact: the latest version we applied."""

    __tablename__ = "contact"
    __table_args__ = (UniqueConstraint("account_id", "kommo_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    kommo_id: Mapped[int] = mapped_column(BigInteger)
    name: Mapped[str] = mapped_column(Text, default="")
    emails: Mapped[list[str]] = mapped_column(JSON, default=list)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    # What a sync spec may map besides the name and tags: {"first_name", "last_name", "responsible_user_id",
    # "created_at", "fields": {"<custom field id>": [texts]}} (see app.sync.mapping.contact_data).
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    kommo_updated_at: Mapped[int] = mapped_column(BigInteger, default=0)
    # When each writable value last changed in Kommo (app.sync.field_times): source key → version time, "*" →
    # the first version stored. None for rows stored before it existed (the contact's version time stands).
    field_times: Mapped[dict[str, int] | None] = mapped_column(JSON)
    deleted_at: Mapped[datetime | None]
    seen_run_id: Mapped[str | None] = mapped_column(String(36))
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ContactAddress(Base):
    """Which live contacts hold which address (an address may be held by several contacts)."""

    __tablename__ = "contact_address"
    __table_args__ = (Index("ix_contact_address_account_id_email", "account_id", "email"),)

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kommo_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), primary_key=True)


class ContactEmail(Base):
    """One address of an account: who owns it, its consent, and what Unisender last accepted."""

    __tablename__ = "contact_email"
    __table_args__ = (UniqueConstraint("account_id", "email"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(String(320))
    kommo_id: Mapped[int | None] = mapped_column(BigInteger)
    consent: Mapped[Consent] = mapped_column(state_column(Consent, 16), default=Consent.SUBSCRIBED)
    unsubscribed_at: Mapped[datetime | None]
    kommo_tagged_at: Mapped[datetime | None]  # when the unsubscribe was written back to Kommo
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ListUnsubscribe(Base):
    """An address unsubscribed from one list of the email platform (by the contact, never by us): it is never
    put back in that list, and the CRM contact is tagged for it once."""

    __tablename__ = "list_unsubscribe"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), primary_key=True)
    list_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    unsubscribed_at: Mapped[datetime] = mapped_column(default=utcnow)
    kommo_tagged_at: Mapped[datetime | None]


class SyncSpec(Base):
    """One version of an account's sync spec (fields and lists mapping); the highest version is in force."""

    __tablename__ = "sync_spec"

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE"), primary_key=True
    )
    version: Mapped[int] = mapped_column(Integer, primary_key=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)  # app.sync.spec.StoredSpec
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class CrmUser(Base):
    """The CRM's users of an account (id → name), for the ``responsible_user`` source of a spec."""

    __tablename__ = "crm_user"

    account_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookEvent(Base):
    """Inbox: every accepted webhook body, stored before any processing."""

    __tablename__ = "webhook_event"
    __table_args__ = (Index("ix_webhook_event_status_received_at", "status", "received_at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    source: Mapped[EventSource] = mapped_column(state_column(EventSource, 16))
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[EventStatus] = mapped_column(state_column(EventStatus, 16), default=EventStatus.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None]


class Outbox(Base):
    """Desired state of one address in the email platform, coalesced per (account, email)."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("account_id", "email"),
        Index("ix_outbox_status_next_attempt_at", "status", "next_attempt_at"),
        # What a flush claims: an account's pending rows in id order (migration 0015).
        Index(
            "ix_outbox_pending_account_id_bulk_id",
            "account_id",
            "bulk",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(String(320))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    payload_hash: Mapped[str] = mapped_column(String(64))
    # Hash of the state Unisender last accepted for this address: a desire equal to it sends nothing.
    pushed_hash: Mapped[str | None] = mapped_column(String(64))
    # That state itself, for the per-field differences of a mapping preview.
    pushed_payload: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # What Unisender holds of the fields it owns (targets of ``to_kommo`` rules), as its changes told us: no
    # push carries them, so the push record above cannot (app.sync.held.held_state).
    platform_values: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    pushed_at: Mapped[datetime | None]
    status: Mapped[OutboxStatus] = mapped_column(state_column(OutboxStatus, 16), default=OutboxStatus.PENDING)
    # Queued by bulk work (a spec change's walk): pushed after the live changes due at the same time.
    bulk: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text)
    reject_code: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SyncRun(Base):
    __tablename__ = "sync_run"
    __table_args__ = (Index("ix_sync_run_account_id_status", "account_id", "status"),)

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    account_id: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[RunKind] = mapped_column(state_column(RunKind, 16), default=RunKind.FULL)
    status: Mapped[RunStatus] = mapped_column(state_column(RunStatus, 16), default=RunStatus.PENDING)
    cursor: Mapped[int | None] = mapped_column(BigInteger)
    fetched: Mapped[int] = mapped_column(Integer, default=0)
    changed: Mapped[int] = mapped_column(Integer, default=0)
    pushed: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    # The slice advancing the run (its job id) and until when it holds the run: renewed while the slice
    # runs; an expired lease means the slice died, and the sweeper hands the run to a new job.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None]
    slice_failures: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # in a row
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class SyncFailure(Base):
    """A contact a full-sync run could not apply (the run went on without it)."""

    __tablename__ = "sync_failure"

    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("sync_run.id", ondelete="CASCADE"), primary_key=True
    )
    kommo_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class EmailActivity(Base):
    """One thing the email platform reported about a letter to an address (delivered, opened, clicked,
    bounced, complained, unsubscribed), kept once however often it is delivered, until written to the CRM."""

    __tablename__ = "email_activity"
    __table_args__ = (
        UniqueConstraint("account_id", "event_key"),
        Index("ix_email_activity_account_id_state", "account_id", "state"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE")
    )
    email: Mapped[str] = mapped_column(String(320))
    kind: Mapped[str] = mapped_column(String(16))  # app.connectors.base.ActivityKind
    campaign_id: Mapped[int | None] = mapped_column(BigInteger)
    list_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str | None] = mapped_column(String(64))  # the platform's own status word
    occurred_at: Mapped[datetime]
    event_key: Mapped[str] = mapped_column(String(64))  # the event's identity (sha256 hex)
    state: Mapped[ActivityState] = mapped_column(
        state_column(ActivityState, 16), default=ActivityState.PENDING
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None]


class Campaign(Base):
    """A campaign the email platform sent for an account, as last read from it: its name for the CRM notes,
    its totals for the campaigns view."""

    __tablename__ = "campaign"

    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE"), primary_key=True
    )
    campaign_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    subject: Mapped[str] = mapped_column(Text, default="")
    list_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str | None] = mapped_column(String(32))
    started_at: Mapped[datetime | None]
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    refreshed_at: Mapped[datetime] = mapped_column(default=utcnow)


class Signup(Base):
    """An address that joined a mapped list of the email platform by itself (a signup form) while no live CRM
    contact held it: one row per address, whatever the deliveries, so that one CRM contact at most is made
    for it (the CRM has no duplicate control of its own)."""

    __tablename__ = "signup"
    __table_args__ = (
        UniqueConstraint("account_id", "email"),
        Index("ix_signup_state_account_id", "state", "account_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("integration.account_id", ondelete="CASCADE")
    )
    email: Mapped[str] = mapped_column(String(320))
    list_id: Mapped[int] = mapped_column(BigInteger)  # the first mapped list it joined
    list_ids: Mapped[list[int]] = mapped_column(JSON, default=list)  # every mapped list it joined, in order
    state: Mapped[SignupState] = mapped_column(state_column(SignupState, 16), default=SignupState.PENDING)
    kommo_id: Mapped[int | None] = mapped_column(BigInteger)  # the contact created or found
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)


class CrmWrite(Base):
    """A value of a two-way field that changed in the email platform and won over the CRM's (see
    ``app.sync.two_way``), to write into the CRM contact: the latest value per contact and field is written."""

    __tablename__ = "crm_write"
    __table_args__ = (Index("ix_crm_write_state_account_id", "state", "account_id"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    account_id: Mapped[int] = mapped_column(BigInteger)  # no foreign key, as the mirror's other tables
    kommo_id: Mapped[int] = mapped_column(BigInteger)
    email: Mapped[str] = mapped_column(String(320))  # the address whose platform field changed
    source: Mapped[str] = mapped_column(String(64))  # name | first_name | last_name | custom_field:<id>
    field_type: Mapped[str] = mapped_column(String(32))  # the CRM field's type (SourceRef.type)
    target: Mapped[str] = mapped_column(String(64))  # the platform's field name
    value: Mapped[str] = mapped_column(Text)  # the platform's text
    unisender_at: Mapped[datetime]  # when the platform's value was set (or found by an export)
    # The CRM's value of the source when the platform's change won (app.sync.field_times.source_text): the
    # write is dropped only if the live CRM value differs from it. None on rows from before it was kept.
    crm_before: Mapped[str | None] = mapped_column(Text)
    state: Mapped[CrmWriteState] = mapped_column(
        state_column(CrmWriteState, 16), default=CrmWriteState.PENDING
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    handled_at: Mapped[datetime | None]


# The operators' own records and the activity notes' records live in their modules; importing them here
# registers their tables wherever the models are (alembic, the schema check, the tests).
from app.db.activity_models import ActivityNote, ActivityNoteIntent  # noqa: E402
from app.db.operator_models import ConsoleSession, DeadLetterAction  # noqa: E402

__all__ = ["ActivityNote", "ActivityNoteIntent", "ConsoleSession", "DeadLetterAction"]

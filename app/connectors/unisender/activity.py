"""Unisender's delivery statuses (``send_result``, also the ``status`` of ``email_status`` hook events) as the
sync engine's activity kinds.

The statuses are Unisender's documented vocabulary. Which of them is a hard bounce or a complaint is our
reading of their descriptions: a hard bounce is a final failure that says the address itself cannot take
mail (unknown user, dead domain, invalid address), a complaint is the recipient marking the letter as spam
(``ok_fbl``) or the receiving server refusing it as spam. A status not listed (``ok_sent``, ``not_sent``,
``err_skip_letter``, ``err_blacklisted``…) is no activity of the address: nothing is recorded for it.
"""

from __future__ import annotations

from app.connectors.base import ActivityKind

_KINDS: dict[str, ActivityKind] = {
    "ok_delivered": ActivityKind.DELIVERED,
    "ok_spam_folder": ActivityKind.DELIVERED,  # delivered, into the spam folder: no complaint of the recipient
    "ok_read": ActivityKind.OPENED,
    "ok_link_visited": ActivityKind.CLICKED,
    "ok_unsubscribed": ActivityKind.UNSUBSCRIBED,
    "ok_fbl": ActivityKind.COMPLAINED,
    "err_spam_rejected": ActivityKind.COMPLAINED,
    **dict.fromkeys(
        (
            "err_user_unknown",
            "err_user_inactive",
            "err_mailbox_discarded",
            "err_no_dns",
            "err_no_smtp",
            "err_domain_inactive",
            "err_dest_invalid",
            "err_unreachable",
            "err_not_available",
        ),
        ActivityKind.HARD_BOUNCE,
    ),
    **dict.fromkeys(
        (
            "err_will_retry",
            "err_resend",
            "err_giveup",
            "err_mailbox_full",
            "err_spam_may_retry",
            "err_too_large",
            "err_over_quota",
            "err_delivery_failed",
            "err_lost",
            "skip_dup_temp_unreachable",
            "skip_dup_mailbox_full",
        ),
        ActivityKind.SOFT_BOUNCE,
    ),
}


def activity_kind(event_name: str, status: str | None) -> ActivityKind | None:
    """The activity an event reports: an ``email_status`` by its status, an ``unsubscribe`` as such."""
    if event_name == "unsubscribe":
        return ActivityKind.UNSUBSCRIBED
    if event_name == "email_status" and status is not None:
        return _KINDS.get(status.lower())
    return None

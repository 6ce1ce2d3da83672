"""Deterministic fake contacts: realistic names, 0–3 emails each, some phones, a few shared emails."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from .store import Contact, Values

if TYPE_CHECKING:
    from .state import KommoSandboxState

# (display form, latin form for the email local part)
FIRST_NAMES = [
    ("Иван", "ivan"),
    ("Мария", "maria"),
    ("Алексей", "alexey"),
    ("Ольга", "olga"),
    ("Дмитрий", "dmitry"),
    ("Анна", "anna"),
    ("Сергей", "sergey"),
    ("Екатерина", "ekaterina"),
    ("Наталья", "natalia"),
    ("Михаил", "mikhail"),
    ("Татьяна", "tatiana"),
    ("Андрей", "andrey"),
    ("Юлия", "yulia"),
    ("Павел", "pavel"),
    ("John", "john"),
    ("Emily", "emily"),
    ("Michael", "michael"),
    ("Sarah", "sarah"),
    ("David", "david"),
    ("Jessica", "jessica"),
    ("James", "james"),
    ("Laura", "laura"),
    ("Robert", "robert"),
    ("Olivia", "olivia"),
    ("João", "joao"),
    ("Ana", "ana"),
    ("Lucas", "lucas"),
    ("Beatriz", "beatriz"),
    ("Mateus", "mateus"),
    ("Camila", "camila"),
    ("Gabriel", "gabriel"),
    ("Júlia", "julia"),
    ("Pedro", "pedro"),
    ("Larissa", "larissa"),
    ("José", "jose"),
    ("Sofía", "sofia"),
    ("Carlos", "carlos"),
    ("Valentina", "valentina"),
]
LAST_NAMES = [
    ("Иванов", "ivanov"),
    ("Смирнова", "smirnova"),
    ("Кузнецов", "kuznetsov"),
    ("Попова", "popova"),
    ("Соколов", "sokolov"),
    ("Лебедева", "lebedeva"),
    ("Козлов", "kozlov"),
    ("Новикова", "novikova"),
    ("Морозов", "morozov"),
    ("Волкова", "volkova"),
    ("Smith", "smith"),
    ("Johnson", "johnson"),
    ("Williams", "williams"),
    ("Brown", "brown"),
    ("Jones", "jones"),
    ("Miller", "miller"),
    ("Davis", "davis"),
    ("Wilson", "wilson"),
    ("Silva", "silva"),
    ("Santos", "santos"),
    ("Oliveira", "oliveira"),
    ("Souza", "souza"),
    ("Pereira", "pereira"),
    ("Costa", "costa"),
    ("Rodrigues", "rodrigues"),
    ("Almeida", "almeida"),
    ("García", "garcia"),
    ("Martínez", "martinez"),
    ("López", "lopez"),
    ("González", "gonzalez"),
]
DOMAINS = ["example.com", "example.org", "example.net", "mail.example.com", "corp.example.org"]


def seed_contacts(
    state: KommoSandboxState, subdomain: str, count: int, seed: int = 0, *, fire_webhooks: bool = False
) -> list[int]:
    """Create ``count`` contacts in account ``subdomain``, deterministic for ``seed`` (ids follow the
    sandbox's id sequence; timestamps are offsets from the sandbox clock's now). Returns the new ids.

    Each contact has 0–3 emails (10 % none, 60 % one, 22 % two, 8 % three), half have a phone, ~3 % of
    emails are upper-cased variants and ~2 % of contacts reuse an email of an earlier contact.
    By default no webhooks fire (a seed is an import, not a user action).
    """
    account = state.account(subdomain)
    rng = random.Random(seed)
    now = state.clock.now()
    email_field = account.field_by_code("EMAIL")
    phone_field = account.field_by_code("PHONE")
    assert email_field is not None
    assert email_field.enums
    assert phone_field is not None
    assert phone_field.enums
    email_enums = [e.id for e in email_field.enums]
    phone_mob = next(e.id for e in phone_field.enums if e.value == "MOB")
    issued: list[str] = []
    ids: list[int] = []
    for n in range(count):
        first, first_l = rng.choice(FIRST_NAMES)
        last, last_l = rng.choice(LAST_NAMES)
        roll = rng.random()
        n_emails = 0 if roll < 0.10 else 1 if roll < 0.70 else 2 if roll < 0.92 else 3
        emails: Values = []
        for k in range(n_emails):
            if issued and rng.random() < 0.02:
                addr = rng.choice(issued)
            else:
                style = rng.randrange(4)
                local = (
                    f"{first_l}.{last_l}",
                    f"{first_l[0]}{last_l}",
                    f"{first_l}_{last_l}{rng.randint(60, 99)}",
                    f"{last_l}.{first_l}",
                )[style]
                addr = f"{local}{n}{k or ''}@{rng.choice(DOMAINS)}"
                if rng.random() < 0.03:
                    addr = addr.capitalize().replace("@example", "@Example")
                issued.append(addr)
            enum = email_enums[0] if k == 0 else rng.choice(email_enums)
            emails.append((addr, enum))
        fields: list[tuple[int, Values]] = []
        if rng.random() < 0.5:
            fields.append((phone_field.id, [(f"+55119{rng.randint(10_000_000, 99_999_999)}", phone_mob)]))
        if emails:
            fields.append((email_field.id, emails))
        created = now - rng.randint(86_400, 365 * 86_400)
        updated = created + rng.randint(0, now - created)
        cid = state.next_contact_id()
        contact = Contact(
            cid,
            name=f"{first} {last}",
            first_name=first,
            last_name=last,
            responsible_user_id=account.current_user_id,
            created_by=account.current_user_id,
            updated_by=account.current_user_id,
            created_at=created,
            updated_at=updated,
            fields=fields,
            tags=[],
        )
        account.add(contact)
        ids.append(cid)
        if fire_webhooks:
            state.dispatcher.emit(account, "add", contact)
    return ids

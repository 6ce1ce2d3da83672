"""Deterministic fake contacts: realistic names, 0–3 emails each, some phones, a few shared emails."""

from __future__ import annotations

import gc
import random
from typing import TYPE_CHECKING, Any

from .store import Contact, Values, gc_paused

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
    By default no webhooks fire (a seed is an import, not a user action). Large seeds end with
    ``gc.freeze()`` (see below).
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
    rnd = rng.random  # floats only: random.randint/choice cost several times more per call

    def pick(seq: list[Any]) -> Any:
        return seq[int(rnd() * len(seq))]

    user = account.current_user_id
    with gc_paused():
        for n in range(count):
            first, first_l = pick(FIRST_NAMES)
            last, last_l = pick(LAST_NAMES)
            roll = rnd()
            n_emails = 0 if roll < 0.10 else 1 if roll < 0.70 else 2 if roll < 0.92 else 3
            emails: Values = []
            for k in range(n_emails):
                if issued and rnd() < 0.02:
                    addr = pick(issued)
                else:
                    style = int(rnd() * 4)
                    if style == 0:
                        local = f"{first_l}.{last_l}"
                    elif style == 1:
                        local = f"{first_l[0]}{last_l}"
                    elif style == 2:
                        local = f"{first_l}_{last_l}{60 + int(rnd() * 40)}"
                    else:
                        local = f"{last_l}.{first_l}"
                    addr = f"{local}{n}{k or ''}@{pick(DOMAINS)}"
                    if rnd() < 0.03:
                        addr = addr.capitalize().replace("@example", "@Example")
                    issued.append(addr)
                emails.append((addr, email_enums[0] if k == 0 else pick(email_enums)))
            fields: list[tuple[int, Values]] = []
            if rnd() < 0.5:
                fields.append(
                    (phone_field.id, [(f"+55119{10_000_000 + int(rnd() * 90_000_000)}", phone_mob)])
                )
            if emails:
                fields.append((email_field.id, emails))
            created = now - 86_400 - int(rnd() * 364 * 86_400)
            updated = created + int(rnd() * (now - created))
            cid = state.next_contact_id()
            contact = Contact(
                cid,
                name=f"{first} {last}",
                first_name=first,
                last_name=last,
                responsible_user_id=user,
                created_by=user,
                updated_by=user,
                created_at=created,
                updated_at=updated,
                fields=fields,
                tags=[],
            )
            account.add(contact)
            ids.append(cid)
            if fire_webhooks:
                state.dispatcher.emit(account, "add", contact)
    if count >= 10_000:
        # Move the new objects to the GC's permanent generation: otherwise every full collection rescans
        # millions of contacts (seconds at 1M) and stalls the sandbox mid-benchmark. Process-wide, but
        # benign: it only spares those objects from cyclic collection.
        gc.collect()
        gc.freeze()
    return ids

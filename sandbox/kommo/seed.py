"""Deterministic fake contacts: realistic names, 0–3 emails each, some phones, a few shared emails; optionally
a value in every custom-field type and responsible users spread over the account's users."""

from __future__ import annotations

import calendar
import gc
import random
from typing import TYPE_CHECKING, Any

from .store import Account, Contact, FieldDef, Values, gc_paused

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

# One user field of each type (name, type, options), made once per account by the custom_fields option.
SEED_FIELDS: list[tuple[str, str, list[str] | None]] = [
    ("Company", "text", None),
    ("About", "textarea", None),
    ("Score", "numeric", None),
    ("Newsletter", "checkbox", None),
    ("Plan", "select", ["Free", "Basic", "Pro", "Enterprise"]),
    ("Interests", "multiselect", ["Shoes", "Bags", "Watches", "Jewellery"]),
    ("Channel", "radiobutton", ["Referral", "Search", "Ads"]),
    ("First order", "date", None),
    ("Last call", "date_time", None),
    ("Birthday", "birthday", None),
    ("Website", "url", None),
    ("Street address", "streetaddress", None),
    ("Address", "smart_address", None),
]
SEED_USERS = ["Marina Costa", "Pedro Alves", "Lucía Fernández"]
COMPANIES = ["Acme Ltda", "Globex", "Initech", "Umbrella S.A.", "Тройка", "Soylent", "Vandelay Imports"]
STREETS = ["Rua Augusta", "Avenida Paulista", "Calle Mayor", "Тверская улица", "Baker Street", "Main St"]
CITIES = [("São Paulo", "SP", "BR"), ("Madrid", "MD", "ES"), ("Москва", "", "RU"), ("London", "", "GB")]


def seed_fields(state: KommoSandboxState, account: Account) -> list[FieldDef]:
    """The account's ``SEED_FIELDS`` and ``SEED_USERS``, made on the first call and reused after."""
    if account.seed_field_ids is None:
        account.seed_field_ids = [
            state.add_field(account, name, ftype, enums=options).id for name, ftype, options in SEED_FIELDS
        ]
        for name in SEED_USERS:
            state.add_user(account, name)
    return [account.fields[fid] for fid in account.seed_field_ids]


def _seed_value(rng: random.Random, f: FieldDef, now: int) -> Values:
    """A value of field ``f`` as the store holds it (what an API write of that type would store)."""
    t = f.type
    enums = f.enums or []
    if t == "text":
        return [(rng.choice(COMPANIES), None)]
    if t == "textarea":
        return [
            (
                f"Met at the {rng.choice(['fair', 'webinar', 'shop'])}.\nCall back in {rng.randint(1, 9)} weeks.",
                None,
            )
        ]
    if t == "numeric":
        return [(str(rng.randint(0, 1000)) if rng.random() < 0.7 else f"{rng.uniform(0, 100):.2f}", None)]
    if t == "checkbox":
        return [(rng.random() < 0.5, None)]
    if t in ("select", "radiobutton"):
        e = rng.choice(enums)
        return [(e.value, e.id)]
    if t == "multiselect":
        chosen = set(rng.sample(range(len(enums)), rng.randint(1, 3)))
        return [(e.value, e.id) for i, e in enumerate(enums) if i in chosen]
    if t == "date":
        return [((now // 86_400 - rng.randint(0, 3 * 365)) * 86_400, None)]  # a day: UTC midnight
    if t == "date_time":
        return [(now - rng.randint(0, 365 * 86_400), None)]
    if t == "birthday":
        return [
            (
                calendar.timegm((rng.randint(1950, 2005), rng.randint(1, 12), rng.randint(1, 28), 0, 0, 0)),
                None,
            )
        ]
    if t == "url":
        return [
            (f"https://{rng.choice(COMPANIES).split()[0].lower()}{rng.randint(1, 99)}.example.com/", None)
        ]
    if t == "streetaddress":
        return [(f"{rng.choice(STREETS)}, {rng.randint(1, 2000)}", None)]
    if t == "smart_address":
        city, region, country = rng.choice(CITIES)
        parts = {
            "address_line_1": f"{rng.choice(STREETS)}, {rng.randint(1, 2000)}",
            "address_line_2": f"apt {rng.randint(1, 300)}" if rng.random() < 0.3 else "",
            "city": city,
            "state": region,
            "zip": f"{rng.randint(10_000, 99_999)}" if rng.random() < 0.7 else "",
            "country": country,
        }
        return [(parts[e.value], e.id) for e in enums if parts.get(e.value)]
    raise ValueError(f"no seed values for type {t}")


def _custom_values(rng: random.Random, fields: list[FieldDef], now: int) -> list[tuple[int, Values]]:
    if rng.random() < 0.15:
        return []  # some contacts carry none of them
    return [(f.id, _seed_value(rng, f, now)) for f in fields if rng.random() < 0.75]


def seed_contacts(
    state: KommoSandboxState,
    subdomain: str,
    count: int,
    seed: int = 0,
    *,
    fire_webhooks: bool = False,
    custom_fields: bool = False,
) -> list[int]:
    """Create ``count`` contacts in account ``subdomain``, deterministic for ``seed`` (ids follow the
    sandbox's id sequence; timestamps are offsets from the sandbox clock's now). Returns the new ids.

    Each contact has 0–3 emails (10 % none, 60 % one, 22 % two, 8 % three), half have a phone, ~3 % of
    emails are upper-cased variants and ~2 % of contacts reuse an email of an earlier contact.
    By default no webhooks fire (a seed is an import, not a user action). Large seeds end with
    ``gc.freeze()`` (see below).

    ``custom_fields``: the account gets (once) one user field of every type (``SEED_FIELDS``) and three more
    users (``SEED_USERS``); ~85 % of contacts then carry values in about three quarters of those fields, and
    each contact's responsible user is one of the account's users. These draws come from a second generator,
    so names, emails, phones and timestamps are the same as without the option.
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
    extra_fields = seed_fields(state, account) if custom_fields else []
    user_ids = [u.id for u in account.users]
    extra_rng = random.Random(f"custom_fields:{seed}")
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
            responsible = user
            if custom_fields:
                responsible = extra_rng.choice(user_ids)
                fields += _custom_values(extra_rng, extra_fields, now)
            cid = state.next_contact_id()
            contact = Contact(
                cid,
                name=f"{first} {last}",
                first_name=first,
                last_name=last,
                responsible_user_id=responsible,
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

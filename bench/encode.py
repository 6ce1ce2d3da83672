"""Encoding an importContacts body: the standard library's ``urlencode`` against ``form_encode``, side by side
in one run, on bodies built by the client's own ``build_import_params`` from 500 rows.

Two shapes: the default spec (address, ``Name``, one list) and the 10-field spec's (ten fields, a phone,
three list columns; non-ASCII names). Each encoder runs ``--repeat`` rounds of ``--number`` bodies, alternating,
and the best round counts (the least disturbed by the rest of the machine).

    .venv/bin/python -m bench.encode [--number 50] [--repeat 7]

Reports ms per body for each encoder and their ratio; the two bodies are checked byte-identical first.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from urllib.parse import urlencode

from app.connectors.base import ImportRow
from app.connectors.unisender.form import form_encode
from app.connectors.unisender.imports import Params, build_import_params
from bench.common import machine


def _default_rows() -> list[ImportRow]:
    return [
        ImportRow(
            email=f"contact{i}.name@example.com", fields=(("Name", f"Contact {i} Name"),), list_ids=(7,)
        )
        for i in range(500)
    ]


def _spec_rows() -> list[ImportRow]:
    rows = []
    for i in range(500):
        fields = (
            ("Name", f"Анна Иванова {i}"),
            ("first_name", "Анна"),
            ("last_name", f"Иванова-{i}"),
            ("manager", "Sales Team / Ольга"),
            ("kommo_tags", "vip, newsletter, 2026"),
            ("created", "01.12.2026"),
            ("city", "Санкт-Петербург"),
            ("score", str(i * 3)),
            ("consent", "1"),
            ("site", f"https://example.com/u/{i}?ref=crm&x=1"),
        )
        rows.append(
            ImportRow(
                email=f"anna.ivanova+{i}@example.com",
                fields=fields,
                list_ids=(7, 8),
                excluded_list_ids=(9,),
                phone=f"+7912{i:07d}",
            )
        )
    return rows


def _best(fn: Callable[[], object], number: int) -> float:
    started = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - started) / number


def measure(params: Params, number: int, repeat: int) -> tuple[float, float, int]:
    """Best seconds per body for urlencode and form_encode, and the body's size."""
    body = urlencode(params).encode("ascii")
    assert form_encode(params) == body, "form_encode must write what urlencode writes"
    old, new = [], []
    for _ in range(repeat):
        old.append(_best(lambda: urlencode(params).encode("ascii"), number))
        new.append(_best(lambda: form_encode(params), number))
    return min(old), min(new), len(body)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--number", type=int, default=50)
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    print(f"# importContacts body encoding — {machine()}")
    print(f"{'shape':>14} {'bytes':>8} | {'urlencode ms':>12} {'form_encode ms':>14} | {'ratio':>6}")
    for shape, rows in (("default spec", _default_rows()), ("10-field spec", _spec_rows())):
        old, new, size = measure(build_import_params(rows), args.number, args.repeat)
        print(f"{shape:>14} {size:>8} | {old * 1000:>12.2f} {new * 1000:>14.2f} | {new / old:>6.2f}")


if __name__ == "__main__":
    main()

"""Regenerates the README's results sections from ``benchmarks/results/*.json``.

Run ``python -m benchmarks.readme`` (``make bench`` does it last). Each section sits between
``<!-- results:NAME -->`` and ``<!-- /results:NAME -->``; nothing between the markers is typed by hand.
"""

from __future__ import annotations

import json
import os
import re

from aa_tflite.files import atomic_write

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")


def _plan_quality() -> list[str]:
    from benchmarks.plan_quality import RESULTS, table

    with open(RESULTS) as f:
        rows = json.load(f)
    lines = table(rows)
    for r in rows:
        if "kl_from_float_int8" in r:
            lines.append("")
            lines.append(f"{r['model']}: output KL from float {r['kl_from_float_int8']:.4f} (int8) "
                         f"and {r['kl_from_float_planned']:.4f} (planned) nats; "
                         f"{r['four_bit_sites']} of {r['sites']} sites at 4 bits; "
                         f"{r['options_measured']} options measured; {len(r['repairs'])} repairs.")
    return lines


SECTIONS = {"plan_quality": _plan_quality}


def main() -> None:
    with open(README) as f:
        text = f.read()
    for name, make in SECTIONS.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(text):
            raise SystemExit(f"README.md has no <!-- results:{name} --> section")
        body = "\n".join(make())
        text = pattern.sub(lambda m, body=body: m.group(1) + body + "\n" + m.group(2), text)
    atomic_write(README, text)
    print(f"Regenerated {', '.join(SECTIONS)} in README.md")


if __name__ == "__main__":
    main()

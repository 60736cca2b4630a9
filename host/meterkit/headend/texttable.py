"""Aligned text tables, as the read-out commands print them (status, audit, relay status)."""

from __future__ import annotations


def text_table(head: tuple, body: list[tuple], right: set[int] | frozenset[int] = frozenset()) -> str:
    """Rows of text cells as aligned columns (`right`: the columns aligned right), the head first."""
    widths = [max(len(x[i]) for x in [head, *body]) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w) if i in right else c.ljust(w)
                               for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip()
                     for row in [head, *body])

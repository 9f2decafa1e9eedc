"""The one table printer every bench script uses: aligned text, or Markdown for BENCHMARKS.md."""

from __future__ import annotations


def print_table(header: list[str], rows: list[list[str]], markdown: bool = False) -> None:
    """Print `rows` under `header`; the first column left-aligned, numbers right-aligned in Markdown."""
    if markdown:
        print("| " + " | ".join(header) + " |")
        print("|---|" + "---:|" * (len(header) - 1))
        for row in rows:
            print("| " + " | ".join(row) + " |")
        return
    widths = [max(len(title), *(len(row[i]) for row in rows)) for i, title in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)))

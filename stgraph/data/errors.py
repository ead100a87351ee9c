"""Errors and reports for input data: every problem names its file, row or column."""

from __future__ import annotations

from dataclasses import dataclass, field


class DataValidationError(ValueError):
    """Bad input data. The message names the file, the row/column and what was expected.

    Rows are 1-based file lines (the header is line 1), so a user can open the file at them.
    """

    def __init__(
        self,
        what: str,
        *,
        file: str | None = None,
        row: int | list[int] | None = None,
        column: str | None = None,
        expected: str | None = None,
    ):
        self.what, self.file, self.row, self.column, self.expected = what, file, row, column, expected
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            rows = row if isinstance(row, list) else [row]
            shown = ", ".join(str(r) for r in rows[:5]) + (f" (+{len(rows) - 5} more)" if len(rows) > 5 else "")
            where.append(("line " if len(rows) == 1 else "lines ") + shown)
        if column is not None:
            where.append(f"column '{column}'")
        msg = ": ".join([", ".join(where), what]) if where else what
        if expected:
            msg += f"; expected {expected}"
        super().__init__(msg)


@dataclass
class ValidationReport:
    """What a reader repaired or masked. Nothing is dropped silently: each count is here."""

    source: str = ""
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, key: str, n: int, note: str | None = None) -> None:
        if n:
            self.counts[key] = self.counts.get(key, 0) + int(n)
            if note:
                self.notes.append(note)

    def to_dict(self) -> dict:
        return {"source": self.source, "counts": dict(self.counts), "notes": list(self.notes)}

    def __str__(self) -> str:
        if not self.counts:
            return f"{self.source}: no values repaired or masked"
        lines = [f"{self.source}:"] + [f"  {k}: {v}" for k, v in self.counts.items()]
        return "\n".join(lines)

"""One line of ``cinestream doctor``: what was checked, what was found, and the fix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Check:
    """One line of ``doctor``: a status, what was checked, what was found, the fix."""

    status: str  # OK | WARN | FAIL
    name: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        """``STATUS name detail  -> fix: command`` (the fix only when something is wrong)."""
        fix = f"  -> fix: {self.fix}" if self.fix and self.status != "OK" else ""
        return f"{self.status:<4} {self.name:<11} {self.detail}{fix}"

"""What a check reports: findings (something is off) and notes (a check skipped)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    check: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: {self.subject}: {self.detail}"


@dataclass
class Report:
    findings: list[Finding] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checked: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.findings

    def add(self, check: str, subject: str, detail: str) -> None:
        self.findings.append(Finding(check, subject, detail))

    def of(self, check: str) -> list[Finding]:
        return [f for f in self.findings if f.check == check]

    def render(self) -> str:
        counts = ", ".join(f"{n} {what}" for what, n in self.checked.items())
        lines = [f"checked {counts}" if counts else "checked nothing"]
        lines += [f"note: {note}" for note in self.notes]
        if self.clean:
            lines.append("ok: no findings")
        else:
            lines.append(f"{len(self.findings)} findings:")
            lines += [f"  {f}" for f in self.findings]
        return "\n".join(lines)

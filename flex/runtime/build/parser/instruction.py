"""One parsed Dockerfile instruction, before variable expansion."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Heredoc", "Instruction"]


@dataclass(frozen=True)
class Heredoc:
    name: str
    content: str
    expand: bool  # <<EOF expands variables in the body; <<'EOF' / <<"EOF" does not
    strip_tabs: bool = False  # <<-EOF


@dataclass
class Instruction:
    cmd: str                 # upper-case keyword: FROM, RUN, ...
    args: list[str]          # JSON form: the array; shell form: [the rest of the line]
    json_form: bool
    flags: dict[str, list[str]] = field(default_factory=dict)  # --name=value, repeatable
    line: int = 0            # 1-based line of the keyword
    file: str = "Dockerfile"
    original: str = ""       # the logical line as written (for history and errors)
    heredocs: list[Heredoc] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def flag(self, name: str) -> str | None:
        values = self.flags.get(name)
        return values[-1] if values else None

"""Instructions → stages: meta ARGs before the first FROM, ``FROM x AS name``, which stages a target needs."""

from __future__ import annotations

from dataclasses import dataclass, field

from flex.errors import InvalidArgument, NotFound
from flex.runtime.build.expand import expand_word, expand_words
from flex.runtime.build.parser.instruction import Instruction

__all__ = ["Stage", "needed_stages", "split_stages", "stage_by_ref"]


@dataclass
class Stage:
    index: int
    name: str | None
    base: str                     # FROM's image or stage name, expanded with the meta args
    platform: str | None
    from_instruction: Instruction
    instructions: list[Instruction] = field(default_factory=list)


def _arg_pairs(ins: Instruction, env: dict[str, str]) -> list[tuple[str, str | None]]:
    out = []
    for word in expand_words(ins.args[0], env, where=ins.where):
        name, eq, value = word.partition("=")
        if not name:
            raise InvalidArgument(f"{ins.where}: ARG needs a name")
        out.append((name, value if eq else None))
    return out


def split_stages(instructions: list[Instruction], build_args: dict[str, str],
                 predefined: dict[str, str]) -> tuple[list[Stage], dict[str, str]]:
    """The stages, and the meta args (ARGs before the first FROM with their values)."""
    meta: dict[str, str] = dict(predefined)
    declared: dict[str, str] = {}
    stages: list[Stage] = []
    for ins in instructions:
        if ins.cmd == "FROM":
            words = expand_words(ins.args[0], meta, where=ins.where)
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
                raise InvalidArgument(f"{ins.where}: FROM takes an image and an optional 'AS name'")
            base = words[0]
            if not base:
                raise InvalidArgument(f"{ins.where}: FROM {ins.args[0]!r} expands to an empty image name",
                                      hint="give the build arg it uses (--build-arg) or a default in ARG")
            name = words[2].lower() if len(words) == 3 else None
            if name is not None and any(s.name == name for s in stages):
                raise InvalidArgument(f"{ins.where}: stage name {name!r} is used twice")
            plat = ins.flag("platform")
            stages.append(Stage(len(stages), name, base,
                                expand_word(plat, meta, where=ins.where) if plat else None, ins))
            continue
        if not stages:
            if ins.cmd != "ARG":
                raise InvalidArgument(f"{ins.where}: {ins.cmd} before the first FROM",
                                      hint="only ARG may come before FROM")
            for name, value in _arg_pairs(ins, meta):
                v = build_args.get(name, value)
                if v is not None:
                    meta[name] = v
                    declared[name] = v
                else:
                    meta.pop(name, None)
            continue
        stages[-1].instructions.append(ins)
    if not stages:
        raise InvalidArgument("the Dockerfile has no FROM instruction")
    return stages, declared


def stage_by_ref(stages: list[Stage], ref: str, before: int) -> Stage | None:
    """The stage ``ref`` (a name or an index) names among the first ``before`` stages, or None."""
    for s in stages[:before]:
        if s.name == ref.lower() or (ref.isdigit() and int(ref) == s.index):
            return s
    return None


def needed_stages(stages: list[Stage], target: str | None) -> tuple[Stage, list[Stage]]:
    """The target stage and every stage it needs (FROM, COPY --from, RUN --mount from=), in order."""
    if target is None:
        tgt = stages[-1]
    else:
        found = [s for s in stages if s.name == target.lower()]
        if not found:
            names = ", ".join(s.name for s in stages if s.name) or "none"
            raise NotFound(f"target stage {target!r} not found in the Dockerfile", hint=f"its stages: {names}")
        tgt = found[0]
    need: set[int] = set()

    def visit(s: Stage) -> None:
        if s.index in need:
            return
        need.add(s.index)
        refs = [s.base]
        for ins in s.instructions:
            if ins.cmd in ("COPY", "ADD") and ins.flag("from"):
                refs.append(ins.flag("from") or "")
            for m in ins.flags.get("mount", []):
                for part in m.split(","):
                    if part.startswith("from="):
                        refs.append(part[5:])
        for ref in refs:
            dep = stage_by_ref(stages, ref, s.index)
            if dep is not None:
                visit(dep)

    visit(tgt)
    return tgt, [s for s in stages if s.index in need]

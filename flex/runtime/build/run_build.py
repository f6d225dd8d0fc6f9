"""``build()``'s body: read the Dockerfile, pick the stages the target needs, run them, store the image."""

from __future__ import annotations

import shutil
from typing import TYPE_CHECKING

from flex.errors import InvalidArgument, NotFound

if TYPE_CHECKING:
    from flex.runtime.build import BuildOptions, BuildResult
    from flex.runtime.build.builder import Builder, StepContext
    from flex.runtime.build.stages import Stage

__all__ = ["run_build"]


def run_build(opts: BuildOptions) -> BuildResult:
    from flex.runtime.base.home import Home
    from flex.runtime.build import BuildResult
    from flex.runtime.build.builder import Builder, StepContext
    from flex.runtime.build.cache import BuildCache
    from flex.runtime.build.dockerignore import read_ignore
    from flex.runtime.build.image import write_image
    from flex.runtime.build.parser.dockerfile import parse_dockerfile
    from flex.runtime.build.run import remove_orphans
    from flex.runtime.build.settings import load_settings
    from flex.runtime.build.stages import needed_stages, split_stages
    from flex.runtime.build.steps import PROXY_ARGS, predefined_args
    from flex.runtime.build.timings import phase, report, reset
    from flex.runtime.containers.store import Containers
    from flex.runtime.images.store import ImageStore
    from flex.runtime.leases.leases import lease
    from flex.runtime.unpack.userns import store_ownership

    reset()
    context = opts.context.resolve()
    if not context.is_dir():
        raise NotFound(f"build context {opts.context} is not a directory")
    dockerfile = (opts.dockerfile or context / "Dockerfile")
    try:
        text = opts.dockerfile_text if opts.dockerfile_text is not None else dockerfile.read_text()
    except FileNotFoundError:
        raise NotFound(f"{dockerfile}: no such Dockerfile", hint="give one with -f") from None
    except (OSError, UnicodeDecodeError) as err:
        raise InvalidArgument(f"{dockerfile}: cannot read it: {err}") from err
    if opts.compression not in ("zstd", "gzip"):
        raise InvalidArgument(f"compression {opts.compression!r}: expected zstd or gzip")
    instructions = parse_dockerfile(text, file=str(dockerfile.name if dockerfile.parent == context else dockerfile))
    predefined = {k: opts.build_args[k] for k in PROXY_ARGS if k in opts.build_args}
    stages, meta = split_stages(instructions, opts.build_args, {**predefined_args(), **predefined})
    target, needed = needed_stages(stages, opts.target)
    home = Home.open(opts.home)
    images = ImageStore(home, ownership=store_ownership())
    for tag in opts.tags:
        images.normalize(tag)  # a bad -t is refused before the build, not after it
    containers = Containers(home, images.db)
    settings = load_settings(home.root)
    remove_orphans(containers)  # the step containers of a build killed earlier
    with lease(images.db) as held:
        ctx = StepContext(images=images, containers=containers, cache=BuildCache(images.db), held=held,
                          context=context, ignore=read_ignore(context, dockerfile), settings=settings,
                          build_args=dict(opts.build_args), secrets=dict(opts.secrets), no_cache=opts.no_cache,
                          compression=opts.compression, progress=opts.progress, stage_states={}, stages=stages)
        b = Builder(ctx)
        try:
            _stages(b, ctx, needed, meta, opts.build_args)
        finally:
            for path in b.cleanup:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
        final = ctx.stage_states[target.index]
        with phase("image.write"):
            config_digest, manifest_digest, names = write_image(b, final, opts.labels, opts.tags)
    report(b.say)
    return BuildResult(image_id=config_digest, manifest_digest=manifest_digest, names=names)


def _stages(b: Builder, ctx: StepContext, needed: list[Stage], meta: dict[str, str],
            build_args: dict[str, str]) -> None:
    from flex.runtime.build.steps import PROXY_ARGS, run_instruction

    for stage in needed:
        b.say(f"stage {stage.name or stage.index}: FROM {stage.base}")
        st = b.start(stage, meta)
        for k in PROXY_ARGS:
            if k in build_args:
                st.args[k] = build_args[k]
        for ins in stage.instructions:
            st = run_instruction(b, ins, st)
        ctx.stage_states[stage.index] = st

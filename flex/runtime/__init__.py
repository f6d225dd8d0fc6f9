"""flex's own containerd: content, images, snapshots, containers, networking, builds.

Never imports flex.runner, flex.controlplane, flex.api, flex.client or flex.cli: it is usable alone
through ``flex runtime ...`` and ``flex image ...``. Only flex.errors is shared.
"""

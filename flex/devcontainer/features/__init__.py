"""Dev Container Features as the spec and the reference CLI define them: pure spec logic, no I/O.

    reference.py   a user's feature id → an OCI, local-folder or https-tarball reference
    metadata.py    devcontainer-feature.json read and validated against its schema
    options.py     the user's options checked against the feature's, turned into install.sh's env
    order.py       install order: dependsOn (resolved recursively), installsAfter, overrideFeatureInstallOrder
    merge.py       image metadata entries, their merge, the ``devcontainer.metadata`` label
    lockfile.py    devcontainer-lock.json
    dockerfile.py  the ordered features as a generated Dockerfile and build context, one layer per feature

Fetching (registries, https, folders) lives in flex/runner/build/, which hands this package the files.
"""

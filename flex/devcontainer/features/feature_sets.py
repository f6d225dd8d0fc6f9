"""``featuresConfiguration.featureSets`` as `devcontainer read-configuration --include-features-configuration`
prints it: one set per feature, in install order, with its source and its merged metadata."""

from __future__ import annotations

from typing import Any

from flex.devcontainer.features.order import Feature

__all__ = ["feature_sets", "source_information"]


def source_information(f: Feature) -> dict[str, Any]:
    ref = f.ref
    if ref.kind == "file-path":
        return {"type": "file-path", "resolvedFilePath": ref.local_path, "userFeatureId": ref.user_id}
    if ref.kind == "direct-tarball":
        return {"type": "direct-tarball", "tarballUri": ref.url, "userFeatureId": ref.user_id}
    feature_ref: dict[str, Any] = {
        "id": ref.id, "owner": ref.path.split("/", 1)[0], "namespace": ref.namespace, "registry": ref.registry,
        "resource": ref.resource, "path": ref.path, "version": ref.version,
    }
    feature_ref["digest" if ref.digest else "tag"] = ref.digest or ref.tag or "latest"
    out: dict[str, Any] = {"type": "oci"}
    if f.resolved.manifest is not None:
        out["manifest"] = f.resolved.manifest
    out.update({"manifestDigest": f.resolved.digest, "featureRef": feature_ref, "userFeatureId": ref.user_id,
                "userFeatureIdWithoutVersion": ref.user_id.split("@", 1)[0] if ref.digest
                else ref.user_id.rsplit(":", 1)[0] if ref.tag else ref.user_id})
    return out


def feature_sets(ordered: list[Feature]) -> list[dict[str, Any]]:
    sets = []
    for i, f in enumerate(ordered):
        feature = dict(f.metadata)
        feature.setdefault("name", f.user_id)
        feature["value"] = f.options
        feature["included"] = True
        feature["cachePath"] = f.resolved.folder
        feature["consecutiveId"] = f"{f.ref.id}_{i}"
        sets.append({"sourceInformation": source_information(f), "features": [feature], "internalVersion": "2"})
    return sets

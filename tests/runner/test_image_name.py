"""The image a devcontainer folder builds to is named after the folder (the reference CLI's ``vsc-<name>-<hash>``):
every folder name must give a name the image store accepts, or the build fails after all its work."""

from __future__ import annotations

import pytest

from flex.runner.build.image import image_name_for
from flex.runtime.images.reference import parse_reference


@pytest.mark.parametrize("folder", ["gq26vz1_-8e", "my_-app", "a._b", "x-_y", "__init__", "a...b", "web--app",
                                    "My Project (copy)", "-lead", "trail_", "ünïcode", "a__b", "a___b"])
def test_a_folder_of_any_name_gives_a_valid_image_name(folder: str) -> None:
    name = image_name_for(f"vsc-{folder}-0123abcd")
    parse_reference(name)  # raises on an invalid name
    assert name.startswith("vsc-") and name.endswith("0123abcd")


def test_names_that_are_valid_already_are_kept() -> None:
    for ok in ("vsc-web--app-0a", "vsc-a_b-0a", "vsc-a__b-0a", "vsc-a.b-0a"):
        assert image_name_for(ok) == ok

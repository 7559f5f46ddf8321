"""The image-builder interface: how ``cci build`` makes an image."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from cci_core.driver import Driver, ImageInfo, OutputHandler


@dataclass(frozen=True)
class BuildRequest:
    """What to build.

    :param alias: the alias the finished image gets (``cci``, or a custom image's name); the
        image is published as ``<alias>-YYYYMMDD-HHMMSS`` and ``alias`` moved to it.
    :param base: the image to start from (a local alias, or ``images:<alias>``).
    :param script: the build script's content (run as root with bash in the build container).
    :param offline: do not wait for or repair the network (for scripts that need none).
    :param options: builder-specific settings (e.g. ``mirror`` for the debootstrap builder).
    """

    alias: str
    base: str
    script: bytes = b""
    offline: bool = False
    options: Mapping[str, str] = field(default_factory=dict)


class ImageBuilder(ABC):
    """Builds an image and publishes it; registered with ``register.add_image_builder(cls)``.

    A build either publishes a complete image or leaves nothing behind (no
    image, no build container).
    """

    name: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def build(self, driver: Driver, request: BuildRequest, output: OutputHandler) -> ImageInfo:
        """Build, publish and return the image; progress and the script's output go to ``output``."""

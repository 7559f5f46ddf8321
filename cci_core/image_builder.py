"""The image-builder interface: how ``cci build`` makes an image."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from cci_core.driver import Driver


@dataclass(frozen=True)
class BuildRequest:
    """What to build: the alias to publish, the base image and an optional build script."""

    alias: str
    base: str | None = None
    script: Path | None = None
    force: bool = False


class ImageBuilder(ABC):
    """Builds an image and publishes it under an alias.

    Subclasses are registered with ``register.add_image_builder(cls)``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def build(self, driver: Driver, request: BuildRequest) -> str:
        """Build the image and return the fingerprint of what was published."""

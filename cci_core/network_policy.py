"""The network-policy interface: what a container may reach, chosen by ``[network] mode``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from cci_core.config.schema import NetworkConfig


class NetworkPolicy(ABC):
    """A named network mode (``restricted``, ``allowlist``, ``open``, or a plugin's own).

    Subclasses are registered with ``register.add_network_policy(cls)``.
    """

    name: ClassVar[str]
    summary: ClassVar[str]

    @abstractmethod
    def validate(self, settings: NetworkConfig) -> None:
        """Reject settings this policy cannot enforce, with a :class:`~cci_core.errors.ConfigError`.

        Called before anything is launched.
        """

"""Registers the Incus driver, its ``[incus]`` config section and its doctor checks; the driver loads when used."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cci_core.api import Lazy, Register, hookimpl

if TYPE_CHECKING:
    from cci_core.api import Check, Config, Container, LaunchContext


@hookimpl
def cci_register(register: Register) -> None:
    from cci_builtin_plugins.incus.settings import SECTION, IncusSettings

    register.add_driver(Lazy("incus", "cci_builtin_plugins.incus.driver:IncusDriver"))
    register.add_settings(SECTION, IncusSettings)


@hookimpl
def cci_doctor_checks(config: Config) -> list[Check] | None:
    """The Incus checks (:mod:`.doctor`), when Incus is the configured driver."""
    from cci_builtin_plugins.incus.doctor import DRIVER, incus_checks

    if config.defaults.driver != DRIVER:
        return None
    import os

    return incus_checks(config, os.environ)


@hookimpl
def cci_pre_start(ctx: LaunchContext, container: Container, restart: bool) -> None:
    """``[limits]`` on an Incus container at each start by cci (a launch, or a saved one started again)."""
    from cci_builtin_plugins.incus.container import IncusContainer

    if isinstance(container, IncusContainer):
        container.apply_limits(ctx.config.limits)

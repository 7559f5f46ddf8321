"""Placeholder until the real command lands."""

from cci_core.cli.planned import planned_command

container = planned_command("container", "container operations")

"""Placeholder until the real command lands."""

from cci_core.cli.planned import planned_command

image = planned_command("image", "image operations")

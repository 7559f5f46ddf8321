"""Placeholder until the real command lands."""

from cci_core.cli.planned import planned_command

file = planned_command("file", "file operations")

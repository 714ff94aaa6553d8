"""Placeholder: commands of this area are added by its module."""

COMMANDS: list = []

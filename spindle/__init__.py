"""Spindle: a durable-workflow runtime that shows its threads."""

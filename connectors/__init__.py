"""Connectors: datasources (read tasks that yield Arrow tables) and datasinks
(start -> write -> finalize)."""

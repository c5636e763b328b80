"""Logical plan: frozen operators, optimizer rules (one per file) and the planner."""

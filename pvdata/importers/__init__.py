"""Importers for other tools' outputs (the research code's evaluation CSVs)."""

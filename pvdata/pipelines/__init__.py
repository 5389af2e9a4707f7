"""Pipeline stages (extract, evaluate, ...): each step is a warehouse run with lineage and resume."""

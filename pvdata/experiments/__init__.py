"""Experiments that test pvdata's claims end to end on a model: does screening predict and prevent the
finetuning shift? Each is a chain of ordinary warehouse runs (screen, train, evaluate) closed by an
`experiment` run whose rows hold the per-dataset results and the correlations."""

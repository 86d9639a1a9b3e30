"""A run's config, its directory and what is written there: the base every other folder stands on.

config.py (the typed config, packaged configs, overrides), rundir.py (every path of a run
directory and the `.done` markers with their provenance), records.py (the JSONL record types,
atomic writes, metrics.json), parallel.py (processes, seeds, resumable chunks), progress.py (the
console and DIR/logs/), faults.py (crash points for the resume tests). Nothing here imports any
other folder of srlm.
"""

"""The DVC stages, one script each (dvc.yaml runs `python -m pipeline.stages.<stage>`).

Each script reads only its section of params.yaml and calls one stage's Python API; its `PARAMS`
are the keys dvc.yaml lists for it (tests/test_pipeline_dvc.py checks they agree), so a stage
re-runs when, and only when, its own script or params change.
"""

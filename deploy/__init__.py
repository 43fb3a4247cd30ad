"""Deploy the Whisper container to SageMaker (real-time, batch transform, async).

Layers, each replaceable on its own: ``limits`` (every service limit, checked
before any call), ``requests`` (pure request builders; ``monitoring``: the alarms
and dashboard ones), ``capacity`` (scaling targets from bench results), ``aws`` (the executor
that prints or sends them), ``flows`` (what each subcommand does), ``cli``.
"""

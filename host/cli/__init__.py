"""The command line (``python -m host``): batch, the interactive session, the report, doctor and setup-worker.
The top of the host: it may import every other room, and no room imports it."""

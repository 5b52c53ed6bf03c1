"""The Python API people call: ``InstantMeshWorker`` (the facade), its inputs, results and per-object outcomes,
and ``map`` over many objects. Built on ``host.worker``; knows nothing of the command line."""

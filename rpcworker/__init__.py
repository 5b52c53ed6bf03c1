"""The InstantMesh worker: a stdio JSON-RPC server that keeps the models warm.

Importing this package needs msgspec only; the host imports its wire package (``rpcworker.wire``) and nothing else of it.
"""

__version__ = "0.1.0"

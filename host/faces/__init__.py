"""Faces other programs talk to, over the API: ``mcp_server`` serves the tools to agents over MCP (stdio).

A face turns its protocol's requests into API calls (``host.api``, ``host.scale``) and their results and errors into
its protocol's terms; it keeps no client of its own and no copy of the CLI's options (``host.cli`` starts it).
Its modules import the MCP SDK and anyio, which only the ``mcp`` extra installs; ``host`` never imports them.
"""

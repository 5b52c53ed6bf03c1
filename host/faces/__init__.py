"""Faces people and programs reach the worker through, over the API: ``mcp_server`` serves the tools to agents
over MCP (stdio); ``web`` serves a browser UI on 127.0.0.1.

A face turns its own requests into API calls (``host.api``, ``host.scale``) and their results and errors into its own
terms; it keeps no client of its own and no copy of the CLI's options (``host.cli`` parses them, builds the worker and
starts the face). Its modules import their framework (the MCP SDK and anyio; gradio), which only their extra installs;
``host`` never imports them.
"""

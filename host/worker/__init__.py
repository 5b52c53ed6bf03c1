"""The worker as the host sees it: the child process, its environment, the RPC session and the client.

Layered bottom to top: ``environment`` (which interpreter, which code) -> ``process`` (spawn, supervise,
restart) -> ``writer`` (one thread writes stdin) -> ``session`` (request ids, replies, notifications) ->
``client`` (typed calls). Nothing here knows about files of objects, pools or the command line.
"""

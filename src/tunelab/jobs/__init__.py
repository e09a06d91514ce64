"""Jobs: the queue (a table in the store), workers with lease + heartbeat, executors.

``jobs`` connects ``training`` to ``store``: the API submits through ``service``; workers
(``worker``) claim jobs and run them with an executor (``executors.local``, or
``executors.ray_cluster`` when ``TUNELAB_RAY_ADDRESS`` is set).
"""

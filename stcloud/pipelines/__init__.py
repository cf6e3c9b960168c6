"""Pipelines of jobs (``depends_on``, the ``waiting`` state, ``POST /api/cloud/pipelines``) and
placement (``provider: "auto"``, budget holds). See ``docs/pipelines.md``."""
